"""scikit-learn transformers: pooled backbone features and CAE bottleneck codes."""

from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from tqdm.auto import tqdm

from ._device import autocast, resolve_device
from .backbones import (
    DEFAULT_BACKBONE,
    available_layers,
    default_layer,
    load_backbone,
    truncate,
)
from .cae import AutoEncoderNet, ConvAutoEncoder
from .images import check_image_size, check_images, preprocess_batch
from .pooling import pool, pooled_names

__all__ = ["BackboneFeaturizer", "CAETransferFeaturizer"]


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _as_layer_list(layer, backbone) -> list[str]:
    layers = [default_layer(backbone)] if layer is None else layer
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layer must be None, a layer name or a list of them, got {layer!r}.")
    valid = available_layers(backbone)
    for name in layers:
        if name not in valid:
            raise ValueError(f"Unknown layer {name!r} for this backbone. Valid layers: {valid}.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer lists a layer twice: {list(layers)}.")
    return list(layers)


class _BackboneFeaturizerBase(TransformerMixin, BaseEstimator):
    """Input handling, backbone loading and batched map extraction shared by both."""

    def _check_common_params(self) -> None:
        if not isinstance(self.backbone, str | nn.Module):
            raise TypeError(
                "backbone must be a model name or a torch.nn.Module, got "
                f"{type(self.backbone).__name__}."
            )
        check_image_size(self.image_size)
        _check_positive_int(self.batch_size, "batch_size")
        if self.pooling not in ("avg", "max", "avgmax", "spp"):
            raise ValueError(
                f"Unknown pooling {self.pooling!r}; choose 'avg', 'max', 'avgmax' or 'spp'."
            )
        resolve_device(self.device)

    def _check_images(self, X, *, reset: bool) -> np.ndarray:
        """Validate X; flattened 2-D input also goes through sklearn's validate_data."""
        if reset:
            self._clear_fitted_attributes()
        if np.ndim(X) == 2 and not isinstance(X, list | tuple):
            X = validate_data(self, X, reset=reset, dtype="numeric")
        elif not reset and hasattr(self, "n_features_in_"):
            raise ValueError(
                f"{type(self).__name__} was fitted on flattened images (2-D X with "
                f"{self.n_features_in_} columns); pass 2-D X to transform as well."
            )
        images = check_images(X, image_shape=self.image_shape, intensity=self.intensity)
        if not reset and images.shape[-1] != self.n_input_channels_:
            raise ValueError(
                f"X has {images.shape[-1]}-channel images, but {type(self).__name__} "
                f"was fitted on {self.n_input_channels_}-channel images."
            )
        return images

    def _clear_fitted_attributes(self) -> None:
        # A failed (re)fit must not leave a half-fitted estimator behind.
        for name in [key for key in vars(self) if key.endswith("_") and not key.startswith("_")]:
            delattr(self, name)

    def _fit_backbone(self, images: np.ndarray):
        """Load, freeze and truncate the backbone; return fitted attributes (not set)."""
        device = resolve_device(self.device)
        backbone = copy.deepcopy(self.backbone) if isinstance(self.backbone, nn.Module) else self.backbone
        layers = _as_layer_list(self.layer, backbone)
        spec = load_backbone(backbone, self.weights)
        module = truncate(spec, layers).to(device)
        size = check_image_size(self.image_size)
        with torch.inference_mode():
            probe = module(torch.zeros(1, 3, *size, device=device))
        return {
            "backbone_": module,
            "layers_": layers,
            "input_mean_": spec.mean,
            "input_std_": spec.std,
            "n_channels_": [int(m.shape[1]) for m in probe],
            "map_shapes_": [tuple(int(s) for s in m.shape[1:]) for m in probe],
            "n_input_channels_": int(images.shape[-1]),
        }

    def _iter_maps(
        self, images: np.ndarray, fitted: dict, device: torch.device
    ) -> Iterator[list[torch.Tensor]]:
        """Yield the tapped maps (float32, on ``device``) batch by batch.

        ``fitted`` holds the fitted backbone attributes (``vars(self)`` once fitted).
        """
        backbone = fitted["backbone_"].to(device)
        size = check_image_size(self.image_size)
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="backbone", unit="batch", disable=not self.verbose):
            batch = preprocess_batch(
                images[start : start + self.batch_size],
                image_size=size,
                mean=fitted["input_mean_"],
                std=fitted["input_std_"],
                intensity=self.intensity,
                device=device,
            )
            with torch.inference_mode(), autocast(device):
                maps = backbone(batch)
            yield [m.float() for m in maps]

    def __getstate__(self):
        state = super().__getstate__()
        backbone = state.get("backbone_")
        if backbone is not None and any(p.is_cuda for p in backbone.buffers()):
            # So that a model fitted on a GPU loads on a machine without one.
            state = dict(state, backbone_=copy.deepcopy(backbone).cpu())
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        return tags

    def _feature_prefixes(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output features, ``<layer>[_code]_<pooling>_<channel>``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored (pixels have no useful names); present for API consistency.

        Returns
        -------
        ndarray of str objects
        """
        check_is_fitted(self)
        names = [
            name
            for prefix, n_channels in self._feature_prefixes()
            for name in pooled_names(prefix, n_channels, self.pooling)
        ]
        return np.asarray(names, dtype=object)


class BackboneFeaturizer(_BackboneFeaturizerBase):
    """Pooled feature maps of a frozen pretrained CNN (transfer-learned features).

    The baseline of Ahn et al. (2019): the same backbone, layer(s), input handling and
    pooling as :class:`CAETransferFeaturizer`, without the auto-encoder. Fitting loads
    the backbone and reads no data beyond its shape.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Backbone name (see :mod:`sklearn_cae.backbones`) or a module of your own.
    weights : {"DEFAULT"}, None or path, default="DEFAULT"
        ImageNet weights, random initialisation, or a local state-dict file.
    layer : str, list of str or None, default=None
        Layer(s) to tap, from :func:`~sklearn_cae.available_layers`; None picks a
        stride-16 layer of the backbone. Several layers give concatenated features.
    pooling : {"avg", "max", "avgmax", "spp"}, default="avg"
        How each tapped map is pooled.
    image_size : int or (int, int), default=128
        Images are resized to this size before the backbone.
    image_shape : tuple of int, default=None
        Shape used to unflatten 2-D ``X`` of shape (n, H*W*C).
    intensity : {"auto", "minmax"} or (low, high), default="auto"
        Mapping of pixel values to [0, 1]; see :func:`sklearn_cae.images.preprocess_batch`.
    batch_size : int, default=64
        Images per backbone forward pass.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show progress bars when positive.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The frozen backbone, truncated after the deepest tapped layer.
    layers_ : list of str
        The tapped layers.
    n_channels_ : list of int
        Channels of each tapped map.
    map_shapes_ : list of tuple
        ``(channels, height, width)`` of each tapped map at ``image_size``.
    n_input_channels_ : int
        Channels of the images seen in ``fit`` (1 or 3).
    n_features_in_ : int
        Number of columns of ``X``; only set when fitted on flattened (2-D) images.

    See Also
    --------
    CAETransferFeaturizer : Adds an unsupervised auto-encoder on the tapped maps.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae import BackboneFeaturizer
    >>> X = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    >>> BackboneFeaturizer(image_size=32).fit_transform(X).shape
    (4, 112)
    """

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        weights="DEFAULT",
        layer: str | Sequence[str] | None = None,
        pooling: str = "avg",
        image_size: int | tuple[int, int] = 128,
        image_shape: tuple[int, ...] | None = None,
        intensity="auto",
        batch_size: int = 64,
        device: str = "auto",
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.image_shape = image_shape
        self.intensity = intensity
        self.batch_size = batch_size
        self.device = device
        self.verbose = verbose

    def fit(self, X, y=None):
        """Validate ``X`` and load the frozen backbone.

        Parameters
        ----------
        X : array-like of images
            See :func:`sklearn_cae.images.check_images`.
        y : None
            Ignored.

        Returns
        -------
        self : BackboneFeaturizer
        """
        self._check_common_params()
        images = self._check_images(X, reset=True)
        for name, value in self._fit_backbone(images).items():
            setattr(self, name, value)
        return self

    def transform(self, X) -> np.ndarray:
        """Pool the tapped feature maps of each image.

        Parameters
        ----------
        X : array-like of images

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        check_is_fitted(self)
        images = self._check_images(X, reset=False)
        device = resolve_device(self.device)
        pooled = [
            torch.cat([pool(m, self.pooling) for m in maps], dim=1).cpu()
            for maps in self._iter_maps(images, vars(self), device)
        ]
        return torch.cat(pooled).numpy().astype(np.float32, copy=False)

    def _feature_prefixes(self):
        return list(zip(self.layers_, self.n_channels_))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch for CAE initialisation and batch shuffling, restoring RNG state after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _standardize(maps: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (maps - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class CAETransferFeaturizer(_BackboneFeaturizerBase):
    """Unsupervised deep transfer features: a CAE's pooled code on frozen CNN maps.

    Implements Ahn et al., "Unsupervised Deep Transfer Feature Learning for Medical
    Image Classification" (ISBI 2019). ``fit`` runs the frozen ImageNet backbone once
    over ``X``, standardises each tapped layer's maps per channel, and trains one
    convolutional auto-encoder per layer to reconstruct them -- without labels
    (``y`` is ignored). ``transform`` returns the pooled bottleneck codes.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Backbone name (see :mod:`sklearn_cae.backbones`) or a module of your own.
    weights : {"DEFAULT"}, None or path, default="DEFAULT"
        ImageNet weights, random initialisation, or a local state-dict file.
    layer : str, list of str or None, default=None
        Layer(s) to tap, from :func:`~sklearn_cae.available_layers`; None picks a
        stride-16 layer. With several layers, one CAE is trained per layer and the
        codes are concatenated (hierarchical features).
    layer_sizes : sequence of int, default=(128,)
        Widths of the CAE's encoder convolutions (mirrored in its decoder).
    bottleneck : int, default=64
        Channels of the CAE code.
    pooling : {"avg", "max", "avgmax", "spp"}, default="avgmax"
        How each code map is pooled into a vector.
    image_size : int or (int, int), default=128
        Images are resized to this size before the backbone.
    image_shape : tuple of int, default=None
        Shape used to unflatten 2-D ``X`` of shape (n, H*W*C).
    intensity : {"auto", "minmax"} or (low, high), default="auto"
        Mapping of pixel values to [0, 1]; see :func:`sklearn_cae.images.preprocess_batch`.
    max_epochs : int, default=30
        Maximum CAE training epochs.
    lr : float, default=1e-3
        Learning rate of the CAE optimizer (Adam).
    batch_size : int, default=64
        Images per backbone forward pass and per CAE training batch.
    patience : int or None, default=5
        Early stopping: stop after this many epochs without improvement of the
        reconstruction loss on the held-out maps, and keep the best weights.
        None trains for ``max_epochs``.
    validation_fraction : float, default=0.1
        Fraction of the training maps held out for early stopping. Ignored (no
        hold-out) when it would leave fewer than 2 maps on either side.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks for the CAE training (e.g. checkpointing).
    cae_params : dict or None, default=None
        Further skorch ``NeuralNet`` parameters, e.g. ``{"optimizer__weight_decay":
        1e-4}`` or ``{"optimizer": torch.optim.SGD}``.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the CAE initialisation, batch order and hold-out split.
    verbose : int, default=0
        Positive: progress bars over backbone batches and skorch's epoch table.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The frozen backbone, truncated after the deepest tapped layer.
    cae_ : AutoEncoderNet or list of AutoEncoderNet
        The trained skorch net (a list when several layers are tapped).
    layers_ : list of str
        The tapped layers.
    n_channels_ : list of int
        Channels of each tapped map.
    map_shapes_ : list of tuple
        ``(channels, height, width)`` of each tapped map at ``image_size``.
    map_mean_, map_std_ : list of ndarray
        Per-channel statistics of each tapped layer's maps on the training images.
    n_input_channels_ : int
        Channels of the images seen in ``fit`` (1 or 3).
    n_features_in_ : int
        Number of columns of ``X``; only set when fitted on flattened (2-D) images.

    See Also
    --------
    BackboneFeaturizer : The same backbone features without the auto-encoder.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae import CAETransferFeaturizer
    >>> X = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    >>> feat = CAETransferFeaturizer(image_size=32, max_epochs=2, random_state=0)
    >>> feat.fit_transform(X).shape
    (8, 128)
    """

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        weights="DEFAULT",
        layer: str | Sequence[str] | None = None,
        layer_sizes: Sequence[int] = (128,),
        bottleneck: int = 64,
        pooling: str = "avgmax",
        image_size: int | tuple[int, int] = 128,
        image_shape: tuple[int, ...] | None = None,
        intensity="auto",
        max_epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 64,
        patience: int | None = 5,
        validation_fraction: float = 0.1,
        callbacks: list | None = None,
        cae_params: dict | None = None,
        device: str = "auto",
        random_state=None,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.layer_sizes = layer_sizes
        self.bottleneck = bottleneck
        self.pooling = pooling
        self.image_size = image_size
        self.image_shape = image_shape
        self.intensity = intensity
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.cae_params = cae_params
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ params
    def _check_cae_params(self) -> None:
        sizes = self.layer_sizes
        if not isinstance(sizes, Sequence) or isinstance(sizes, str):
            raise ValueError(f"layer_sizes must be a sequence of positive ints, got {sizes!r}.")
        for size in sizes:
            _check_positive_int(size, "every entry of layer_sizes")
        _check_positive_int(self.bottleneck, "bottleneck")
        _check_positive_int(self.max_epochs, "max_epochs")
        if not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise ValueError(f"lr must be a positive float, got {self.lr!r}.")
        if self.patience is not None:
            _check_positive_int(self.patience, "patience")
        fraction = self.validation_fraction
        if not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {fraction!r}.")
        if self.cae_params is not None and not isinstance(self.cae_params, dict):
            raise TypeError(f"cae_params must be a dict or None, got {self.cae_params!r}.")

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Train the auto-encoder(s) on the backbone maps of ``X``, without labels.

        Parameters
        ----------
        X : array-like of images
            See :func:`sklearn_cae.images.check_images`. Unlabelled images are fine.
        y : None
            Ignored; the representation is learnt without labels.

        Returns
        -------
        self : CAETransferFeaturizer
        """
        self._fit(X)
        return self

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit, then encode ``X`` from the maps already computed (one backbone pass).

        Parameters
        ----------
        X : array-like of images
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        maps = self._fit(X)
        device = resolve_device(self.device)
        codes = []
        for start in range(0, len(maps[0]), self.batch_size):
            batch = [
                torch.from_numpy(m[start : start + self.batch_size]).to(device).float()
                for m in maps
            ]
            codes.append(self._encode_standardized(batch))
        return torch.cat(codes).numpy()

    def _fit(self, X) -> list[np.ndarray]:
        """Fit and return the standardised float16 training maps of each layer."""
        self._check_common_params()
        self._check_cae_params()
        images = self._check_images(X, reset=True)
        fitted = self._fit_backbone(images)
        device = resolve_device(self.device)
        maps, means, stds = self._collect_maps(images, fitted, device)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        nets = [self._train_cae(layer_maps, seed + i, device) for i, layer_maps in enumerate(maps)]
        fitted.update(
            map_mean_=[m.cpu().numpy() for m in means],
            map_std_=[s.cpu().numpy() for s in stds],
            cae_=nets[0] if len(nets) == 1 else nets,
        )
        for name, value in fitted.items():
            setattr(self, name, value)
        return maps

    def _collect_maps(self, images, fitted, device):
        """One backbone pass: float16 maps per layer and per-channel mean / std."""
        n = len(images)
        stored: list[np.ndarray] = []
        sums: list[torch.Tensor] = []
        squares: list[torch.Tensor] = []
        start = 0
        for batch_maps in self._iter_maps(images, fitted, device):
            if not stored:
                stored = [np.empty((n, *m.shape[1:]), dtype=np.float16) for m in batch_maps]
                sums = [torch.zeros(m.shape[1], dtype=torch.float64, device=device) for m in batch_maps]
                squares = [torch.zeros_like(s) for s in sums]
            stop = start + len(batch_maps[0])
            for i, m in enumerate(batch_maps):
                half = m.half()
                stored[i][start:stop] = half.cpu().numpy()
                m64 = half.double()
                sums[i] += m64.sum(dim=(0, 2, 3))
                squares[i] += (m64**2).sum(dim=(0, 2, 3))
            start = stop
        means, stds = [], []
        for i, layer_maps in enumerate(stored):
            count = n * layer_maps.shape[2] * layer_maps.shape[3]
            mean = sums[i] / count
            var = (squares[i] / count - mean**2).clamp_min(0)
            # Dead channels (constant maps) keep unit scale instead of dividing by 0.
            std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
            means.append(mean.float())
            stds.append(std.float())
            for begin in range(0, n, self.batch_size):
                chunk = torch.from_numpy(layer_maps[begin : begin + self.batch_size]).to(device)
                standardized = _standardize(chunk.float(), means[-1], stds[-1])
                layer_maps[begin : begin + self.batch_size] = standardized.half().cpu().numpy()
        return stored, means, stds

    def _make_net(self, in_channels: int, n_samples: int, seed: int, device) -> AutoEncoderNet:
        held_out = int(n_samples * self.validation_fraction)
        use_split = held_out >= 2 and n_samples - held_out >= 2
        callbacks = list(self.callbacks or [])
        if use_split and self.patience is not None:
            callbacks.append(
                ("early_stopping", EarlyStopping(patience=self.patience, load_best=True))
            )
        params = dict(
            module=ConvAutoEncoder,
            module__in_channels=in_channels,
            module__layer_sizes=tuple(self.layer_sizes),
            module__bottleneck=self.bottleneck,
            criterion=nn.MSELoss,
            optimizer=torch.optim.Adam,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            train_split=ValidSplit(self.validation_fraction, random_state=seed) if use_split else None,
            callbacks=callbacks,
            device=str(device),
            verbose=int(self.verbose > 0),
        )
        params.update(self.cae_params or {})
        return AutoEncoderNet(**params)

    def _train_cae(self, maps: np.ndarray, seed: int, device) -> AutoEncoderNet:
        net = self._make_net(maps.shape[1], len(maps), seed, device)
        with _seeded(seed, device):
            net.fit(maps, y=None)
        losses = net.history[:, "train_loss"]
        if not np.all(np.isfinite(losses)):
            raise ValueError(
                "The auto-encoder's training loss became NaN or infinite (epoch "
                f"{int(np.argmin(np.isfinite(losses))) + 1}). Lower lr (now {self.lr}) "
                "or check the input images."
            )
        net.module_.eval()
        return net

    # --------------------------------------------------------------- transform
    @property
    def _nets(self) -> list[AutoEncoderNet]:
        return self.cae_ if isinstance(self.cae_, list) else [self.cae_]

    def _encode_standardized(self, maps: list[torch.Tensor]) -> torch.Tensor:
        codes = []
        with torch.inference_mode():
            for net, layer_maps in zip(self._nets, maps):
                module = net.module_.to(layer_maps.device).eval()
                codes.append(pool(module.encode(layer_maps), self.pooling))
        return torch.cat(codes, dim=1).cpu()

    def transform(self, X) -> np.ndarray:
        """Return the pooled CAE codes of ``X``.

        Parameters
        ----------
        X : array-like of images

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        check_is_fitted(self)
        images = self._check_images(X, reset=False)
        device = resolve_device(self.device)
        means = [torch.from_numpy(m).to(device) for m in self.map_mean_]
        stds = [torch.from_numpy(s).to(device) for s in self.map_std_]
        codes = []
        for maps in self._iter_maps(images, vars(self), device):
            # Round through float16 exactly as fit stores maps, so fit_transform and
            # fit().transform agree.
            standardized = [
                _standardize(m.half().float(), mu, sd).half().float()
                for m, mu, sd in zip(maps, means, stds)
            ]
            codes.append(self._encode_standardized(standardized))
        return torch.cat(codes).numpy()

    def _feature_prefixes(self):
        return [(f"{layer}_code", self.bottleneck) for layer in self.layers_]
