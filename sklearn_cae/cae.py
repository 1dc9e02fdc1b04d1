"""The convolutional auto-encoder over backbone feature maps, trained by skorch."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from skorch.utils import to_tensor
from torch import nn
from torch.nn import functional as F

from .devices import cpu_threads_for

__all__ = ["AutoEncoderNet", "ConvAutoEncoder", "MapViews", "fit_autoencoder"]

#: Label of an unlabelled image, as in :mod:`sklearn.semi_supervised`.
UNLABELLED = -1


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvAutoEncoder(nn.Module):
    """Convolutional auto-encoder that keeps the spatial size of its input.

    The encoder's first ``conv-BN-ReLU`` block (``kernel_size``) gathers each
    position's neighbourhood; further blocks of widths ``layer_sizes[1:]`` and the
    bottleneck ``conv-ReLU`` with ``bottleneck`` channels (the code) are 1x1, so that
    the code is a position-wise non-linear encoding of that neighbourhood. The decoder
    mirrors the widths with 1x1 blocks and ends in a linear ``kernel_size``
    convolution, since the standardised feature maps it reconstructs take negative
    values. (1x1 layers cost a ninth of 3x3 ones; the CAE trains about 2.3x faster
    than with 3x3 everywhere at the same accuracy, see docs/method.md.)

    Parameters
    ----------
    in_channels : int
        Channels of the feature maps to reconstruct.
    layer_sizes : sequence of int, default=(128,)
        Widths of the encoder's hidden convolutions (mirrored in the decoder).
    bottleneck : int, default=64
        Channels of the code.
    kernel_size : int, default=3
        Odd kernel size of the first encoder and the last decoder convolution.
    noise : float, default=0.0
        Masking-noise rate of a denoising auto-encoder: while training, each input
        value is zeroed with this probability (and the rest rescaled, as in
        dropout) while the loss still compares with the clean input. Inactive in
        eval mode, so codes are computed from clean maps.
    n_classes : int, default=0
        With ``n_classes >= 2``, a linear classifier on the average-pooled code
        (``logits``) for semi-supervised training; 0 for none.
    """

    def __init__(
        self,
        in_channels: int,
        layer_sizes: Sequence[int] = (128,),
        bottleneck: int = 64,
        kernel_size: int = 3,
        noise: float = 0.0,
        n_classes: int = 0,
    ):
        super().__init__()
        self.corrupt = nn.Dropout(noise)
        widths = [in_channels, *layer_sizes]
        kernels = [kernel_size] + [1] * len(layer_sizes)
        self.encoder = nn.Sequential(
            *(
                _conv_block(a, b, k)
                for (a, b), k in zip(itertools.pairwise(widths), kernels, strict=False)
            ),
            nn.Conv2d(
                widths[-1],
                bottleneck,
                kernels[len(layer_sizes)],
                padding=kernels[len(layer_sizes)] // 2,
            ),
            nn.ReLU(inplace=True),
        )
        back = [bottleneck, *reversed(layer_sizes)]
        self.decoder = nn.Sequential(
            *(_conv_block(a, b, 1) for a, b in itertools.pairwise(back)),
            nn.Conv2d(back[-1], in_channels, kernel_size, padding=kernel_size // 2),
        )
        self.head = nn.Linear(bottleneck, n_classes) if n_classes >= 2 else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the bottleneck code, shape ``(n, bottleneck, h, w)``."""
        return self.encoder(x.float())

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return ``(reconstruction, code, logits)``.

        ``targets`` (the maps to reconstruct) is only read by the loss; ``logits`` is
        None without a classification head.
        """
        code = self.encode(self.corrupt(inputs.float()))
        logits = None if self.head is None else self.head(code.mean(dim=(2, 3)))
        return self.decoder(code), code, logits


class MapViews(torch.utils.data.Dataset):
    """Training maps for the CAE: one of several views of each image as input, the
    clean maps as target, and the image's label (``-1`` when unlabelled).

    Item ``i`` is image ``i`` seen through a view drawn at random (torch's global
    generator, so a seeded fit is reproducible): the clean maps themselves, or the
    maps of one of its corrupted copies. An epoch thus visits each image once,
    whatever the number of views.

    Parameters
    ----------
    clean : array of shape (n, c, h, w)
        Standardised maps of the images (the reconstruction target).
    corrupted : list of arrays of shape (n, c, h, w), default=()
        Standardised maps of corrupted copies of the same images, in the same order.
    labels : array of shape (n,) of int or None, default=None
        Class indices, ``-1`` for unlabelled images; None when all are unlabelled.
    """

    def __init__(self, clean, corrupted: Sequence = (), labels=None):
        self.views = [clean, *corrupted]
        n = len(clean)
        self.labels = np.full(n, UNLABELLED) if labels is None else np.asarray(labels)

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, i):
        view = 0 if len(self.views) == 1 else int(torch.randint(len(self.views), ()))
        inputs = torch.as_tensor(np.asarray(self.views[view][i]))
        targets = torch.as_tensor(np.asarray(self.views[0][i]))
        return {"inputs": inputs, "targets": targets}, int(self.labels[i])


class _Interrupted(Exception):
    """Carries a KeyboardInterrupt past skorch, which would swallow it."""


class AutoEncoderNet(NeuralNet):
    """A skorch :class:`~skorch.NeuralNet` that reconstructs its input maps.

    Fit it on an array of maps (the target is the input) or on a :class:`MapViews`
    (the target is each image's clean maps, the labels feed the optional
    classification head). Unlike a plain skorch net, a ``KeyboardInterrupt`` during
    training propagates, so an interrupted fit never looks finished.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`.
    sparsity : float, default=0.0
        Weight of an L1 penalty on the code activations (mean absolute value)
        added to the reconstruction loss: a sparse auto-encoder.
    supervision : float, default=0.0
        Weight of the cross-entropy of the module's classification head on the
        labelled images of each batch (labels ``>= 0``); 0 ignores labels.
    class_weight : array of shape (n_classes,) or None, default=None
        Class weights of that cross-entropy.
    label_smoothing : float, default=0.0
        Label smoothing of that cross-entropy: targets of ``1 - label_smoothing`` on
        the true class and the rest spread evenly, so that the head cannot drive the
        few labelled codes to their class's corner.
    """

    def __init__(
        self,
        module=ConvAutoEncoder,
        criterion=nn.MSELoss,
        *args,
        optimizer=torch.optim.Adam,
        iterator_train__shuffle: bool = True,
        train_split=None,
        sparsity: float = 0.0,
        supervision: float = 0.0,
        class_weight=None,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        # Defaults of an auto-encoder, as NeuralNetClassifier sets a classifier's.
        super().__init__(
            module,
            criterion,
            *args,
            optimizer=optimizer,
            iterator_train__shuffle=iterator_train__shuffle,
            train_split=train_split,
            **kwargs,
        )
        self.sparsity = sparsity
        self.supervision = supervision
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    def get_default_callbacks(self):
        """skorch's, then a cosine learning rate schedule over ``max_epochs``."""
        cosine = LRScheduler(policy="CosineAnnealingLR", T_max=self.max_epochs)
        return [*super().get_default_callbacks(), ("cosine_lr", cosine)]

    def get_loss(self, y_pred, y_true, X=None, training=False):
        reconstruction, code, logits = y_pred
        target = X["targets"] if isinstance(X, dict) else X
        target = to_tensor(target, device=self.device).to(reconstruction.dtype)
        loss = super().get_loss(reconstruction, target, X=X, training=training)
        if self.sparsity:
            loss = loss + self.sparsity * code.abs().mean()
        if self.supervision and logits is not None and y_true is not None:
            labels = to_tensor(y_true, device=self.device).long()
            labelled = labels != UNLABELLED
            if labelled.any():
                weight = None
                if self.class_weight is not None:
                    weight = torch.as_tensor(self.class_weight, device=logits.device).float()
                cross_entropy = F.cross_entropy(
                    logits[labelled],
                    labels[labelled],
                    weight,
                    label_smoothing=float(self.label_smoothing),
                )
                loss = loss + self.supervision * cross_entropy
        return loss

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as interrupt:
            if self._stopped_early():
                raise  # skorch's EarlyStopping ends training this way; partial_fit ends it
            raise _Interrupted from interrupt

    def _stopped_early(self) -> bool:
        """Whether an EarlyStopping callback just ran out of patience."""
        return any(
            isinstance(callback, EarlyStopping) and callback.misses_ == callback.patience
            for _, callback in getattr(self, "callbacks_", [])
        )

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        try:
            return super().partial_fit(X, y, classes=classes, **fit_params)
        except _Interrupted as wrapped:
            raise wrapped.__cause__ from None


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch for CAE initialisation and batch shuffling, restoring RNG state after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def fit_autoencoder(
    views: MapViews,
    *,
    layer_sizes: Sequence[int] = (128,),
    bottleneck: int = 256,
    noise: float = 0.0,
    sparsity: float = 0.1,
    supervision: float = 0.0,
    lr: float = 3e-3,
    max_epochs: int = 15,
    batch_size: int = 64,
    patience: int | None = None,
    validation_fraction: float = 0.0,
    callbacks: Sequence | None = None,
    net_params: dict | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    verbose: int = 0,
) -> AutoEncoderNet:
    """Train one auto-encoder on standardised maps, as the CAE featurizer does.

    The featurizer calls this once per tapped layer; call it yourself to train on maps
    you computed (e.g. a study of CAE settings on maps computed once). The keyword
    arguments mean what the featurizer's parameters of the same names mean
    (``net_params`` is its ``cae_params``). Training uses Adam with a cosine learning
    rate schedule over ``max_epochs``, seeded by ``seed`` (initialisation, batch order
    and hold-out split); torch's global random state is restored afterwards.

    Parameters
    ----------
    views : MapViews
        The training maps (and their corrupted views and labels).
    layer_sizes, bottleneck, noise, sparsity, supervision, lr, max_epochs, batch_size, \
patience, validation_fraction, callbacks, verbose
        See :class:`~sklearn_cae.CAETransferFeaturizer`.
    net_params : dict or None, default=None
        Further :class:`skorch.NeuralNet` parameters, applied last.
    seed : int, default=0
        Seed of the training's randomness.
    device : torch.device or str, default="cpu"
        Where to train.

    Returns
    -------
    AutoEncoderNet
        The trained net, its module in evaluation mode.

    Raises
    ------
    ValueError
        When the training loss becomes NaN or infinite.
    """
    device = torch.device(device)
    _, in_channels, height, width = views.views[0].shape
    n_samples = len(views)
    held_out = int(n_samples * validation_fraction)
    use_split = held_out >= 2 and n_samples - held_out >= 2
    labelled = views.labels[views.labels != UNLABELLED]
    # Balanced, as SVC(class_weight="balanced"): small classes count as much as large ones.
    class_weight = None
    if len(labelled):
        # One weight per class index; an index no labelled image has (labels given with
        # gaps) gets 1, as it never enters the loss.
        present = np.unique(labelled)
        class_weight = np.ones(labelled.max() + 1)
        class_weight[present] = compute_class_weight("balanced", classes=present, y=labelled)
    schedule = list(callbacks or [])
    if use_split and patience is not None:
        schedule.append(("early_stopping", EarlyStopping(patience=patience, load_best=True)))
    params = dict(
        module__in_channels=in_channels,
        module__layer_sizes=tuple(layer_sizes),
        module__bottleneck=bottleneck,
        module__noise=float(noise),
        module__n_classes=0 if class_weight is None else len(class_weight),
        sparsity=float(sparsity),
        supervision=float(supervision),
        class_weight=class_weight,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_split=ValidSplit(validation_fraction, random_state=seed) if use_split else None,
        callbacks=schedule,
        device=str(device),
        verbose=int(verbose > 0),
    )
    params.update(net_params or {})
    net = AutoEncoderNet(**params)
    positions = min(batch_size, n_samples) * height * width
    with _seeded(seed, device), cpu_threads_for(device, positions):
        net.fit(views, y=None)
    losses = net.history[:, "train_loss"]
    if not np.all(np.isfinite(losses)):
        raise ValueError(
            "The auto-encoder's training loss became NaN or infinite (epoch "
            f"{int(np.argmin(np.isfinite(losses))) + 1}). Lower lr (now {lr}) "
            "or check the input images."
        )
    net.module_.eval()
    return net
