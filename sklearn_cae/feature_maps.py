"""Per-channel statistics and standardisation of backbone feature maps.

The auto-encoder is trained on each tapped layer's maps standardised per channel
with the training images' mean and standard deviation; these are the functions that
compute them, for the featurizer and for studies on maps computed once.
"""

from __future__ import annotations

import torch

__all__ = ["ChannelStatistics", "standardize"]


class ChannelStatistics:
    """Running per-channel mean and standard deviation of feature maps.

    Sums are kept in float64 on the maps' device, so that many batches of float16
    maps add up without loss.

    Parameters
    ----------
    n_channels : int
        Channels of the maps.
    device : torch.device or str, default="cpu"
        Where the sums live (that of the maps passed to :meth:`update`).

    Examples
    --------
    >>> import torch
    >>> stats = ChannelStatistics(2)
    >>> stats.update(torch.ones(4, 2, 3, 3))
    >>> mean, std = stats.mean_std()
    >>> mean.tolist(), std.tolist()  # constant channels keep unit scale
    ([1.0, 1.0], [1.0, 1.0])
    """

    def __init__(self, n_channels: int, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(n_channels, dtype=torch.float64, device=device)
        self.squares = torch.zeros_like(self.sums)
        self.count = 0

    def update(self, maps: torch.Tensor) -> None:
        """Add a batch of maps of shape (n, channels, height, width)."""
        m64 = maps.double()
        self.sums += m64.sum(dim=(0, 2, 3))
        self.squares += (m64**2).sum(dim=(0, 2, 3))
        self.count += maps.shape[0] * maps.shape[2] * maps.shape[3]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation (float32, shape (channels,)).

        Dead channels (constant maps) get a standard deviation of 1 rather than 0,
        so that standardising them does not divide by zero.
        """
        mean = self.sums / self.count
        var = (self.squares / self.count - mean**2).clamp_min(0)
        std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
        return mean.float(), std.float()


def standardize(maps: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(maps - mean) / std`` per channel of maps of shape (n, channels, height, width).

    Examples
    --------
    >>> import torch
    >>> standardize(torch.full((1, 1, 2, 2), 3.0), torch.tensor([1.0]), torch.tensor([2.0]))
    tensor([[[[1., 1.],
              [1., 1.]]]])
    """
    return (maps - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
