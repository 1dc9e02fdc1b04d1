"""Checks of the image parameters (``image_size``, ``intensity``, ``image_shape``) and the
names of the intensity and channel policies."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .._param_validation import is_strict_int

__all__ = [
    "ACCEPTED_CHANNELS",
    "CHANNEL_POLICIES",
    "INTENSITY_POLICIES",
    "check_image_shape",
    "check_image_size",
    "check_intensity",
]

INTENSITY_POLICIES = ("auto", "minmax", "dtype", "dicom_window")
CHANNEL_POLICIES = ("convert", "strict")
#: Channel counts an image may have: grey, RGB, RGBA (alpha dropped).
ACCEPTED_CHANNELS = (1, 3, 4)


def check_image_size(image_size) -> tuple[int, int]:
    """Validate ``image_size`` (an int or a pair of ints) and return ``(h, w)``."""
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(is_strict_int(s) and s > 0 for s in size):
        raise ValueError(
            f"image_size must be a positive int or a pair of positive ints, got {image_size!r}."
        )
    return int(size[0]), int(size[1])


def _window(intensity) -> tuple[float, float] | None:
    """``(low, high)`` as floats when it is a window the float32 maths can represent."""
    if not (
        isinstance(intensity, Sequence)
        and not isinstance(intensity, str)
        and len(intensity) == 2
        # bool is a Real, but True is no intensity bound
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in intensity)
    ):
        return None
    low, high = float(intensity[0]), float(intensity[1])
    # Windows are applied in float32 (on halves, so high - low cannot overflow): both
    # ends and the span must be finite, non-zero float32 numbers, or pixels become NaN.
    with np.errstate(over="ignore"):
        low32, high32 = np.float32(low), np.float32(high)
        span = high32 * np.float32(0.5) - low32 * np.float32(0.5)
    if not (np.isfinite(low32) and np.isfinite(high32) and span >= np.finfo(np.float32).tiny):
        return None
    return low, high


def check_intensity(intensity) -> str | tuple[float, float]:
    """Validate an intensity policy; return it as a policy name or a float window."""
    if isinstance(intensity, str) and intensity in INTENSITY_POLICIES:
        return intensity
    window = _window(intensity)
    if window is not None:
        return window
    raise ValueError(
        "intensity must be 'auto', 'minmax', 'dtype', 'dicom_window' or a (low, high) "
        "window with low < high, both finite float32 numbers (|value| < 3.4e38), got "
        f"{intensity!r}."
    )


def check_image_shape(image_shape) -> tuple[int, ...]:
    """Validate the ``image_shape`` that unflattens rows: ``(H, W)`` or ``(H, W, C)``."""
    shape = tuple(image_shape) if isinstance(image_shape, Sequence) else (image_shape,)
    valid = (
        len(shape) in (2, 3)
        and all(is_strict_int(s) for s in shape)
        and all(s > 0 or s == -1 for s in shape)
        and sum(s == -1 for s in shape) <= 1
        and (len(shape) == 2 or shape[2] in (*ACCEPTED_CHANNELS, -1))
    )
    if not valid:
        raise ValueError(
            "image_shape must be (H, W) or (H, W, C) with positive entries (C in 1, 3, 4) "
            f"and at most one -1, got {image_shape!r}."
        )
    return tuple(int(s) for s in shape)
