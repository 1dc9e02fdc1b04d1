"""Figures for fitted featurizers: reconstructions, embeddings and loss curves.

Needs matplotlib (``pip install 'sklearn-cae[plot]'``), imported only when a
function here is called, so ``import sklearn_cae.plotting`` always works.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._docstrings import Substitution
from ._param_validation import is_strict_int

__all__ = [
    "plot_embedding",
    "plot_loss_curves",
    "plot_reconstructions",
    "reconstruct_feature_maps",
]


# Parameter docs of the functions that draw a featurizer's auto-encoder.
_shared_docs = Substitution(
    featurizer="""featurizer : CAETransferFeaturizer, Pipeline or search holding one
        A fitted featurizer, or a fitted estimator containing one (a ``Pipeline``,
        a ``GridSearchCV``, a ``FrozenEstimator``).""",
    layer="""layer : str or int, default=0
        Layer with a CAE, by name or by position in the featurizer's ``code_layers_``.""",
)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "sklearn_cae.plotting needs matplotlib: pip install 'sklearn-cae[plot]'."
        ) from exc
    return plt


def _layer_index(featurizer, layer) -> int:
    """Position of ``layer`` among the featurizer's layers with a CAE (``code_layers_``)."""
    layers = featurizer.code_layers_
    if isinstance(layer, str):
        if layer not in layers:
            raise ValueError(f"layer {layer!r} has no CAE; layers with one: {layers}.")
        return layers.index(layer)
    n_layers = len(layers)
    if not is_strict_int(layer) or not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer must be the name of a layer with a CAE or an index < {n_layers}, got {layer!r}."
        )
    return int(layer) % n_layers


def _find_featurizer(estimator, X=None):
    """The fitted CAETransferFeaturizer of ``estimator``, and ``X`` as it reaches it.

    See :func:`sklearn_cae.pipelines.find_featurizers`; the featurizer is found and
    checked before ``X`` goes through any step.
    """
    from .featurizer import CAETransferFeaturizer
    from .pipelines import find_featurizers

    kind = (CAETransferFeaturizer,)
    featurizer, _ = next(find_featurizers(estimator, types=kind), (None, None))
    if featurizer is None:
        raise TypeError(
            "Expected a CAETransferFeaturizer, or a pipeline, search or wrapper holding "
            f"one; got {type(estimator).__name__} without one."
        )
    check_is_fitted(featurizer, "cae_")
    return next(find_featurizers(estimator, X, types=kind)) if X is not None else (featurizer, X)


@_shared_docs
def reconstruct_feature_maps(featurizer, X, layer: str | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised backbone maps of ``X`` and their CAE reconstructions.

    Parameters
    ----------
    {featurizer}
    X : array-like of images
        Images as ``featurizer`` takes them -- for a pipeline, as the pipeline takes
        them: the steps before the featurizer are applied. Keep it small (a few images).
    {layer}

    Returns
    -------
    maps : ndarray of shape (n_images, channels, height, width)
        The standardised feature maps the auto-encoder was trained on, as
        :meth:`~sklearn_cae.CAETransferFeaturizer.backbone_maps` gives them.
    reconstructions : ndarray of the same shape
        The auto-encoder's output for ``maps``
        (:meth:`~sklearn_cae.CAETransferFeaturizer.reconstruct`).
    """
    featurizer, X = _find_featurizer(featurizer, X)
    index = _layer_index(featurizer, layer)
    maps, reconstructions = featurizer.reconstruct(X, return_maps=True)
    return maps[index], reconstructions[index]


def _for_display(X) -> list[np.ndarray]:
    """The images of ``X`` as arrays: file paths are decoded, PIL images converted."""
    import os

    from .images import read_image

    if isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
        return list(X)
    return [read_image(x) if isinstance(x, str | os.PathLike) else np.asarray(x) for x in X]


def _show_image(ax, image: np.ndarray) -> None:
    image = np.asarray(image, dtype=np.float64)
    # Stretch each image to its own range, so 16-bit and float images show too.
    image = (image - image.min()) / (np.ptp(image) or 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)


@_shared_docs
def plot_reconstructions(
    featurizer,
    X,
    *,
    layer: str | int = 0,
    n_channels: int = 3,
    figsize: tuple[float, float] | None = None,
):
    """Show each image next to its feature maps and their CAE reconstructions.

    One row per image: the input, then for each of the ``n_channels`` channels that
    vary most over ``X``, the standardised backbone map and the auto-encoder's
    reconstruction of it, on a shared colour scale. Row titles give the image's
    reconstruction error (mean squared error over all channels).

    Parameters
    ----------
    {featurizer}
    X : array-like of images
        A few images in any form the featurizer (or pipeline) accepts: an array, file
        paths, PIL images. The images are shown as given; for a pipeline, the steps
        before the featurizer are applied to compute the maps.
    {layer}
    n_channels : int, default=3
        Number of channels to show.
    figsize : (float, float), default=None
        Figure size in inches; by default 1.6 inches per panel.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    plt = _pyplot()
    maps, reconstructions = reconstruct_feature_maps(featurizer, X, layer)
    featurizer, _ = _find_featurizer(featurizer)
    images = _for_display(X)
    n_channels = min(int(n_channels), maps.shape[1])
    if n_channels < 1:
        raise ValueError(f"n_channels must be positive, got {n_channels}.")
    # Channels whose maps differ most between images say most about the images.
    channels = np.argsort(maps.std(axis=(0, 2, 3)))[::-1][:n_channels]
    errors = ((maps - reconstructions) ** 2).mean(axis=(1, 2, 3))
    n_rows, n_cols = len(images), 1 + 2 * n_channels
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=figsize or (1.6 * n_cols, 1.6 * n_rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row in range(n_rows):
        _show_image(axes[row, 0], images[row])
        axes[row, 0].set_ylabel(f"MSE {errors[row]:.2f}")
        for k, channel in enumerate(channels):
            limit = np.abs(maps[row, channel]).max() or 1.0
            for offset, data in enumerate((maps, reconstructions)):
                axes[row, 1 + 2 * k + offset].imshow(
                    data[row, channel], cmap="RdBu_r", vmin=-limit, vmax=limit
                )
    axes[0, 0].set_title("input")
    for k, channel in enumerate(channels):
        axes[0, 1 + 2 * k].set_title(f"map {channel}")
        axes[0, 2 + 2 * k].set_title(f"recon. {channel}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    name = featurizer.code_layers_[_layer_index(featurizer, layer)]
    fig.suptitle(f"CAE reconstructions of {name} feature maps")
    return fig


def plot_embedding(
    features,
    labels,
    *,
    method: str = "tsne",
    class_names: Sequence[str] | None = None,
    ax=None,
    random_state: int | None = 0,
    title: str | None = None,
):
    """Scatter a 2-D embedding of features, coloured by label.

    Features are standardised, then embedded with t-SNE (or PCA, or UMAP when the
    ``umap-learn`` package is installed).

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        E.g. the output of a featurizer's ``transform``.
    labels : array-like of shape (n_samples,)
        Class of each sample.
    method : {"tsne", "pca", "umap"}, default="tsne"
        Embedding method.
    class_names : sequence of str, default=None
        Legend names, indexed by the sorted unique labels; defaults to the labels.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when None.
    random_state : int or None, default=0
        Seed of the embedding.
    title : str, default=None
        Axes title; defaults to the method's name.

    Returns
    -------
    ax : matplotlib.axes.Axes
    """
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels) or len(features) < 3:
        raise ValueError(
            "features must be 2-D with one row per label and at least 3 rows, got shapes "
            f"{features.shape} and {labels.shape}."
        )
    scaled = StandardScaler().fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(scaled) - 1) / 3)
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=random_state)
        points = points.fit_transform(scaled)
    elif method == "pca":
        from sklearn.decomposition import PCA

        points = PCA(2, random_state=random_state).fit_transform(scaled)
    elif method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise ImportError("method='umap' needs the umap-learn package.") from exc
        points = umap.UMAP(random_state=random_state).fit_transform(scaled)
    else:
        raise ValueError(f"method must be 'tsne', 'pca' or 'umap', got {method!r}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    classes = np.unique(labels)
    names = list(class_names) if class_names is not None else [str(c) for c in classes]
    if len(names) != len(classes):
        raise ValueError(f"class_names has {len(names)} names for {len(classes)} classes.")
    for name, cls in zip(names, classes, strict=True):
        chosen = labels == cls
        ax.scatter(*points[chosen].T, s=12, alpha=0.75, label=f"{name} ({chosen.sum()})")
    ax.legend(loc="best", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}[method])
    return ax


def _nets_and_names(estimator) -> list[tuple[str, object]]:
    if hasattr(estimator, "history") and hasattr(estimator, "module_"):
        return [("CAE", estimator)]
    estimator, _ = _find_featurizer(estimator)
    return list(zip(estimator.code_layers_, estimator.cae_, strict=True))


def plot_loss_curves(estimator, *, ax=None, log_scale: bool = False):
    """Plot the auto-encoder's training and validation loss per epoch.

    Read from skorch's ``history``; the validation curve exists when the featurizer
    held maps out (``validation_fraction > 0``). The best validation epoch, whose
    weights early stopping keeps, is marked.

    Parameters
    ----------
    estimator : CAETransferFeaturizer, Pipeline, search or skorch NeuralNet
        A fitted featurizer (one curve pair per tapped layer), a fitted estimator
        containing one (a ``Pipeline``, a ``GridSearchCV``, a ``FrozenEstimator``), or
        a fitted skorch net.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when None.
    log_scale : bool, default=False
        Use a logarithmic loss axis.

    Returns
    -------
    ax : matplotlib.axes.Axes
    """
    plt = _pyplot()
    nets = _nets_and_names(estimator)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for name, net in nets:
        history = net.history
        epochs = history[:, "epoch"]
        (line,) = ax.plot(epochs, history[:, "train_loss"], "o-", ms=3, label=f"{name} train")
        if "valid_loss" in history[-1]:
            valid = np.asarray(history[:, "valid_loss"], dtype=float)
            color = line.get_color()
            ax.plot(epochs, valid, "s--", ms=3, color=color, label=f"{name} valid")
            best = int(np.argmin(valid))
            ax.plot(epochs[best], valid[best], "*", ms=12, color=color)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    sparse = any(getattr(net, "sparsity", 0) for _, net in nets)
    ax.set_ylabel("loss (MSE + sparsity penalty)" if sparse else "reconstruction loss (MSE)")
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.set_title("CAE training (★ best validation epoch)")
    return ax
