"""Pixel values to network input: intensity scaling to [0, 1], resizing and the backbone's
normalization, on any device."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._options import check_intensity

__all__ = ["normalize_batch", "preprocess_batch", "to_unit"]


def _torch_ready(a: np.ndarray) -> np.ndarray:
    """Cast, losslessly, to a dtype torch computes with (torch lacks most unsigned ints)."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "b":
        return a.view(np.uint8)
    if kind == "u" and size > 1:
        return a.astype(np.int32 if size == 2 else np.int64 if size == 4 else np.float64)
    if kind == "i" and size == 1:
        return a.astype(np.int16)
    if kind == "f" and size < 4:
        return a.astype(np.float32)
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def _unit_minmax(x: torch.Tensor) -> torch.Tensor:
    """Each image of (b, C, H, W) to its own [0, 1]; halving first so spans never overflow."""
    flat = x.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1, 1) * 0.5
    span = flat.amax(dim=1).view(-1, 1, 1, 1) * 0.5 - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (x * 0.5 - low) / span


def _scale_intensity(x: torch.Tensor, intensity, source_dtype: np.dtype) -> torch.Tensor:
    """Map a (b, C, H, W) batch of ``source_dtype`` images to float32 in [0, 1].

    ``x`` holds the values of ``source_dtype`` in a torch dtype (see ``_torch_ready``).
    """
    wide = source_dtype.itemsize > 4 or (source_dtype.kind in "iu" and source_dtype.itemsize > 2)
    x = x.double() if wide else x.float()
    kind = source_dtype.kind
    if isinstance(intensity, tuple):
        low, high = intensity
        return ((x * 0.5 - low * 0.5) / (high * 0.5 - low * 0.5)).clamp(0.0, 1.0).float()
    if intensity == "minmax":
        return _unit_minmax(x).float()
    if kind == "b":
        return x.float()
    if intensity == "dtype" or source_dtype == np.uint8:
        if kind == "f":  # checked to lie in [0, 1]
            return x.float()
        info = np.iinfo(source_dtype)
        return ((x - float(info.min)) / (float(info.max) - float(info.min))).float()
    if kind == "f":  # "auto": floats in [0, 1] as they are, others min-max
        flat = x.flatten(1)
        in_unit = ((flat.amin(dim=1) >= 0) & (flat.amax(dim=1) <= 1)).view(-1, 1, 1, 1)
        return torch.where(in_unit, x, _unit_minmax(x)).float()
    return _unit_minmax(x).float()


def _resize(x: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(image_size):
        return x
    return F.interpolate(x, size=image_size, mode="bilinear", antialias=True)


def to_unit(images: np.ndarray, intensity, image_size, device) -> torch.Tensor:
    """Channels-last (b, H, W, C) images -> float32 (b, C, *image_size) in [0, 1] on device."""
    array = np.ascontiguousarray(_torch_ready(images))
    if not array.flags.writeable:  # e.g. PIL-backed or memory-mapped: torch wants writable
        array = array.copy()
    batch = torch.from_numpy(array)
    non_blocking = torch.device(device).type == "cuda"
    if non_blocking:
        batch = batch.pin_memory()
    batch = batch.to(device, non_blocking=non_blocking).permute(0, 3, 1, 2)
    return _resize(_scale_intensity(batch, intensity, images.dtype), image_size)


def normalize_batch(
    unit: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Grey to RGB, then the backbone's normalization; returns channels_last memory."""
    if unit.shape[1] == 1:
        unit = unit.expand(-1, 3, -1, -1)
    mean_t = torch.tensor(mean, device=unit.device, dtype=unit.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=unit.device, dtype=unit.dtype).view(1, 3, 1, 1)
    return ((unit - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def preprocess_batch(
    images: np.ndarray,
    *,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    intensity="auto",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Turn a channels-last image batch into a normalized network input.

    Parameters
    ----------
    images : ndarray of shape (b, H, W, C)
        ``C`` in {1, 3}; any dtype the intensity policy accepts.
    image_size : (int, int)
        Output height and width; antialiased bilinear resizing (aspect ratio not kept).
    mean, std : sequence of 3 floats
        The backbone's input normalization.
    intensity : {"auto", "minmax", "dtype", "dicom_window"} or (low, high), default="auto"
        See :mod:`sklearn_cae.images` (``"dicom_window"`` acts on files only: here "auto").
    device : torch.device or str
        Where the work happens.

    Returns
    -------
    torch.Tensor of shape (b, 3, *image_size), float32, channels_last memory format
    """
    unit = to_unit(np.asarray(images), check_intensity(intensity), image_size, device)
    return normalize_batch(unit, mean, std)
