"""Pool spatial feature maps ``(n, c, h, w)`` into fixed-length vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["POOLINGS", "pool", "pooled_names"]

#: Accepted values of the featurizers' ``pooling`` parameter.
POOLINGS = ("avg", "max", "avgmax", "spp")

# Spatial pyramid (He et al., 2015): the whole map, then a 2x2 grid, max-pooled.
_SPP_GRIDS = (1, 2)


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
        [F.adaptive_max_pool2d(maps, grid).reshape(n, -1) for grid in _SPP_GRIDS], dim=1
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
            for grid in _SPP_GRIDS
            for c in range(n_channels)
            for i in range(grid)
            for j in range(grid)
        ]
    return [f"{prefix}_{kind}_{c}" for kind in kinds for c in range(n_channels)]
