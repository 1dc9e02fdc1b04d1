"""Pool spatial feature maps ``(n, c, h, w)`` into fixed-length vectors, and balance
the blocks of pooled features that several maps give."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["POOLINGS", "SPP_GRIDS", "BlockScaler", "pool", "pooled_names"]

#: Accepted values of the featurizers' ``pooling`` parameter.
POOLINGS = ("avg", "max", "avgmax", "spp")

#: Grids of ``"spp"`` pooling, a spatial pyramid (He et al., 2015): the whole map, then
#: a 2x2 grid, max-pooled.
SPP_GRIDS = (1, 2)


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {list(POOLINGS)}.")


def pool(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool a batch of maps.

    Parameters
    ----------
    maps : torch.Tensor of shape (n, c, h, w)
        Feature maps.
    pooling : {"avg", "max", "avgmax", "spp"}
        ``avgmax`` concatenates average and max pooling; ``spp`` concatenates max
        pooling over the whole map and over each cell of a 2x2 grid.

    Returns
    -------
    torch.Tensor of shape (n, c * k)
        ``k`` is 1, 1, 2 and 5 for the four poolings; columns are ordered as
        :func:`pooled_names` names them.
    """
    _check_pooling(pooling)
    if pooling == "avg":
        return maps.mean(dim=(2, 3))
    if pooling == "max":
        return maps.amax(dim=(2, 3))
    if pooling == "avgmax":
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
    n = maps.shape[0]
    return torch.cat(
        [F.adaptive_max_pool2d(maps, grid).reshape(n, -1) for grid in SPP_GRIDS], dim=1
    )


def pooled_names(prefix: str, n_channels: int, pooling: str) -> list[str]:
    """Names of the columns :func:`pool` returns, in the same order."""
    _check_pooling(pooling)
    if pooling in ("avg", "max"):
        kinds = [pooling]
    elif pooling == "avgmax":
        kinds = ["avg", "max"]
    else:
        return [
            f"{prefix}_spp{grid}x{grid}_{c}_{i}_{j}"
            for grid in SPP_GRIDS
            for c in range(n_channels)
            for i in range(grid)
            for j in range(grid)
        ]
    return [f"{prefix}_{kind}_{c}" for kind in kinds for c in range(n_channels)]


class BlockScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise features, then scale each block of columns to a total variance of 1.

    The featurizers concatenate blocks of very different widths (a 256-channel code,
    112 pooled channels of one layer, 320 of another). Standardised column by column,
    a block's share of an RBF kernel or a distance grows with its width, so the widest
    block drowns the others; dividing each standardised block by the square root of
    its width gives every block the same total variance, 1. A ``StandardScaler``
    placed after this undoes the balance.

    Parameters
    ----------
    blocks : sequence of int or None, default=None
        Widths of the consecutive blocks of columns; they must add up to the number
        of features. None: one block of all columns.

    Attributes
    ----------
    scaler_ : StandardScaler
        The per-column standardisation, fitted on the training features.
    weights_ : ndarray of shape (n_features_in_,)
        The weight of each standardised column, ``1 / sqrt(width of its block)``.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae.pooling import BlockScaler
    >>> X = np.random.default_rng(0).normal(size=(100, 5))
    >>> Z = BlockScaler(blocks=[1, 4]).fit_transform(X)
    >>> np.round([Z[:, :1].var(axis=0).sum(), Z[:, 1:].var(axis=0).sum()], 6)
    array([1., 1.])
    """

    def __init__(self, blocks: Sequence[int] | None = None):
        self.blocks = blocks

    def fit(self, X, y=None):
        """Fit the per-column mean and standard deviation of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : BlockScaler
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        widths = [X.shape[1]] if self.blocks is None else [int(w) for w in self.blocks]
        if sum(widths) != X.shape[1] or min(widths) < 1:
            raise ValueError(
                f"blocks must be positive widths adding up to the {X.shape[1]} features, "
                f"got {self.blocks!r}."
            )
        self.scaler_ = StandardScaler().fit(X)
        self.weights_ = np.repeat(1 / np.sqrt(widths), widths).astype(X.dtype)
        return self

    def transform(self, X) -> np.ndarray:
        """Standardise ``X`` and weight each column by its block's weight.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features), of ``X``'s float dtype
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.scaler_.transform(X) * self.weights_.astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
