"""scikit-learn transformers: pooled backbone features and CAE bottleneck codes."""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from collections.abc import Iterator, Sequence
from numbers import Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from tqdm.auto import tqdm

from ._docstrings import SHARED_DOCS, Substitution
from ._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    fit_context,
    strict_int,
)
from ._state import featurizer_state, restore_featurizer_state
from .backbones import (
    DEFAULT_BACKBONE,
    TappedBackbone,
    available_layers,
    default_layer,
    hierarchical_layers,
    load_backbone,
    truncate,
)
from .cache import (
    FeatureCache,
    check_cache,
    file_digests,
    image_digests,
    model_digest,
    temporary_array,
)
from .cae import UNLABELLED, AutoEncoderNet, MapViews, fit_autoencoder
from .corruptions import corrupt
from .devices import autocast, resolve_device
from .feature_maps import ChannelStatistics, standardize
from .images import (
    CHANNEL_POLICIES,
    INTENSITY_POLICIES,
    ImageSource,
    as_image_source,
    check_image_size,
    check_intensity,
    normalize_batch,
)
from .pooling import POOLINGS, BlockScaler, pool, pooled_names
from .semi_supervised import labelled_rows, unlabelled_mask

__all__ = ["BackboneFeaturizer", "CAETransferFeaturizer"]

# Ints, not bools: scikit-learn's Interval(Integral, ...) lets True pass as 1.
_POSITIVE_INT = strict_int(1, None, closed="left")

#: The weight of the classification loss that ``supervision="auto"`` gives labels.
AUTO_SUPERVISION = 1.0

# Docs of the block balance, shared by both featurizers (as _docstrings.SHARED_DOCS).
_BLOCK_DOCS = {
    "balance_blocks": """balance_blocks : bool, default=True
        Standardise each feature with its mean and standard deviation on the training
        images and scale each block (one layer's pooled maps, one layer's code) by
        ``1 / sqrt(its width)``, so that every block has a total variance of 1 and
        none drowns another in an SVC's kernel (see
        :class:`~sklearn_cae.pooling.BlockScaler`). A ``StandardScaler`` after the
        featurizer undoes the balance: feed the features to the classifier as they
        are. False returns the raw pooled values.""",
    "fitted_blocks": """block_scaler_ : BlockScaler or None
        The fitted block balance (None when ``balance_blocks=False``).""",
}


def _as_layer_list(layer, backbone) -> list[str]:
    layers = hierarchical_layers(backbone) if layer is None else layer
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError(f"layer must be None, a layer name or a list of them, got {layer!r}.")
    valid = available_layers(backbone)
    for name in layers:
        if name not in valid:
            raise ValueError(f"Unknown layer {name!r} for this backbone. Valid layers: {valid}.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer lists a layer twice: {list(layers)}.")
    return list(layers)


def _is_flat_numeric(X) -> bool:
    """2-D numeric X (flattened images), as opposed to a column of paths or a list."""
    if isinstance(X, list | tuple) or np.ndim(X) != 2:
        return False
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # pandas DataFrame
        return all(np.dtype(d).kind in "biuf" for d in X.dtypes if isinstance(d, np.dtype))
    if isinstance(dtype, torch.dtype):
        return True
    if dtype is not None and np.dtype(dtype).kind == "O":  # a column of paths, or numbers
        column = X.shape[1] == 1 and all(isinstance(v, str | os.PathLike) for v in X[:, 0])
        return not column
    return dtype is None or np.dtype(dtype).kind not in "US"


def _as_numpy(maps: list[list[torch.Tensor]]) -> list[np.ndarray]:
    """Per-layer float32 arrays from per-batch lists of per-layer maps."""
    layers = zip(*maps, strict=True)
    return [torch.cat([m.float().cpu() for m in layer]).numpy() for layer in layers]


class _BackboneFeaturizerBase(TransformerMixin, BaseEstimator):
    """Input handling, backbone loading and batched map extraction shared by both."""

    _parameter_constraints: ClassVar[dict] = {
        "backbone": [str, nn.Module],
        "weights": [str, os.PathLike, None, HasMethods("get_state_dict")],
        "layer": [str, list, tuple, None],
        "pooling": [StrOptions(set(POOLINGS))],
        "balance_blocks": ["boolean"],
        "image_size": [_POSITIVE_INT, tuple, list],
        "image_shape": [tuple, list, None],
        "intensity": [StrOptions(set(INTENSITY_POLICIES)), tuple, list],
        "channels": [StrOptions(set(CHANNEL_POLICIES))],
        "batch_size": [_POSITIVE_INT],
        "device": [str, torch.device],
        "cache": [None, str, os.PathLike, HasMethods("cache"), FeatureCache],
        "verbose": ["verbose"],
    }

    def _check_params(self) -> None:
        """What ``_parameter_constraints`` cannot say: values that need a closer look."""
        check_image_size(self.image_size)
        check_intensity(self.intensity)
        resolve_device(self.device)  # e.g. CUDA asked for, none present
        check_cache(self.cache)

    def _check_images(self, X, *, reset: bool) -> ImageSource:
        """Validate X and return it as an :class:`~sklearn_cae.images.ImageSource`.

        Flattened 2-D numeric X also goes through sklearn's ``validate_data`` (so
        ``n_features_in_`` is set in fit and checked in transform). Nothing on the
        estimator changes with ``reset=False``; with ``reset=True`` it runs inside
        :meth:`_fitting`, which forgets a failed fit.
        """
        if not isinstance(X, list | tuple | np.ndarray | torch.Tensor | ImageSource) and (
            hasattr(X, "__array__") and not hasattr(X, "dtypes")
        ):
            X = np.asarray(X)  # array-likes that support nothing but __array__
        flat_fit = not reset and hasattr(self, "n_features_in_")
        if _is_flat_numeric(X) or (flat_fit and np.ndim(X) == 1):
            # sklearn's own checks and messages (n_features_in_, "Reshape your data").
            X = validate_data(self, X, reset=reset, dtype="numeric", ensure_all_finite=False)
        elif flat_fit:
            raise ValueError(
                f"{type(self).__name__} was fitted on flattened images (2-D X with "
                f"{self.n_features_in_} columns); pass 2-D X to transform as well."
            )
        images = as_image_source(X, image_shape=self.image_shape, channels=self.channels)
        # Grey replicated to RGB is what the backbone sees anyway: only "strict" insists
        # on fit's channel count.
        strict = self.channels == "strict"
        if not reset and strict and images.n_channels != self.n_input_channels_:
            raise ValueError(
                f"X has {images.n_channels}-channel images, but {type(self).__name__} "
                f"was fitted on {self.n_input_channels_}-channel images and "
                "channels='strict'. Use channels='convert' to accept both."
            )
        return images

    def _clear_fitted_attributes(self) -> None:
        # A failed (re)fit must not leave a half-fitted estimator behind.
        for name in [key for key in vars(self) if key.endswith("_") and not key.startswith("_")]:
            delattr(self, name)

    @contextlib.contextmanager
    def _fitting(self):
        """Forget any previous fit; if fitting fails, leave no fitted attribute behind."""
        self._clear_fitted_attributes()
        try:
            yield
        except BaseException:
            self._clear_fitted_attributes()
            raise

    def _fit_backbone(self, images: ImageSource) -> None:
        """Load, freeze and truncate the backbone; set its fitted attributes."""
        device = resolve_device(self.device)
        backbone = (
            copy.deepcopy(self.backbone) if isinstance(self.backbone, nn.Module) else self.backbone
        )
        spec = load_backbone(backbone, self.weights)
        # Layers of the loaded model: an hf-hub config may only be found next to weights.
        layers = self._layers_to_tap(backbone, spec.model)
        # NHWC weights match the channels_last input batches (about 2x faster on CPU).
        module = truncate(spec, layers).to(device, memory_format=torch.channels_last)
        size = check_image_size(self.image_size)
        try:
            with torch.inference_mode():
                probe = module(torch.zeros(1, 3, *size, device=device))
        except RuntimeError as exc:
            raise ValueError(
                f"image_size={self.image_size!r} is too small for layer(s) {layers} of this "
                f"backbone ({exc}). Use a larger image_size or a shallower layer."
            ) from exc
        self.backbone_ = module
        self.layers_ = layers
        self.input_mean_ = spec.mean
        self.input_std_ = spec.std
        self.n_channels_ = [int(m.shape[1]) for m in probe]
        self.map_shapes_ = [tuple(int(s) for s in m.shape[1:]) for m in probe]
        self.n_input_channels_ = int(images.shape[-1])

    def _layers_to_tap(self, backbone, model: nn.Module) -> list[str]:
        """``layer`` as a list, or the hierarchical default."""
        layers = hierarchical_layers(backbone, model) if self.layer is None else self.layer
        return _as_layer_list(layers, model)

    def _iter_batches(
        self,
        images: ImageSource,
        device: torch.device,
        *,
        with_raw: bool = False,
        corrupt_batch=None,
    ) -> Iterator[tuple[object, torch.Tensor]]:
        """Yield ``(raw, batch)`` per batch of ``self.batch_size`` images, in order.

        ``corrupt_batch``, when given, maps each batch of images in [0, 1] to a corrupted
        one (e.g. :func:`~sklearn_cae.corruptions.corrupt`) before the backbone's
        normalisation.

        ``raw`` is None unless ``with_raw``; then it holds the batch's decoded images
        before intensity scaling and resizing: an ndarray (b, H, W, C) for array input,
        else a list of b channels-last arrays (see ``ImageSource.batches``). ``batch`` is
        the backbone input: float32 (b, 3, h, w) on ``device``, normalised with
        ``input_mean_`` / ``input_std_``. File decoding runs in DataLoader workers, so
        only a few batches are ever decoded at once.
        """
        batches = images.batches(
            self.batch_size,
            image_size=check_image_size(self.image_size),
            intensity=check_intensity(self.intensity),
            device=device,
            with_raw=with_raw,
        )
        total = -(-len(images) // self.batch_size)
        for raw, scaled in tqdm(
            batches, total=total, desc="backbone", unit="batch", disable=not self.verbose
        ):
            if corrupt_batch is not None:
                scaled = corrupt_batch(scaled)
            yield raw, normalize_batch(scaled, self.input_mean_, self.input_std_)

    def _iter_maps(
        self, images: ImageSource, device: torch.device, *, corrupt_batch=None, backbone=None
    ) -> Iterator[list[torch.Tensor]]:
        """Yield the tapped maps (float32, on ``device``) batch by batch.

        ``corrupt_batch`` is passed to :meth:`_iter_batches`; ``backbone`` (default:
        ``backbone_``) may tap fewer layers.
        """
        backbone = (self.backbone_ if backbone is None else backbone).to(device)
        for _, batch in self._iter_batches(images, device, corrupt_batch=corrupt_batch):
            with torch.inference_mode(), autocast(device):
                maps = backbone(batch)
            yield [m.float() for m in maps]

    def _iter_float16_maps(
        self, images: ImageSource, device: torch.device
    ) -> Iterator[list[torch.Tensor]]:
        """Yield the tapped maps rounded to float16, on ``device``, batch by batch.

        With a ``cache``, each image's maps are read from it when present and the
        backbone runs only on the other images of the batch, whose maps are then
        stored. Rounding to float16 either way keeps the features identical with and
        without the cache.
        """
        cache = check_cache(self.cache)
        if cache is None:
            for maps in self._iter_maps(images, device):
                # NCHW, as maps read from the cache or from the training arrays are:
                # the CAE's convolutions round differently on channels_last input.
                yield [m.half().contiguous() for m in maps]
            return
        backbone = self.backbone_.to(device)
        model = self._cache_model(device)
        if images.kind == "files" and cache.key == "file":
            yield from self._iter_file_cached_maps(images, device, cache, model)
            return
        for raw, batch in self._iter_batches(images, device, with_raw=True):
            keys = image_digests(raw)
            entries = cache.load_many(model, keys, self._n_map_values())
            missing = [i for i, entry in enumerate(entries) if entry is None]
            if missing:
                rows = batch if len(missing) == len(batch) else batch[missing]
                computed = self._half_rows(backbone, rows, device)
                cache.save_many(model, [keys[i] for i in missing], computed)
                for i, values in zip(missing, computed, strict=True):
                    entries[i] = values
            yield self._split_maps(np.stack(entries), device)

    def _cache_model(self, device: torch.device) -> str:
        """The cache's key for this featurizer's maps: everything that changes them."""
        return model_digest(
            self.backbone_,
            layers=self.layers_,
            image_size=check_image_size(self.image_size),
            intensity=check_intensity(self.intensity),
            mean=self.input_mean_,
            std=self.input_std_,
            device=device,
        )

    def _n_map_values(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.map_shapes_)

    def _split_maps(self, flat: np.ndarray, device: torch.device) -> list[torch.Tensor]:
        """Per-layer maps from rows of concatenated float16 maps (as the cache stores them)."""
        sizes = [int(np.prod(shape)) for shape in self.map_shapes_]
        parts = torch.from_numpy(flat).to(device).split(sizes, dim=1)
        return [
            part.reshape(-1, *shape) for part, shape in zip(parts, self.map_shapes_, strict=True)
        ]

    @staticmethod
    def _half_rows(backbone, batch: torch.Tensor, device: torch.device) -> np.ndarray:
        """The backbone's maps of ``batch``, float16, flattened and concatenated per image."""
        with torch.inference_mode(), autocast(device):
            maps = backbone(batch)
        return torch.cat([m.float().half().flatten(1) for m in maps], dim=1).cpu().numpy()

    def _iter_computed_rows(self, images: ImageSource, rows, keys, device, cache, model):
        """Yield the flat float16 maps of ``images[rows]``, storing them under ``keys``.

        Only these files are decoded (in DataLoader workers), in one stream.
        """
        if not rows:
            return
        start = 0
        for _, batch in self._iter_batches(images.take(rows), device):
            computed = self._half_rows(self.backbone_, batch, device)
            cache.save_many(model, keys[start : start + len(computed)], computed)
            start += len(computed)
            yield from computed

    def _missing_segments(self, missing: set[int], n: int) -> list[list[int]]:
        """The rows to compute, in order, as runs of whole batches and runs of partial ones.

        A run of whole batches is batched exactly as without a cache (the backbone's
        output can depend on a batch's other images), so a run that resumes after a
        kill computes bit-identical maps; partial batches are computed together.
        """
        segments, whole_run = [], None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            rows = [i for i in range(start, stop) if i in missing]
            if not rows:
                continue
            whole = len(rows) == stop - start
            if whole != whole_run:
                segments.append([])
                whole_run = whole
            segments[-1].extend(rows)
        return segments

    def _missing_file_maps(self, images: ImageSource, device, cache, model):
        """``(keys, missing, computed)`` of image files keyed on (path, size, mtime):
        their keys, the positions the cache lacks, and a lazy stream of those positions'
        flat maps, computed (and stored) in order when read."""
        keys = file_digests(images.items)
        present = cache.contains(model, keys)
        missing = {i for i, key in enumerate(keys) if key not in present}
        computed = itertools.chain.from_iterable(
            self._iter_computed_rows(images, rows, [keys[i] for i in rows], device, cache, model)
            for rows in self._missing_segments(missing, len(keys))
        )
        return keys, missing, computed

    def _iter_file_cached_maps(self, images: ImageSource, device, cache, model):
        """Cached maps of image files keyed on (path, size, mtime): hits are never decoded."""
        keys, missing, computed = self._missing_file_maps(images, device, cache, model)
        n_values = self._n_map_values()
        for start in range(0, len(keys), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(keys)))
            hits = [i for i in rows if i not in missing]
            loaded = cache.load_many(model, [keys[i] for i in hits], n_values)
            entries = dict(zip(hits, loaded, strict=True))
            lost = [i for i in hits if entries[i] is None]  # evicted or damaged meanwhile
            recomputed = self._iter_computed_rows(
                images, lost, [keys[i] for i in lost], device, cache, model
            )
            entries.update(zip(lost, recomputed, strict=True))
            entries.update((i, next(computed)) for i in rows if i in missing)
            yield self._split_maps(np.stack([entries[i] for i in rows]), device)

    def fill_cache(self, X):
        """Store the backbone maps of ``X`` in ``cache``; fit nothing.

        Fits and transforms of this featurizer, of its clones and of any featurizer
        with the same backbone, layers and input settings then read these maps instead
        of running the backbone, in this process or another. Call it before parallel
        cross-validation (``n_jobs``) over a shared cache: each image's maps are then
        computed once, in the order and the batches of ``X``, and every fold reads the
        same maps whichever fold runs first. (Left to the folds, an image's maps come
        from whichever fold reaches it first, batched with that fold's other missing
        images; a convolution's last float32 bit can depend on its batch, so the
        scores could then depend on the folds' timing.) A cache whose ``max_size``
        cannot hold the maps of ``X`` evicts some of them, and the folds compute those
        again.

        Parameters
        ----------
        X : array-like of images
            As for :meth:`fit`.

        Returns
        -------
        self
            Unchanged: a clone loads the backbone.

        Raises
        ------
        ValueError
            Without a ``cache``.
        """
        if check_cache(self.cache) is None:
            raise ValueError(
                f"fill_cache needs a cache: set {type(self).__name__}(cache=...) to a "
                "FeatureCache or a folder."
            )
        filler = clone(self)
        with filler._fitting():
            filler._fill_cache(X)
        return self

    @fit_context(prefer_skip_nested_validation=True)
    def _fill_cache(self, X) -> None:
        self._check_params()
        images = self._check_images(X, reset=True)
        self._fit_backbone(images)
        device = resolve_device(self.device)
        cache = check_cache(self.cache)
        if images.kind == "files" and cache.key == "file":
            # Keys need no decoding: compute the missing maps only, read no hit back.
            _, _, computed = self._missing_file_maps(
                images, device, cache, self._cache_model(device)
            )
        else:  # each batch's missing maps are computed and stored as it is read
            computed = self._iter_float16_maps(images, device)
        for _ in computed:
            pass

    def backbone_maps(self, X) -> list[np.ndarray]:
        """The tapped backbone maps of ``X``, the maps the features are pooled from.

        Parameters
        ----------
        X : array-like of images
            As for :meth:`transform`. All maps are held in memory: pass a few images.

        Returns
        -------
        list of ndarray of shape (n_samples, channels, height, width), float32
            One array per tapped layer (``layers_``), with the values rounded through
            float16 as ``transform`` sees them (and as the ``cache`` stores them).
        """
        check_is_fitted(self)
        images = self._check_images(X, reset=False)
        return _as_numpy(list(self._iter_float16_maps(images, resolve_device(self.device))))

    def __getstate__(self):
        # Networks as plain arrays (CPU), rebuilt on load: pickles and skops files hold
        # no torch class, and a model fitted on a GPU loads on a machine without one.
        return featurizer_state(super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(restore_featurizer_state(state, type(self).__name__))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        return tags

    def _feature_prefixes(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _fit_block_balance(self, features: np.ndarray) -> np.ndarray:
        """Fit ``block_scaler_`` on the training features (None unless ``balance_blocks``)
        and return them balanced."""
        per_channel = len(pooled_names("", 1, self.pooling))
        widths = [n_channels * per_channel for _, n_channels in self._feature_prefixes()]
        self.block_scaler_ = BlockScaler(widths).fit(features) if self.balance_blocks else None
        return self._balance(features)

    def _balance(self, features: np.ndarray) -> np.ndarray:
        """The raw pooled features through ``block_scaler_``, if any."""
        scaler = getattr(self, "block_scaler_", None)  # absent in models pickled before 0.2
        return features if scaler is None else scaler.transform(features)

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


@Substitution(**SHARED_DOCS, **_BLOCK_DOCS)
class BackboneFeaturizer(_BackboneFeaturizerBase):
    """Pooled feature maps of a frozen pretrained CNN (transfer-learned features).

    The baseline of Ahn et al. (2019): the same backbone, layer(s), input handling and
    pooling as :class:`CAETransferFeaturizer`, without the auto-encoder. Fitting loads
    the backbone and, with ``balance_blocks``, pools the training images' maps once for
    the features' statistics (``fit_transform`` returns those features).

    Parameters
    ----------
    {backbone}
    {weights}
    layer : str, list of str or None, default=None
        Layer(s) to tap, from :func:`~sklearn_cae.available_layers`. None taps the
        backbone's stride-16 stage and its last stage (hierarchical features, see
        :func:`~sklearn_cae.backbones.hierarchical_layers`). Several layers give
        concatenated features, one block per layer.
    pooling : {{"avg", "max", "avgmax", "spp"}}, default="avg"
        How each tapped map is pooled.
    {balance_blocks}
    {image_size}
    {image_shape}
    {intensity}
    {channels}
    batch_size : int, default=64
        Images per backbone forward pass.
    {device}
    {cache}
    verbose : int, default=0
        Show progress bars when positive.

    Attributes
    ----------
    {fitted_backbone}
    {fitted_blocks}
    {fitted_input}

    See Also
    --------
    CAETransferFeaturizer : Adds an unsupervised auto-encoder on the tapped maps.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae import BackboneFeaturizer
    >>> X = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    >>> BackboneFeaturizer(image_size=32).fit_transform(X).shape  # blocks.4 and blocks.6
    (4, 432)
    """

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        weights="DEFAULT",
        layer: str | Sequence[str] | None = None,
        pooling: str = "avg",
        balance_blocks: bool = True,
        image_size: int | tuple[int, int] = 128,
        image_shape: tuple[int, ...] | None = None,
        intensity="auto",
        channels: str = "convert",
        batch_size: int = 64,
        device: str = "auto",
        cache=None,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.balance_blocks = balance_blocks
        self.image_size = image_size
        self.image_shape = image_shape
        self.intensity = intensity
        self.channels = channels
        self.batch_size = batch_size
        self.device = device
        self.cache = cache
        self.verbose = verbose

    def fit(self, X, y=None):
        """Validate ``X``, load the frozen backbone and, with ``balance_blocks``, fit
        the features' statistics (one backbone pass over ``X``).

        Parameters
        ----------
        X : array-like of images
            See :func:`sklearn_cae.images.as_image_source` and docs/inputs.md.
        y : None
            Ignored.

        Returns
        -------
        self : BackboneFeaturizer
        """
        with self._fitting():
            self._fit(X)
        return self

    @fit_context(prefer_skip_nested_validation=True)
    def _fit(self, X) -> np.ndarray | None:
        """Fit; return the balanced training features when they were computed."""
        self._check_params()
        images = self._check_images(X, reset=True)
        self._fit_backbone(images)
        if not self.balance_blocks:
            self.block_scaler_ = None
            return None
        return self._fit_block_balance(self._pooled(images))

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit to ``X``, then pool its tapped feature maps (one backbone pass).

        Parameters
        ----------
        X : array-like of images
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        with self._fitting():
            features = self._fit(X)
        return self.transform(X) if features is None else features

    def transform(self, X) -> np.ndarray:
        """Pool the tapped feature maps of each image (then balance the blocks).

        Parameters
        ----------
        X : array-like of images

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        check_is_fitted(self)
        return self._balance(self._pooled(self._check_images(X, reset=False)))

    def _pooled(self, images: ImageSource) -> np.ndarray:
        """The raw pooled maps of ``images``, float32."""
        device = resolve_device(self.device)
        pooled = [
            torch.cat([pool(m.float(), self.pooling) for m in maps], dim=1).cpu()
            for maps in self._iter_float16_maps(images, device)
        ]
        return torch.cat(pooled).numpy().astype(np.float32, copy=False)

    def _feature_prefixes(self):
        return list(zip(self.layers_, self.n_channels_, strict=True))


@Substitution(**SHARED_DOCS, **_BLOCK_DOCS)
class CAETransferFeaturizer(_BackboneFeaturizerBase):
    """Deep transfer features: a CAE's pooled code on frozen CNN maps.

    Implements Ahn et al., "Unsupervised Deep Transfer Feature Learning for Medical
    Image Classification" (ISBI 2019). ``fit`` runs the frozen ImageNet backbone once
    over ``X``, standardises each tapped layer's maps per channel, and trains a
    convolutional auto-encoder on the stride-16 stage's maps to reconstruct them.
    ``transform`` returns the pooled bottleneck code, then the pooled maps of the
    stride-16 and the last stage (hierarchical features), each block balanced.
    Two training signals add to the reconstruction: denoising with realistic
    corruptions (``corrupted_views``) and, when ``fit`` is given class labels, a
    classification loss on the labelled images (``supervision``, ``y == -1`` for
    unlabelled ones); see :doc:`/semi_supervised` and docs/method.md for the numbers.

    Parameters
    ----------
    {backbone}
    {weights}
    layer : str, list of str or None, default=None
        Layer(s) to train a CAE on, from :func:`~sklearn_cae.available_layers`. None
        trains one on the stride-16 stage and, with ``include_backbone``, also taps
        the last stage (pooled only; see
        :func:`~sklearn_cae.backbones.hierarchical_layers`). With several layers,
        one CAE is trained per layer and the codes are concatenated.
    layer_sizes : sequence of int, default=(128,)
        Widths of the CAE's encoder convolutions (mirrored in its decoder).
    bottleneck : int, default=256
        Channels of the CAE code.
    noise : float, default=0.0
        Masking noise of a denoising CAE: the probability with which each input
        value is zeroed while training (the loss still targets the clean maps).
    sparsity : float, default=0.1
        Weight of an L1 penalty on the code activations (their mean absolute value)
        added to the reconstruction loss: a sparse CAE, whose code describes each
        position with few active channels (about a quarter of them by default), so
        that its average pooling is a histogram-like summary. 0 disables it.
    corrupted_views : int, default=1
        Denoising with realistic corruptions: the number of corrupted copies of each
        training image (contrast, gamma, brightness, blur, noise, bias field; see
        :mod:`sklearn_cae.corruptions`) whose backbone maps the CAE learns to map
        back to the clean image's maps. Each epoch shows every image once, through
        its clean maps or one of its corrupted copies. Each view costs one more
        backbone pass over the training images; 0 trains on the clean maps alone.
        One view adds 1.4 points of CV balanced accuracy to the semi-supervised CAE
        with 10% of the labels (docs/method.md, round 3).
    supervision : float or "auto", default="auto"
        Semi-supervised training, in :mod:`sklearn.semi_supervised`'s convention:
        the weight of a classification loss (class-balanced cross-entropy of a linear
        head on the average-pooled code) on the labelled images, added to the
        reconstruction loss of all images; ``-1`` in ``y`` marks unlabelled images.
        ``"auto"`` gives the loss a weight of 1 when ``fit`` gets ``y`` with ``-1``
        entries and labels of at least two classes among the others, and ignores
        ``y`` otherwise (no ``y``, every image labelled, continuous targets); see
        docs/method.md, round 4. A number > 0 insists on labels; 0 (the paper's
        unsupervised CAE) ignores ``y``. Inside a ``Pipeline``, ``GridSearchCV`` or
        ``cross_validate`` only the training fold's labels are seen.
    pooling : {{"avg", "max", "avgmax", "spp"}}, default="avg"
        How each code map (and each backbone map, see ``include_backbone``) is
        pooled into a vector.
    include_backbone : bool, default=True
        Also return the pooled (standardised) backbone maps of each tapped layer
        after the codes -- with ``layer=None`` those of the stride-16 and the last
        stage, i.e. ``BackboneFeaturizer()``'s features. The CAE code complements,
        rather than replaces, the transfer-learned features; see ``docs/method.md``.
    {balance_blocks}
    {image_size}
    {image_shape}
    {intensity}
    {channels}
    max_epochs : int, default=15
        CAE training epochs; the learning rate follows a cosine schedule from ``lr``
        to 0 over them.
    lr : float, default=3e-3
        Peak learning rate of the CAE optimizer (Adam).
    batch_size : int, default=64
        Images per backbone forward pass and per CAE training batch.
    patience : int or None, default=None
        Early stopping: stop after this many epochs without improvement of the
        reconstruction loss on the held-out maps (see ``validation_fraction``), and
        keep the best weights. None trains for ``max_epochs``.
    validation_fraction : float, default=0.0
        Fraction of the training maps held out to report a validation loss (and for
        early stopping). 0, or a fraction that would leave fewer than 2 maps on
        either side, holds nothing out.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks for the CAE training (e.g. checkpointing).
    cae_params : dict or None, default=None
        Further skorch ``NeuralNet`` parameters, e.g. ``{{"optimizer__weight_decay":
        1e-4}}`` or ``{{"optimizer": torch.optim.SGD}}``.
    {device}
    {cache}
    random_state : int, RandomState instance or None, default=None
        Seeds the CAE initialisation, batch order and hold-out split.
    verbose : int, default=0
        Positive: progress bars over backbone batches and skorch's epoch table.

    Attributes
    ----------
    {fitted_backbone}
    code_layers_ : list of str
        The layers with a CAE: the first ``len(code_layers_)`` of ``layers_``.
    cae_ : list of AutoEncoderNet
        The trained skorch nets, one per layer of ``code_layers_``, in its order.
    supervision_ : float
        The weight the classification loss was trained with (``supervision``, or
        what ``"auto"`` picked; 0 without labels).
    map_mean_, map_std_ : list of ndarray
        Per-channel statistics of each tapped layer's maps on the training images.
    {fitted_blocks}
    {fitted_input}

    See Also
    --------
    BackboneFeaturizer : The same backbone features without the auto-encoder.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae import CAETransferFeaturizer
    >>> X = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    >>> feat = CAETransferFeaturizer(image_size=32, max_epochs=2, random_state=0)
    >>> feat.fit_transform(X).shape  # 256 code + 112 (blocks.4) + 320 (blocks.6) pooled
    (8, 688)
    >>> [maps.shape for maps in feat.reconstruct(X[:2])]  # blocks.4 at stride 16
    [(2, 112, 2, 2)]
    """

    _parameter_constraints: ClassVar[dict] = {
        **_BackboneFeaturizerBase._parameter_constraints,
        "layer_sizes": [list, tuple],
        "bottleneck": [_POSITIVE_INT],
        "noise": [Interval(Real, 0, 1, closed="left")],
        "sparsity": [Interval(Real, 0, None, closed="left")],
        "corrupted_views": [strict_int(0, None, closed="left")],
        "supervision": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "include_backbone": ["boolean"],
        "max_epochs": [_POSITIVE_INT],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "patience": [_POSITIVE_INT, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "callbacks": [list, tuple, None],
        "cae_params": [dict, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        weights="DEFAULT",
        layer: str | Sequence[str] | None = None,
        layer_sizes: Sequence[int] = (128,),
        bottleneck: int = 256,
        noise: float = 0.0,
        sparsity: float = 0.1,
        corrupted_views: int = 1,
        supervision: float | str = "auto",
        pooling: str = "avg",
        include_backbone: bool = True,
        balance_blocks: bool = True,
        image_size: int | tuple[int, int] = 128,
        image_shape: tuple[int, ...] | None = None,
        intensity="auto",
        channels: str = "convert",
        max_epochs: int = 15,
        lr: float = 3e-3,
        batch_size: int = 64,
        patience: int | None = None,
        validation_fraction: float = 0.0,
        callbacks: list | None = None,
        cae_params: dict | None = None,
        device: str = "auto",
        cache=None,
        random_state=None,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.layer_sizes = layer_sizes
        self.bottleneck = bottleneck
        self.noise = noise
        self.sparsity = sparsity
        self.corrupted_views = corrupted_views
        self.supervision = supervision
        self.pooling = pooling
        self.include_backbone = include_backbone
        self.balance_blocks = balance_blocks
        self.image_size = image_size
        self.image_shape = image_shape
        self.intensity = intensity
        self.channels = channels
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.cae_params = cae_params
        self.device = device
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        for size in self.layer_sizes:
            if not _POSITIVE_INT.is_satisfied_by(size):
                raise ValueError(
                    f"every entry of layer_sizes must be a positive int, got {self.layer_sizes!r}."
                )

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Train the auto-encoder(s) on the backbone maps of ``X``.

        Parameters
        ----------
        X : array-like of images
            See :func:`sklearn_cae.images.as_image_source` and docs/inputs.md.
            Unlabelled images are fine.
        y : array-like of shape (n_samples,) or None, default=None
            Class labels, ``-1`` (or ``"-1"`` among strings) for unlabelled images.
            Used when ``supervision > 0``, or with ``supervision="auto"`` (the
            default) when ``y`` marks some images unlabelled; ignored otherwise.

        Returns
        -------
        self : CAETransferFeaturizer
        """
        with self._fitting():
            self._fit(X, y)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit, then encode ``X`` from the maps computed for fitting (no second pass).

        Parameters
        ----------
        X : array-like of images
        y : array-like of shape (n_samples,) or None, default=None
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        with self._fitting():
            return self._fit(X, y)

    @fit_context(prefer_skip_nested_validation=True)
    def _fit(self, X, y) -> np.ndarray:
        """Fit and return the features of the training images."""
        self._check_params()
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        images = self._check_images(X, reset=True)
        self.supervision_ = self._supervision_weight(y)
        labels = self._encode_labels(y, len(images)) if self.supervision_ else None
        self._fit_backbone(images)
        device = resolve_device(self.device)
        maps, means, stds = self._collect_maps(images, device)
        corrupted = self._collect_corrupted_maps(images, device, means, stds, seed)
        self.cae_ = [
            self._train_cae(MapViews(clean, views, labels), seed + i, device)
            for i, (clean, views) in enumerate(zip(maps, corrupted, strict=False))
        ]
        self.map_mean_ = [m.cpu().numpy() for m in means]
        self.map_std_ = [s.cpu().numpy() for s in stds]
        return self._fit_block_balance(self._encode_stored(maps, device))

    def _encode_stored(self, maps: list[np.ndarray], device: torch.device) -> np.ndarray:
        """Raw features of the stored (standardised float16) training maps."""
        codes = []
        for start in range(0, len(maps[0]), self.batch_size):
            batch = [
                torch.from_numpy(np.asarray(m[start : start + self.batch_size])).to(device).float()
                for m in maps
            ]
            codes.append(self._encode(batch))
        return torch.cat(codes).numpy()

    def _supervision_weight(self, y) -> float:
        """The weight of the classification loss: ``supervision``, or what "auto" picks.

        "auto" uses the labels when ``y`` marks unlabelled images (``-1``) and holds
        class labels of at least two classes among the others; it ignores ``y``
        otherwise: no ``y``, every image labelled (then the classifier after the
        featurizer has every label, and a head trained on the same images only makes
        their codes collapse toward their class; docs/method.md), continuous targets.
        """
        if self.supervision != "auto":
            return float(self.supervision)
        y = None if y is None else np.asarray(y)
        if y is None or y.ndim != 1:
            return 0.0
        try:  # the package's convention: -1 among numbers, "-1" among strings
            unlabelled = unlabelled_mask(y)
            _, known = labelled_rows(y)
        except ValueError:  # not class labels (e.g. NaN): labels are not for the CAE
            return 0.0
        if not unlabelled.any() or len(np.unique(known)) < 2:
            return 0.0
        classes = type_of_target(known) in ("binary", "multiclass")
        return AUTO_SUPERVISION if classes else 0.0

    def _collect_maps(self, images: ImageSource, device: torch.device):
        """One backbone pass: float16 maps per layer and per-channel mean / std.

        With a ``cache`` the maps live in a memory-mapped temporary file in the cache
        folder, so memory stays flat as the number of images grows.
        """
        n = len(images)
        stored = [self._map_array((n, *shape)) for shape in self.map_shapes_]
        statistics = [ChannelStatistics(shape[0], device) for shape in self.map_shapes_]
        start = 0
        for batch_maps in self._iter_float16_maps(images, device):
            stop = start + len(batch_maps[0])
            for layer_maps, layer_stats, half in zip(stored, statistics, batch_maps, strict=True):
                layer_maps[start:stop] = half.cpu().numpy()
                layer_stats.update(half)
            start = stop
        means, stds = zip(*(layer_stats.mean_std() for layer_stats in statistics), strict=True)
        for layer_maps, mean, std in zip(stored, means, stds, strict=True):
            for begin in range(0, n, self.batch_size):
                chunk = torch.from_numpy(np.asarray(layer_maps[begin : begin + self.batch_size]))
                standardized = standardize(chunk.to(device).float(), mean, std)
                layer_maps[begin : begin + self.batch_size] = standardized.half().cpu().numpy()
        return stored, list(means), list(stds)

    def _map_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float16 array for training maps, memory-mapped so that memory does not grow
        with the number of images: in the cache folder if any, else the system's
        temporary folder (in memory only when neither can hold it)."""
        cache = check_cache(self.cache)
        if cache is not None:
            return cache.temporary_array(shape)
        return temporary_array(shape)

    def _collect_corrupted_maps(self, images, device, means, stds, seed):
        """Standardised float16 maps of ``corrupted_views`` corrupted copies of the images.

        Returns one list of views per CAE layer (empty lists without views). The
        corruptions are drawn from a generator seeded with ``seed``; the maps are
        standardised with the clean maps' statistics, as the CAE's input will be.
        """
        views = [
            [self._map_array((len(images), *shape)) for _ in range(self.corrupted_views)]
            for shape in self.map_shapes_[: len(self.code_layers_)]
        ]
        generator = torch.Generator().manual_seed(seed)
        # The views feed the CAEs only: stop the backbone at the deepest CAE layer.
        backbone = self.backbone_
        if isinstance(backbone, TappedBackbone):
            backbone = backbone.up_to(self.code_layers_)
        for view in range(self.corrupted_views):
            start = 0
            for batch_maps in self._iter_maps(
                images,
                device,
                corrupt_batch=lambda scaled: corrupt(scaled, generator),
                backbone=backbone,
            ):
                stop = start + len(batch_maps[0])
                for i, layer_maps in enumerate(batch_maps[: len(views)]):
                    standardized = standardize(layer_maps.half().float(), means[i], stds[i])
                    views[i][view][start:stop] = standardized.half().cpu().numpy()
                start = stop
        return views

    def _encode_labels(self, y, n_samples: int) -> np.ndarray:
        """Class indices of ``y`` for the CAE's classification loss, -1 where unlabelled.

        Unlabelled images are marked as :func:`sklearn_cae.semi_supervised.labelled_rows`
        reads them: ``-1`` among numbers, ``"-1"`` among strings, ``-1`` in an object array.
        """
        if y is None:
            raise ValueError(
                f"supervision={self.supervision!r} needs labels: call fit(X, y) with y = -1 "
                "for unlabelled images, or set supervision=0 for the unsupervised CAE."
            )
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n_samples:
            raise ValueError(
                f"y must be a 1-D array of {n_samples} labels (one per image), got shape {y.shape}."
            )
        positions, known = labelled_rows(y)
        self._check_classes(known)
        _, indices = np.unique(known, return_inverse=True)
        labels = np.full(n_samples, UNLABELLED, dtype=np.int64)
        labels[positions] = indices
        return labels

    @staticmethod
    def _check_classes(known: np.ndarray) -> None:
        """Refuse labels that are not classes, or labelled images of a single class."""
        if known.dtype.kind == "f" and type_of_target(known) == "continuous":
            raise ValueError(
                "supervision > 0 needs class labels for at least two classes among the "
                "labelled images, got continuous values in y, e.g. "
                f"{known[np.flatnonzero(known != np.round(known))[0]].item()!r}."
            )
        classes = np.unique(known)
        if len(classes) >= 2:
            return
        found = (
            f"only one class among the {len(known)} labelled images: {classes[0].item()!r}"
            if len(classes)
            else "no labelled image"
        )
        raise ValueError(
            "supervision > 0 needs class labels for at least two classes among the labelled "
            f"images (y != -1), and there is {found}. Label images of another class, or "
            "mark unlabelled ones with -1 (sklearn_cae.semi_supervised.UNLABELLED)."
        )

    def _train_cae(self, views: MapViews, seed: int, device: torch.device) -> AutoEncoderNet:
        return fit_autoencoder(
            views,
            layer_sizes=self.layer_sizes,
            bottleneck=self.bottleneck,
            noise=self.noise,
            sparsity=self.sparsity,
            supervision=self.supervision_,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            patience=self.patience,
            validation_fraction=self.validation_fraction,
            callbacks=self.callbacks,
            net_params=self.cae_params,
            seed=seed,
            device=device,
            verbose=self.verbose,
        )

    # --------------------------------------------------------------- transform
    def _encode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Features of standardised maps: pooled codes, then pooled maps if asked."""
        codes = []
        with torch.inference_mode():
            for net, layer_maps in zip(self.cae_, maps[: len(self.cae_)], strict=True):
                module = net.module_.to(layer_maps.device).eval()
                codes.append(pool(module.encode(layer_maps), self.pooling))
            if self.include_backbone:
                codes += [pool(layer_maps, self.pooling) for layer_maps in maps]
        return torch.cat(codes, dim=1).cpu()

    def _iter_standardized_maps(self, X) -> Iterator[list[torch.Tensor]]:
        """Yield the standardised maps of ``X`` batch by batch, as the CAEs see them."""
        check_is_fitted(self)
        images = self._check_images(X, reset=False)
        device = resolve_device(self.device)
        means = [torch.from_numpy(m).to(device) for m in self.map_mean_]
        stds = [torch.from_numpy(s).to(device) for s in self.map_std_]
        for maps in self._iter_float16_maps(images, device):
            # Round through float16 exactly as fit stores maps, so fit_transform and
            # fit().transform agree.
            yield [
                standardize(m.float(), mu, sd).half().float()
                for m, mu, sd in zip(maps, means, stds, strict=True)
            ]

    def transform(self, X) -> np.ndarray:
        """Return the pooled CAE codes of ``X`` (then its pooled maps if ``include_backbone``).

        Parameters
        ----------
        X : array-like of images

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        features = [self._encode(maps) for maps in self._iter_standardized_maps(X)]
        return self._balance(torch.cat(features).numpy())

    def backbone_maps(self, X, *, standardized: bool = True) -> list[np.ndarray]:
        """The tapped backbone maps of ``X``, standardised as the auto-encoders see them.

        Parameters
        ----------
        X : array-like of images
            As for :meth:`transform`. All maps are held in memory: pass a few images.
        standardized : bool, default=True
            Standardise each channel with the training statistics (``map_mean_``,
            ``map_std_``), as the auto-encoders' input is; False gives the maps as
            the backbone computes them.

        Returns
        -------
        list of ndarray of shape (n_samples, channels, height, width), float32
            One array per tapped layer (``layers_``), rounded through float16 as in
            :meth:`transform`.
        """
        if not standardized:
            return super().backbone_maps(X)
        return _as_numpy(list(self._iter_standardized_maps(X)))

    def reconstruct(
        self, X, *, return_maps: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """The auto-encoders' reconstructions of the standardised maps of ``X``.

        Compare them with the maps to see what the code keeps (see
        :func:`sklearn_cae.plotting.plot_reconstructions`).

        Parameters
        ----------
        X : array-like of images
            As for :meth:`transform`. All maps are held in memory: pass a few images.
        return_maps : bool, default=False
            Also return the maps reconstructed (the standardised maps of
            ``code_layers_``), from the same backbone pass.

        Returns
        -------
        reconstructions or (maps, reconstructions)
            Without ``return_maps``: the reconstructions, a list of one float32 array
            of shape (n_samples, channels, height, width) per layer with a CAE
            (``code_layers_``). With ``return_maps=True``: the tuple
            ``(maps, reconstructions)``, the maps first, as lists of arrays of the same
            shapes.
        """
        maps, reconstructions = [], []
        with torch.inference_mode():
            for batch in self._iter_standardized_maps(X):
                if return_maps:
                    maps.append(batch[: len(self.cae_)])
                reconstructions.append(
                    [
                        net.module_.to(layer_maps.device).eval()(layer_maps)[0]
                        for net, layer_maps in zip(self.cae_, batch[: len(self.cae_)], strict=True)
                    ]
                )
        if return_maps:
            return _as_numpy(maps), _as_numpy(reconstructions)
        return _as_numpy(reconstructions)

    def _layers_to_tap(self, backbone, model: nn.Module) -> list[str]:
        """The CAE's layers (``code_layers_``), then any layer only pooled.

        ``layer=None`` trains one CAE on the stride-16 stage; with ``include_backbone``
        the backbone's last stage is tapped too and pooled beside it, so that the
        features hold ``BackboneFeaturizer()``'s hierarchical ones.
        """
        if self.layer is not None:
            self.code_layers_ = _as_layer_list(self.layer, model)
            return self.code_layers_
        self.code_layers_ = [default_layer(backbone, model)]
        if not self.include_backbone:
            return self.code_layers_
        return _as_layer_list(hierarchical_layers(backbone, model), model)

    def _feature_prefixes(self):
        prefixes = [(f"{layer}_code", self.bottleneck) for layer in self.code_layers_]
        if self.include_backbone:
            prefixes += list(zip(self.layers_, self.n_channels_, strict=True))
        return prefixes
