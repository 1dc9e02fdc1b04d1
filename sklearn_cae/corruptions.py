"""Realistic, spatially aligned intensity corruptions of image batches.

The denoising CAE (``CAETransferFeaturizer(corrupted_views=k)``) learns to map the
backbone maps of a corrupted copy of an image back to the maps of the clean image.
The corruptions imitate how acquisitions differ between scanners and protocols --
contrast, gamma, brightness, blur, noise and a smooth intensity inhomogeneity (bias
field) -- and never move a pixel, so the two maps stay aligned position by position.
That gives the frozen features the invariances that pixel-space augmentation gives an
end-to-end network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["corrupt"]

# Each corruption is applied to an image with this probability.
_PROBABILITY = 0.5


def _per_image(generator: torch.Generator, n: int, low: float, high: float, device):
    values = torch.rand(n, generator=generator) * (high - low) + low
    return values.view(n, 1, 1, 1).to(device)


def _chosen(generator: torch.Generator, n: int, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < _PROBABILITY).view(n, 1, 1, 1).to(device)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (pixels), separably."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (n, 2r+1)
    n, c, h, w = x.shape
    flat = x.reshape(1, n * c, h, w)
    rows = kernels.repeat_interleave(c, dim=0)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
        rows.view(n * c, 1, 1, -1),
        groups=n * c,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="replicate"),
        rows.view(n * c, 1, -1, 1),
        groups=n * c,
    )
    return flat.reshape(n, c, h, w)


def _bias_field(generator: torch.Generator, n: int, size, strength, device) -> torch.Tensor:
    """A smooth multiplicative field around 1: a random 3x3 grid, bicubically upsampled."""
    grid = torch.randn(n, 1, 3, 3, generator=generator).to(device)
    field = F.interpolate(grid, size=size, mode="bicubic", align_corners=True)
    field = field / field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return 1 + strength * field


def corrupt(unit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return a corrupted copy of a batch of images in [0, 1].

    Each image independently gets, each with probability 0.5: a contrast change
    (x0.6-1.4 around its mean), a gamma (0.6-1.6), a brightness shift (+-0.1), a
    Gaussian blur (sigma 0.3-1.5 % of the image height), additive Gaussian noise (sigma
    0.01-0.06) and a smooth bias field (+-5-25 %). The result is clipped to [0, 1].

    Parameters
    ----------
    unit : torch.Tensor of shape (n, c, h, w)
        Float images in [0, 1] (the featurizers' preprocessed batches before the
        backbone's normalisation).
    generator : torch.Generator
        Source of randomness (on the CPU), so that a seeded fit is reproducible.

    Returns
    -------
    torch.Tensor of the same shape, device and dtype
    """
    n, _, h, _ = unit.shape
    device = unit.device
    x = unit.float()

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _per_image(generator, n, 0.6, 1.4, device)
    x = torch.where(_chosen(generator, n, device), (x - mean) * contrast + mean, x)

    gamma = torch.exp(_per_image(generator, n, math.log(0.6), math.log(1.6), device))
    x = torch.where(_chosen(generator, n, device), x.clamp(0, 1) ** gamma, x)

    shift = _per_image(generator, n, -0.1, 0.1, device)
    x = torch.where(_chosen(generator, n, device), x + shift, x)

    sigma = _per_image(generator, n, 0.003 * h, 0.015 * h, device).view(n)
    x = torch.where(_chosen(generator, n, device), _gaussian_blur(x, sigma), x)

    noise_sd = _per_image(generator, n, 0.01, 0.06, device)
    noise = torch.randn(x.shape, generator=generator).to(device)
    x = torch.where(_chosen(generator, n, device), x + noise_sd * noise, x)

    strength = _per_image(generator, n, 0.05, 0.25, device)
    field = _bias_field(generator, n, tuple(x.shape[-2:]), strength, device)
    x = torch.where(_chosen(generator, n, device), x * field, x)
    return x.clamp(0, 1).to(unit.dtype)
