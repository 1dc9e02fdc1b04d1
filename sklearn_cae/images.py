"""Image input: validate arrays of images and turn batches into network input.

Validation (:func:`check_images`) runs on the CPU once per call and returns a
channels-last array ``(n, H, W, C)`` with ``C`` in {1, 3}. Conversion to network input
(:func:`preprocess_batch`) runs per batch on the target device: intensity scaling,
grey-to-RGB replication, resizing and normalisation are all tensor operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_array

__all__ = ["check_image_size", "check_images", "preprocess_batch"]

_CHANNELS = (1, 3)


def check_image_size(image_size) -> tuple[int, int]:
    """Validate ``image_size`` (an int or a pair of ints) and return ``(h, w)``."""
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(
            f"image_size must be a positive int or a pair of positive ints, got {image_size!r}."
        )
    return int(size[0]), int(size[1])


def _check_intensity(intensity) -> None:
    if intensity in ("auto", "minmax"):
        return
    if (
        isinstance(intensity, Sequence)
        and not isinstance(intensity, str)
        and len(intensity) == 2
        and all(np.isscalar(v) and np.isfinite(v) for v in intensity)
        and intensity[0] < intensity[1]
    ):
        return
    raise ValueError(
        "intensity must be 'auto', 'minmax' or a (low, high) window with low < high, "
        f"got {intensity!r}."
    )


def _reshape_flat(X: np.ndarray, image_shape) -> np.ndarray:
    if image_shape is None:
        raise ValueError(
            f"X is 2-D with shape {X.shape}: pass images as an array (n, H, W) or "
            "(n, H, W, C), or set image_shape=(H, W) or (H, W, C) to unflatten rows."
        )
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or sum(s == -1 for s in shape) > 1:
        raise ValueError(
            f"image_shape must be (H, W) or (H, W, C), with at most one -1, got {image_shape!r}."
        )
    try:
        images = X.reshape((X.shape[0], *shape))
    except ValueError:
        raise ValueError(
            f"Rows of X have {X.shape[1]} values, which cannot be reshaped to "
            f"image_shape={shape}."
        ) from None
    return images


def _to_channels_last(X: np.ndarray) -> np.ndarray:
    if X.ndim == 3:
        return X[..., np.newaxis]
    if X.ndim == 4:
        if X.shape[-1] in _CHANNELS:
            return X
        if X.shape[1] in _CHANNELS:  # unambiguous (n, C, H, W)
            return np.moveaxis(X, 1, -1)
        raise ValueError(
            f"X has shape {X.shape}: 4-D images must be (n, H, W, C) or (n, C, H, W) "
            f"with C in {list(_CHANNELS)}."
        )
    raise ValueError(
        f"X has {X.ndim} dimensions (shape {X.shape}); expected images as (n, H, W), "
        "(n, H, W, C) or (n, C, H, W), or flattened rows (n, H*W*C) with image_shape."
    )


def check_images(X, *, image_shape=None, intensity="auto") -> np.ndarray:
    """Validate images and return them channels-last.

    Parameters
    ----------
    X : array-like
        ``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)`` with ``C`` in {1, 3}, or
        ``(n, H*W*C)`` with ``image_shape``.
    image_shape : tuple of int, default=None
        ``(H, W)`` or ``(H, W, C)`` used to unflatten 2-D ``X``; one entry may be -1.
    intensity : {"auto", "minmax"} or (low, high), default="auto"
        How pixel values map to [0, 1]; see :func:`preprocess_batch`. With "auto",
        uint8 and bool images are accepted as they are, floats must lie in [0, 1].

    Returns
    -------
    ndarray of shape (n, H, W, C)
        A view of ``X`` where possible (never a modified copy of it).
    """
    _check_intensity(intensity)
    ndim = np.ndim(X) if not isinstance(X, list | tuple) else np.asarray(X, dtype=object).ndim
    if ndim == 1:
        raise ValueError(
            "X is 1-D; expected a batch of images (n, H, W[, C]). For a single image, "
            "pass X[np.newaxis]."
        )
    X = check_array(
        X,
        dtype="numeric",
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
        input_name="X",
    )
    if X.ndim == 2:
        X = _reshape_flat(X, image_shape)
    images = _to_channels_last(X)
    if 0 in images.shape[1:3]:
        raise ValueError(f"X holds zero-sized images (shape {X.shape}).")
    if images.shape[-1] not in _CHANNELS:
        raise ValueError(
            f"Images have {images.shape[-1]} channels; expected one of {list(_CHANNELS)}."
        )
    if intensity == "auto":
        _check_auto_range(images)
    return images


def _check_auto_range(images: np.ndarray) -> None:
    if images.dtype in (np.uint8, np.bool_):
        return
    if images.dtype.kind == "f":
        low, high = float(images.min()), float(images.max())
        if low >= 0.0 and high <= 1.0:
            return
        problem = f"float pixel values in [{low:g}, {high:g}], outside [0, 1]"
    else:
        problem = f"pixels of dtype {images.dtype}"
    raise ValueError(
        f"Got {problem}. With intensity='auto', images must be uint8 (0-255) or float "
        "in [0, 1]. Set intensity='minmax' to rescale each image to its own range, or "
        "intensity=(low, high) to map a fixed window to [0, 1]."
    )


def _scale_intensity(batch: torch.Tensor, intensity) -> torch.Tensor:
    if intensity == "minmax":
        flat = batch.flatten(1)
        low = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = (flat.amax(dim=1).view(-1, 1, 1, 1) - low).clamp_min(1e-12)
        return (batch - low) / span
    if intensity == "auto":
        return batch / 255.0 if batch.dtype == torch.uint8 else batch.float()
    low, high = intensity
    return ((batch.double() - low) / (high - low)).clamp(0.0, 1.0)


def preprocess_batch(
    images: np.ndarray,
    *,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    intensity="auto",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Turn a channels-last image batch into a normalised network input.

    Parameters
    ----------
    images : ndarray of shape (b, H, W, C)
        A batch as returned by :func:`check_images`.
    image_size : (int, int)
        Output height and width; images are resized with antialiased bilinear
        interpolation (aspect ratio not preserved).
    mean, std : sequence of 3 floats
        The backbone's input normalisation.
    intensity : {"auto", "minmax"} or (low, high)
        ``auto``: uint8 / 255, floats as they are. ``minmax``: each image to its own
        [min, max]. ``(low, high)``: a fixed window, values outside it are clipped to
        its ends (as a CT window does).
    device : torch.device or str
        Where the work happens.

    Returns
    -------
    torch.Tensor of shape (b, 3, *image_size), float32, channels_last memory format
    """
    batch = torch.from_numpy(np.ascontiguousarray(images))
    if batch.dtype == torch.bool:
        batch = batch.to(torch.uint8) * 255
    non_blocking = torch.device(device).type == "cuda"
    if non_blocking:
        batch = batch.pin_memory()
    batch = batch.to(device, non_blocking=non_blocking).permute(0, 3, 1, 2)
    if batch.dtype != torch.uint8 or intensity != "auto":
        batch = batch.to(torch.float64 if batch.dtype == torch.float64 else torch.float32)
    batch = _scale_intensity(batch, intensity).float()
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    if tuple(batch.shape[2:]) != tuple(image_size):
        batch = F.interpolate(batch, size=image_size, mode="bilinear", antialias=True)
    mean_t = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return ((batch - mean_t) / std_t).contiguous(memory_format=torch.channels_last)
