"""Checks of decoded pixel arrays (layout to channels-last, dtype, finite values, the
[0, 1] range) and how error messages name an image."""

from __future__ import annotations

import numpy as np

from ._options import ACCEPTED_CHANNELS

__all__ = [
    "channels_last",
    "check_finite",
    "check_pixel_dtype",
    "check_unit_range",
    "describe_image",
]


def describe_image(index: int, name: str | None) -> str:
    """How error messages name an image: ``image 3 ('scan.dcm')``, or ``image 3``."""
    return f"image {index}" + (f" ({str(name)!r})" if name else "")


def channels_last(a: np.ndarray, *, batch: bool, where: str) -> np.ndarray:
    """(n,) H, W[, C] in either channel order -> channels-last, C in {1, 3} (alpha dropped)."""
    lead = 1 if batch else 0
    if a.ndim == lead + 2:
        a = a[..., np.newaxis]
    elif a.ndim == lead + 3:
        if a.shape[-1] not in ACCEPTED_CHANNELS:
            if a.shape[lead] not in ACCEPTED_CHANNELS:
                layout = "(n, H, W, C) or (n, C, H, W)" if batch else "(H, W, C) or (C, H, W)"
                raise ValueError(
                    f"{where} has shape {a.shape}: expected {layout} with C in "
                    f"{list(ACCEPTED_CHANNELS)} (4 = RGBA, alpha dropped)."
                )
            a = np.moveaxis(a, lead, -1)  # unambiguous channels-first
    else:
        expected = (
            "(n, H, W), (n, H, W, C) or (n, C, H, W), or flattened rows (n, H*W*C) with image_shape"
            if batch
            else "(H, W), (H, W, C) or (C, H, W)"
        )
        raise ValueError(f"{where} has {a.ndim} dimensions (shape {a.shape}); expected {expected}.")
    if 0 in a.shape[lead : lead + 2]:
        raise ValueError(f"{where} holds zero-sized images (shape {a.shape}).")
    return a[..., :3] if a.shape[-1] == 4 else a


def check_pixel_dtype(dtype: np.dtype, where: str) -> None:
    """Refuse pixels that are not bool, integer or float (strings, objects, complex)."""
    if dtype.kind not in "biuf":
        raise TypeError(
            f"{where} has pixels of dtype {dtype}; expected bool, integer or float pixels."
        )


def _first_bad(flags: np.ndarray) -> int:
    return int(np.flatnonzero(flags)[0])


def check_finite(images: np.ndarray, offset: int = 0, names=None) -> None:
    """Raise naming the first image holding NaN or inf (checked in chunks to bound memory)."""
    if images.dtype.kind != "f":
        return
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256]
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if bad.any():
            i = offset + start + _first_bad(bad)
            name = names[i] if names is not None else None
            raise ValueError(f"X contains NaN or inf pixel values in {describe_image(i, name)}.")


def check_unit_range(images: np.ndarray, offset: int, names=None) -> None:
    """For intensity='dtype': float images must lie in [0, 1]."""
    if images.dtype.kind != "f":
        return
    flat = images.reshape(len(images), -1)
    bad = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
    if bad.any():
        i = offset + _first_bad(bad)
        name = names[i] if names is not None else None
        raise ValueError(
            f"{describe_image(i, name)} has float pixels outside [0, 1], which "
            "intensity='dtype' does not rescale. Use intensity='auto', 'minmax' or a "
            "(low, high) window."
        )
