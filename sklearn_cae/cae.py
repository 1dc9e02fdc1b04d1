"""The convolutional auto-encoder over backbone feature maps, trained by skorch."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from skorch import NeuralNet
from skorch.utils import to_tensor
from torch import nn

__all__ = ["AutoEncoderNet", "ConvAutoEncoder"]


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvAutoEncoder(nn.Module):
    """Convolutional auto-encoder that keeps the spatial size of its input.

    The encoder is a stack of ``conv-BN-ReLU`` blocks of widths ``layer_sizes``
    followed by a bottleneck ``conv-ReLU`` with ``bottleneck`` channels (the code);
    the decoder mirrors it and ends in a linear convolution, since the standardised
    feature maps it reconstructs take negative values.

    Parameters
    ----------
    in_channels : int
        Channels of the feature maps to reconstruct.
    layer_sizes : sequence of int, default=(128,)
        Widths of the encoder's hidden convolutions (mirrored in the decoder).
    bottleneck : int, default=64
        Channels of the code.
    kernel_size : int, default=3
        Odd kernel size of every convolution.
    noise : float, default=0.0
        Masking-noise rate of a denoising auto-encoder: while training, each input
        value is zeroed with this probability (and the rest rescaled, as in
        dropout) while the loss still compares with the clean input. Inactive in
        eval mode, so codes are computed from clean maps.
    """

    def __init__(
        self,
        in_channels: int,
        layer_sizes: Sequence[int] = (128,),
        bottleneck: int = 64,
        kernel_size: int = 3,
        noise: float = 0.0,
    ):
        super().__init__()
        self.corrupt = nn.Dropout(noise)
        widths = [in_channels, *layer_sizes]
        self.encoder = nn.Sequential(
            *(_conv_block(a, b, kernel_size) for a, b in itertools.pairwise(widths)),
            nn.Conv2d(widths[-1], bottleneck, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        )
        back = [bottleneck, *reversed(layer_sizes)]
        self.decoder = nn.Sequential(
            *(_conv_block(a, b, kernel_size) for a, b in itertools.pairwise(back)),
            nn.Conv2d(back[-1], in_channels, kernel_size, padding=kernel_size // 2),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the bottleneck code, shape ``(n, bottleneck, h, w)``."""
        return self.encoder(x.float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, code)``; the code feeds the sparsity penalty."""
        code = self.encode(self.corrupt(x.float()))
        return self.decoder(code), code


class AutoEncoderNet(NeuralNet):
    """A skorch :class:`~skorch.NeuralNet` whose target is its input.

    Fit it with ``y=None``: the loss compares the reconstruction with the input
    batch, so no labels are ever used.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`.
    sparsity : float, default=0.0
        Weight of an L1 penalty on the code activations (mean absolute value)
        added to the reconstruction loss: a sparse auto-encoder.
    """

    def __init__(self, *args, sparsity: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sparsity = sparsity

    def get_loss(self, y_pred, y_true, X=None, training=False):
        reconstruction, code = y_pred
        target = to_tensor(X, device=self.device).to(reconstruction.dtype)
        loss = super().get_loss(reconstruction, target, X=X, training=training)
        if self.sparsity:
            loss = loss + self.sparsity * code.abs().mean()
        return loss
