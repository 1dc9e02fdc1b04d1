"""Image input: every accepted kind of ``X`` as one :class:`ImageSource`, read in batches.

:func:`as_image_source` validates ``X`` once, on the CPU, before any network runs, and
wraps it in an :class:`ImageSource`:

* in-memory arrays (``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)``, or flattened
  ``(n, H*W*C)`` with ``image_shape``) are sliced batch by batch; each batch is
  intensity-scaled and resized on the target device;
* file paths (PNG, JPEG, BMP, TIFF, ... through Pillow; DICOM through pydicom), PIL
  images and lists of arrays of different sizes are decoded lazily, one batch at a
  time, by a :class:`torch.utils.data.DataLoader` (with worker processes for files);
  each image is intensity-scaled and resized to ``image_size`` on the CPU, so images of
  different sizes can share a batch and no more than a few batches are ever decoded.

Intensity policy (the ``intensity`` parameter of the featurizers) maps pixel values to
[0, 1] per image, before resizing; nothing is ever wrapped, and values are clipped only
by an explicit ``(low, high)`` window:

``"auto"`` (default)
    uint8 / 255; bool as 0 / 1; a float image lying in [0, 1] as it is; every other
    image (uint16, int16 CT, other integers, floats outside [0, 1], DICOM after the
    modality rescale) is min-max scaled to its own range.
``"minmax"``
    Every image to its own [min, max] (a constant image becomes 0).
``"dtype"``
    Integers by the full range of their dtype (uint16: 0-65535, int16: -32768-32767),
    bool as 0 / 1; float images must lie in [0, 1].
``(low, high)``
    A fixed window, e.g. a CT window in Hounsfield units such as ``(-1000, 400)`` for
    lung; values below ``low`` / above ``high`` become 0 / 1.
``"dicom_window"``
    Each DICOM file's own window: its VOI LUT or window centre / width (the first,
    when it stores several), applied by ``pydicom.pixels.apply_voi_lut`` after the
    modality rescale, its output range mapped to [0, 1]. Images without one (other
    files, arrays, DICOM files without a window) as ``"auto"``.

Channels (the ``channels`` policy): grey images have 1 channel, colour images 3; a 4th
(alpha) channel is dropped. With ``"convert"`` (default) grey and colour images may be
mixed: when any image is colour, grey ones are replicated to 3 channels, which is
lossless -- the network replicates grey images anyway. ``"strict"`` refuses a mix.
"""

from __future__ import annotations

import numbers
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._param_validation import Interval, StrOptions, validate_params

__all__ = [
    "CHANNEL_POLICIES",
    "INTENSITY_POLICIES",
    "NUM_WORKERS_ENV",
    "ImageSource",
    "as_image_source",
    "check_image_size",
    "check_intensity",
    "describe_image",
    "normalize_batch",
    "preprocess_batch",
    "read_image",
]

INTENSITY_POLICIES = ("auto", "minmax", "dtype", "dicom_window")
CHANNEL_POLICIES = ("convert", "strict")
_CHANNELS = (1, 3, 4)  # 4 = RGBA, alpha dropped
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_DICOM_SUFFIXES = {".dcm", ".dicom"}
# A DICOM header is parsed reading at most this many bytes; values longer than
# _DICOM_DEFER_BYTES are skipped, not read, so real headers stay far below it.
_DICOM_HEADER_BYTES = 1 << 20
_DICOM_DEFER_BYTES = 4096
_EXIF_ORIENTATION = 0x0112
# Pillow keeps one byte of 16-bit colour samples; this raw mode keeps the other one.
_OTHER_BYTE = {
    ";16B": ";16L",
    ";16L": ";16B",
    ";16N": ";16B" if sys.byteorder == "little" else ";16L",
}
#: Environment variable that sets the number of DataLoader workers decoding files
#: (0 decodes in the calling process, as Dask's daemonic workers must).
NUM_WORKERS_ENV = "SKLEARN_CAE_NUM_WORKERS"


# ----------------------------------------------------------------------------- parameters
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


def _window(intensity) -> tuple[float, float] | None:
    """``(low, high)`` as floats when it is a window the float32 maths can represent."""
    if not (
        isinstance(intensity, Sequence)
        and not isinstance(intensity, str)
        and len(intensity) == 2
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


def _check_image_shape(image_shape) -> tuple[int, ...]:
    shape = tuple(image_shape) if isinstance(image_shape, Sequence) else (image_shape,)
    valid = (
        len(shape) in (2, 3)
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)
        and all(s > 0 or s == -1 for s in shape)
        and sum(s == -1 for s in shape) <= 1
        and (len(shape) == 2 or shape[2] in (*_CHANNELS, -1))
    )
    if not valid:
        raise ValueError(
            "image_shape must be (H, W) or (H, W, C) with positive entries (C in 1, 3, 4) "
            f"and at most one -1, got {image_shape!r}."
        )
    return tuple(int(s) for s in shape)


# ----------------------------------------------------------------------- intensity maths
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


def _to_unit(images: np.ndarray, intensity, image_size, device) -> torch.Tensor:
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
    """Grey to RGB, then the backbone's normalisation; returns channels_last memory."""
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
    """Turn a channels-last image batch into a normalised network input.

    Parameters
    ----------
    images : ndarray of shape (b, H, W, C)
        ``C`` in {1, 3}; any dtype the intensity policy accepts.
    image_size : (int, int)
        Output height and width; antialiased bilinear resizing (aspect ratio not kept).
    mean, std : sequence of 3 floats
        The backbone's input normalisation.
    intensity : {"auto", "minmax", "dtype", "dicom_window"} or (low, high), default="auto"
        See the module docstring (``"dicom_window"`` acts on files only: here "auto").
    device : torch.device or str
        Where the work happens.

    Returns
    -------
    torch.Tensor of shape (b, 3, *image_size), float32, channels_last memory format
    """
    unit = _to_unit(np.asarray(images), check_intensity(intensity), image_size, device)
    return normalize_batch(unit, mean, std)


# ---------------------------------------------------------------------- array validation
def describe_image(index: int, name: str | None) -> str:
    """How error messages name an image: ``image 3 ('scan.dcm')``, or ``image 3``."""
    return f"image {index}" + (f" ({str(name)!r})" if name else "")


def _reason(exc: BaseException) -> str:
    """An exception's message, or its type's name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _channels_last(a: np.ndarray, *, batch: bool, where: str) -> np.ndarray:
    """(n,) H, W[, C] in either channel order -> channels-last, C in {1, 3} (alpha dropped)."""
    lead = 1 if batch else 0
    if a.ndim == lead + 2:
        a = a[..., np.newaxis]
    elif a.ndim == lead + 3:
        if a.shape[-1] not in _CHANNELS:
            if a.shape[lead] not in _CHANNELS:
                layout = "(n, H, W, C) or (n, C, H, W)" if batch else "(H, W, C) or (C, H, W)"
                raise ValueError(
                    f"{where} has shape {a.shape}: expected {layout} with C in "
                    f"{list(_CHANNELS)} (4 = RGBA, alpha dropped)."
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


def _check_pixel_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind not in "biuf":
        raise TypeError(
            f"{where} has pixels of dtype {dtype}; expected bool, integer or float pixels."
        )


def _first_bad(flags: np.ndarray) -> int:
    return int(np.flatnonzero(flags)[0])


def _check_finite(images: np.ndarray, offset: int = 0, names=None) -> None:
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


def _check_unit_range(images: np.ndarray, offset: int, names=None) -> None:
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


# ------------------------------------------------------------------------ file decoding
def _has_dicom_suffix(path: str) -> bool:
    return Path(path).suffix.lower() in _DICOM_SUFFIXES


def _has_dicom_magic(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise ImportError(
            "Reading DICOM files needs pydicom: pip install 'sklearn-cae[dicom]'."
        ) from exc
    return pydicom


class _ReadBudget:
    """A binary file whose reads fail past ``limit`` bytes in all; seeks cost nothing.

    pydicom parses element by element, so a hostile file of millions of tiny elements
    (a zero-filled ``.dcm``: 8 bytes each) would otherwise be parsed in full, for
    minutes. Large values are skipped (``defer_size``) and so do not count.
    """

    def __init__(self, handle, limit: int):
        self._handle = handle
        self._left = limit
        self.name = handle.name

    def allow(self, extra: int) -> None:
        self._left += extra

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._left:
            raise ValueError("it is implausibly long for a DICOM image (corrupt, or not DICOM?)")
        self._left -= size
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def _dcmread(handle, budget: int, **kwargs):
    """Parse an open DICOM file within ``budget`` bytes read (big values deferred)."""
    head = handle.read(132)
    handle.seek(0)
    if head[128:132] != b"DICM":
        # No preamble: forced reading needs a data element (an even group such as
        # 0x0002 or 0x0008) at the start; a zero-filled file has group 0.
        group = int.from_bytes(head[:2], "little")
        if len(head) < 8 or group % 2 or not 0x0002 <= group <= 0x7FE0:
            raise ValueError("no DICM preamble and no DICOM data element at its start")
    reader = _ReadBudget(handle, budget)
    return _pydicom().dcmread(reader, force=True, defer_size=_DICOM_DEFER_BYTES, **kwargs), reader


def _dicom_info(ds) -> tuple[int, tuple[int, int], int, str]:
    """(samples per pixel, (rows, columns), frames, photometric interpretation)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    return samples, (rows, cols), frames, str(getattr(ds, "PhotometricInterpretation", ""))


def _open_dicom(path: str):
    _pydicom()  # a missing pydicom is an ImportError, not an unreadable file
    try:
        return open(path, "rb")
    except Exception as exc:
        raise _unreadable_dicom(path, exc) from None


def _unreadable_dicom(path: str, exc: Exception) -> ValueError:
    return ValueError(f"{path!r} is not a readable DICOM image ({_reason(exc)}).")


def _parse_dicom(path: str, handle, **kwargs):
    """Parse an open DICOM file within the header budget; check it holds one 2-D image.

    The checks come before any pixel is decoded: a hostile file stops here. Returns
    (dataset, reader, samples per pixel, (rows, columns), photometric interpretation).
    """
    try:
        ds, reader = _dcmread(handle, _DICOM_HEADER_BYTES, **kwargs)
        samples, size, frames, photometric = _dicom_info(ds)
    except Exception as exc:
        raise _unreadable_dicom(path, exc) from None
    if frames > 1:
        raise ValueError(
            f"{path!r} is a multi-frame DICOM ({frames} frames); pass 2-D images, "
            "e.g. one file per slice."
        )
    if samples not in (1, 3):
        raise ValueError(f"{path!r} has {samples} samples per pixel; expected 1 or 3.")
    return ds, reader, samples, size, photometric


def _dicom_header(path: str):
    with _open_dicom(path) as handle:
        _, _, samples, size, photometric = _parse_dicom(path, handle, stop_before_pixels=True)
    # PALETTE COLOR stores one index per pixel; its colour lookup table makes it RGB.
    return (3 if photometric == "PALETTE COLOR" else samples), size


def _voi_kind(ds) -> str | None:
    """Which VOI transform ``apply_voi_lut`` applies to ``ds``: "lut", "window" or None."""
    sequence = ds.get("VOILUTSequence")
    if sequence and None not in (
        sequence[0].get("LUTDescriptor", None),
        sequence[0].get("LUTData", None),
    ):
        return "lut"  # apply_voi_lut prefers the LUT when both are present
    if None not in (ds.get("WindowCenter", None), ds.get("WindowWidth", None)):
        return "window"
    return None


def _apply_window(values: np.ndarray, ds, kind: str, photometric: str) -> np.ndarray:
    """The file's VOI LUT / window applied by pydicom, its output range mapped to [0, 1]."""
    try:
        from pydicom.pixels import apply_voi_lut, apply_windowing
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_voi_lut, apply_windowing

    if kind == "lut":
        # A LUT's output range is set by its bits per entry (PS3.3 C.11.2.1.1).
        low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # LUTs index whole numbers; floats warn
    else:
        # pydicom maps everything below the window to its lowest output, everything
        # above to its highest: the output range depends on the header (bits, rescale).
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)
    out = apply_voi_lut(values, ds).astype(np.float64)
    span = high - low
    unit = np.clip((out - low) / span, 0.0, 1.0) if span else np.zeros_like(out)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit  # low values are shown bright: flip so that bright is high
    return unit.astype(np.float32)


def _read_dicom(path: str, window: bool = False) -> np.ndarray:
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut

    with _open_dicom(path) as handle:
        ds, reader, samples, size, photometric = _parse_dicom(path, handle)
        expected = size[0] * size[1] * samples * -(-int(getattr(ds, "BitsAllocated", 16)) // 8)
        reader.allow(2 * expected + _DICOM_HEADER_BYTES)  # compressed data may be a bit larger
        pixels = ds.pixel_array
    if pixels.shape[:2] != size or pixels.ndim != (2 if samples == 1 else 3):
        raise ValueError(
            f"its pixel data has shape {pixels.shape}, but its header says {size[0]}x{size[1]} "
            f"with {samples} sample(s) per pixel and one frame"
        )
    if photometric == "PALETTE COLOR":
        values = apply_color_lut(pixels, ds)
    else:
        # Rescale slope / intercept (CT: stored values -> Hounsfield units).
        values = apply_modality_lut(pixels, ds)
        kind = _voi_kind(ds) if window and photometric.startswith("MONOCHROME") else None
        if kind is not None:
            return _apply_window(values, ds, kind, photometric)[..., np.newaxis]
    if values.dtype.kind == "f":
        values = values.astype(np.float32)
    if photometric == "MONOCHROME1":
        # MONOCHROME1 shows low values bright; flip so that bright is high everywhere.
        values = (values.max() - values.astype(np.float64) + values.min()).astype(np.float32)
    return values[..., np.newaxis] if values.ndim == 2 else values


def _is_grey_palette(img) -> bool:
    """Whether a palette image ("P", "PA") uses grey colours only (e.g. a grey GIF)."""
    palette = getattr(img, "palette", None)
    if palette is None or palette.mode not in ("RGB", "RGBA"):
        return False
    colours = np.frombuffer(bytes(palette.palette), dtype=np.uint8)
    colours = colours[: len(colours) // len(palette.mode) * len(palette.mode)]
    colours = colours.reshape(-1, len(palette.mode))
    return bool(len(colours)) and bool(
        (colours[:, 0] == colours[:, 1]).all() and (colours[:, 1] == colours[:, 2]).all()
    )


def _pil_channels(img) -> int:
    """1 (grey) or 3 (colour), as :func:`_pil_to_array` will decode ``img``."""
    if img.mode in _GRAY_MODES or (img.mode in ("P", "PA") and _is_grey_palette(img)):
        return 1
    return 3


def _orientation(img) -> int:
    """The EXIF orientation (1 = upright); unreadable EXIF counts as upright."""
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF must not make the pixels unreadable
        return 1


def _pil_size(img) -> tuple[int, int]:
    """(H, W) as displayed: EXIF orientations 5-8 swap width and height."""
    swapped = _orientation(img) in (5, 6, 7, 8)
    return (img.width, img.height) if swapped else (img.height, img.width)


def _pil_to_array(img) -> np.ndarray:
    """A PIL image, upright as viewers show it, as a channels-last array of 1 or 3 channels."""
    from PIL import ImageOps

    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)  # camera and phone photos store rotated pixels
    mode = img.mode
    if mode in ("1", "LA", "La") or (mode in ("P", "PA") and _is_grey_palette(img)):
        img = img.convert("L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode not in _GRAY_MODES and mode not in ("RGB", "RGBA", "RGBa"):
        img = img.convert("RGB")  # CMYK, YCbCr, HSV, LAB, ...
    array = np.asarray(img)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    return array[..., :3].astype(array.dtype.newbyteorder("="), copy=False)


def _wide_rawmode(img) -> str | None:
    """The raw mode of a 16-bit-per-sample colour file, which Pillow cuts to 8 bits."""
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return None
    rawmodes = {_tile_rawmode(tile) for tile in img.tile}
    rawmode = rawmodes.pop() if len(rawmodes) == 1 else None
    if isinstance(rawmode, str) and rawmode.startswith("RGB") and rawmode[-4:] in _OTHER_BYTE:
        return rawmode
    return None


def _tile_rawmode(tile):
    return tile.args if isinstance(tile.args, str) else (tile.args or (None,))[0]


def _other_bytes(path: str, rawmode: str) -> np.ndarray:
    """Decode again with the opposite byte order: Pillow then keeps the low bytes."""
    from PIL import Image

    swapped = rawmode[:-4] + _OTHER_BYTE[rawmode[-4:]]
    with Image.open(path) as img:
        img.tile = [
            tile._replace(args=swapped if isinstance(tile.args, str) else (swapped, *tile.args[1:]))
            for tile in img.tile
        ]
        return _pil_to_array(img)


def read_image(path: str | os.PathLike, *, window: bool = False) -> np.ndarray:
    """Decode one image file to a channels-last array of its own dtype.

    Pillow reads PNG, JPEG, BMP, TIFF (8 and 16-bit, grey and colour) and the other
    formats it knows (first frame only), turned upright by their EXIF orientation;
    palette images with grey colours only (e.g. grey GIFs) are grey. DICOM files
    (``.dcm``/``.dicom`` or the ``DICM`` magic) are read with pydicom, applying the
    modality rescale (slope / intercept) or, for ``PALETTE COLOR``, the colour lookup
    table; MONOCHROME1 images are flipped so that bright is high.

    Parameters
    ----------
    path : str or path-like
    window : bool, default=False
        For a grey DICOM file that stores a VOI LUT or a window (centre / width), apply
        it after the modality rescale (``pydicom.pixels.apply_voi_lut``, the first one
        when there are several) and return float32 in [0, 1]: the LUT's or window's
        output range mapped to [0, 1]. Other files are decoded as without it. This is
        what ``intensity="dicom_window"`` does.

    Returns
    -------
    ndarray of shape (H, W, 1) or (H, W, 3)
        uint8, uint16, int32 or float32 for Pillow; the rescaled (or windowed) values
        for DICOM.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not _has_dicom_suffix(path):
        try:
            with Image.open(path) as img:
                rawmode = _wide_rawmode(img)
                array = _pil_to_array(img)
        except UnidentifiedImageError:
            if not _has_dicom_magic(path):
                raise
        else:
            if rawmode is None:
                return array
            # Pillow keeps the high byte of each 16-bit sample; add the low byte back.
            low = _other_bytes(path, rawmode)
            return (array.astype(np.uint16) << 8) | low.astype(np.uint16)
    return _read_dicom(path, window)


def _header(path: str) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from the file header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    if _has_dicom_suffix(path):
        return _dicom_header(path)
    try:
        with Image.open(path) as img:
            return _pil_channels(img), _pil_size(img)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if _has_dicom_magic(path):
            return _dicom_header(path)
        raise ValueError(
            f"{path!r} is not an image file Pillow can read ({_reason(exc)})."
        ) from None


# ------------------------------------------------------------------------------ sources
@dataclass
class _Failure:
    """An error met in a DataLoader worker, re-raised cleanly in the main process."""

    error: type
    message: str
    index: int
    name: str | None

    def exception(self) -> BaseException:
        """The error to raise; ``image_index`` / ``image_path`` say which image failed."""
        exc = self.error(self.message)
        exc.image_index, exc.image_path = self.index, self.name
        return exc


class _LazyImages(torch.utils.data.Dataset):
    """Decode, check and scale one item per ``__getitem__`` (runs in worker processes)."""

    def __init__(self, items, kind, names, image_size, intensity, with_raw, channels):
        self.items, self.kind, self.names = items, kind, names
        self.image_size, self.intensity, self.with_raw = image_size, intensity, with_raw
        self.channels = channels  # per image, from its header
        self.n_channels = max(channels)  # grey is replicated to this in a mixed source

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, i: int, where: str) -> np.ndarray:
        item = self.items[i]
        if self.kind == "arrays":
            return item
        try:
            if self.kind == "files":
                if not os.path.isfile(item):
                    raise FileNotFoundError(f"No such image file: {where}.")
                image = read_image(item, window=self.intensity == "dicom_window")
            else:
                image = _pil_to_array(item)
        except (FileNotFoundError, ImportError):
            raise
        except Exception as exc:  # corrupt data: Pillow and pydicom raise many types
            raise ValueError(f"Cannot decode {where}: {_reason(exc)}") from None
        _check_pixel_dtype(image.dtype, where)
        expected = self.channels[i]
        if image.ndim != 3 or image.shape[-1] != expected or 0 in image.shape[:2]:
            # The header said otherwise: the file changed after it was checked.
            raise ValueError(
                f"{where} decoded to shape {image.shape}, but a {expected}-channel "
                "non-empty image was expected from its header (did the file change?)."
            )
        return image

    def __getitem__(self, i: int):
        name = self.names[i] if self.names else None
        where = describe_image(i, name)
        try:
            image = self._load(i, where)
            _check_finite(image[np.newaxis], offset=i, names=self.names)
            if self.intensity == "dtype":
                _check_unit_range(image[np.newaxis], offset=i, names=self.names)
            unit = _to_unit(image[np.newaxis], self.intensity, self.image_size, "cpu")[0]
            # Grey among colour: replicated here, not in ``image``, so a grey image's raw
            # pixels (and cache key) are the same alone or in a mixed set.
            unit = unit.expand(self.n_channels, -1, -1)
        except Exception as exc:  # every failure is reported, naming its image
            kept = FileNotFoundError | ImportError | TypeError
            error = type(exc) if isinstance(exc, kept) else ValueError
            message = _reason(exc)
            if where not in message:  # torch and library errors do not know the file
                message = f"Cannot decode {where}: {message}"
            return _Failure(error, message, i, name)
        return unit, (image if self.with_raw else None)


def _collate(samples):
    for sample in samples:
        if isinstance(sample, _Failure):
            return sample
    units, raws = zip(*samples, strict=True)
    return torch.stack(units), list(raws)


def _worker_init(_) -> None:
    torch.set_num_threads(1)  # one image at a time per worker: no thread oversubscription


def _default_num_workers(n_batches: int) -> int:
    env = os.environ.get(NUM_WORKERS_ENV)
    if env is not None and env.strip():
        if not env.strip().isdigit():
            raise ValueError(f"${NUM_WORKERS_ENV} must be a non-negative int, got {env!r}.")
        return int(env)
    if n_batches <= 1:
        return 0  # starting workers costs more than decoding one batch
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cpus or 1) - 1, n_batches))


class ImageSource:
    """Validated images, read batch by batch; what the featurizers work on.

    Build one with :func:`as_image_source` (the featurizers do it for you). Passing an
    ``ImageSource`` as ``X`` is the way to set ``num_workers`` for file decoding.

    Attributes
    ----------
    kind : {"array", "arrays", "files", "pil"}
        One array, a list of arrays of different shapes or dtypes, file paths, PIL images.
    n_channels : int
        Channels of the images it yields: 1 when all are grey, else 3 (grey ones
        replicated; alpha dropped).
    channels : list of int
        Each image's own channel count (1 or 3), before grey is replicated.
    shape : tuple
        ``(n, H, W, C)``; ``H`` and ``W`` are None when the images differ in size.
    names : list of str or None
        The file paths (for messages), else None.
    num_workers : int or None
        DataLoader worker processes for files; None picks ``$SKLEARN_CAE_NUM_WORKERS``
        or up to 4 (one less than the CPUs), 0 when all fits in one batch.
    """

    def __init__(self, kind, items, n_channels, shape, names=None, num_workers=None, channels=None):
        self.kind = kind
        self.items = items
        self.n_channels = n_channels
        self.channels = list(channels) if channels is not None else [n_channels] * shape[0]
        self.shape = shape
        self.names = names
        self.num_workers = num_workers

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageSource(kind={self.kind!r}, shape={self.shape})"

    def batches(
        self,
        batch_size: int,
        *,
        image_size: tuple[int, int],
        intensity="auto",
        device: torch.device | str = "cpu",
        with_raw: bool = False,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """Yield ``(raw, unit)`` for consecutive batches of at most ``batch_size`` images.

        Parameters
        ----------
        batch_size : int
        image_size : (int, int)
        intensity : {"auto", "minmax", "dtype"} or (low, high)
        device : torch.device or str
            Where ``unit`` is returned (and, for arrays, where scaling happens).
        with_raw : bool, default=False
            Also return the decoded images (costs memory and, for files, transfer
            from the worker processes).

        Yields
        ------
        raw : ndarray of shape (b, H, W, C), list of b (H_i, W_i, C_i) arrays, or None
            The images before intensity scaling and resizing, in their own dtype and
            with their own channels (alpha dropped; DICOM rescaled, or windowed with
            ``intensity="dicom_window"``); None unless ``with_raw``.
        unit : torch.Tensor of shape (b, n_channels, *image_size), float32 in [0, 1], on
            ``device``
        """
        intensity = check_intensity(intensity)
        if self.kind == "array":
            yield from self._array_batches(batch_size, image_size, intensity, device, with_raw)
            return
        dataset = _LazyImages(
            self.items, self.kind, self.names, image_size, intensity, with_raw, self.channels
        )
        n_batches = -(-len(self) // batch_size)
        workers = (
            (self.num_workers if self.num_workers is not None else _default_num_workers(n_batches))
            if self.kind == "files"
            else 0
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=torch.device(device).type == "cuda",
            worker_init_fn=_worker_init if workers else None,
        )
        for batch in loader:
            if isinstance(batch, _Failure):
                raise batch.exception()
            units, raws = batch
            yield (raws if with_raw else None), units.to(device, non_blocking=True)

    def _array_batches(self, batch_size, image_size, intensity, device, with_raw):
        images = self.items
        for start in range(0, len(images), batch_size):
            raw = images[start : start + batch_size]
            if intensity == "dtype":
                _check_unit_range(raw, start)
            yield (raw if with_raw else None), _to_unit(raw, intensity, image_size, device)


# ------------------------------------------------------------------- building a source
def _item_kind(item) -> str:
    from PIL import Image

    if isinstance(item, str | os.PathLike):
        return "files"
    if isinstance(item, Image.Image):
        return "pil"
    if isinstance(item, np.ndarray | torch.Tensor):
        return "arrays"
    if isinstance(item, numbers.Number | list | tuple):
        return "numbers"
    return type(item).__name__


_KIND_WORDS = {
    "files": "a file path",
    "pil": "a PIL image",
    "arrays": "an array",
    "numbers": "a number or nested list",
}


def _array_source(X: np.ndarray, image_shape) -> ImageSource:
    _check_pixel_dtype(X.dtype, "X")
    if X.ndim <= 1:
        raise ValueError(
            f"X is {X.ndim}-D (shape {X.shape}); expected a batch of images (n, H, W[, C]), "
            "flattened rows with image_shape, or a list of file paths. For a single "
            "image, pass X[np.newaxis]."
        )
    if len(X) == 0:
        raise ValueError(f"X is empty (shape {X.shape}): at least one image is needed.")
    if X.ndim == 2:
        if image_shape is None:
            raise ValueError(
                f"X is 2-D with shape {X.shape}: pass images as an array (n, H, W) or "
                "(n, H, W, C), or set image_shape=(H, W) or (H, W, C) to unflatten rows."
            )
        shape = _check_image_shape(image_shape)
        try:
            X = X.reshape((X.shape[0], *shape))
        except ValueError:
            raise ValueError(
                f"Rows of X have {X.shape[1]} values, which cannot be reshaped to "
                f"image_shape={shape} ({int(np.prod([s for s in shape if s > 0]))} values "
                "per image, or a multiple of it with -1)."
            ) from None
    images = _channels_last(X, batch=True, where="X")
    _check_finite(images)
    return ImageSource("array", images, images.shape[-1], images.shape)


def _list_of_arrays(items: list, channels: str) -> ImageSource:
    arrays = []
    for i, item in enumerate(items):
        a = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        where = f"image {i}"
        _check_pixel_dtype(a.dtype, where)
        a = _channels_last(a, batch=False, where=where)
        _check_finite(a[np.newaxis], offset=i)
        arrays.append(a)
    shapes = {a.shape for a in arrays}
    dtypes = {a.dtype for a in arrays}
    if len(shapes) == 1 and len(dtypes) == 1:  # one array: batched on the device
        stacked = np.stack(arrays)
        return ImageSource("array", stacked, stacked.shape[-1], stacked.shape)
    return _lazy_source(
        "arrays", arrays, [a.shape[-1] for a in arrays], [a.shape[:2] for a in arrays], channels
    )


def _common_channels(channels: list[int], names, policy: str) -> int:
    """The channel count a source yields: 3 if any image is colour; a mix can be refused."""
    odd = [i for i, c in enumerate(channels) if c != channels[0]]
    if odd and policy == "strict":
        i = odd[0]
        raise ValueError(
            f"Images have mixed channel counts: {describe_image(0, names and names[0])} has "
            f"{channels[0]}, {describe_image(i, names and names[i])} has {channels[i]} "
            "(after dropping alpha), and channels='strict'. Pass all grey or all colour "
            "images, or channels='convert' to replicate grey images to RGB."
        )
    return max(channels)


def _lazy_source(kind, items, channels, sizes, policy, names=None, num_workers=None) -> ImageSource:
    n_channels = _common_channels(channels, names, policy)
    same = len(set(sizes)) == 1
    shape = (len(items), *(sizes[0] if same else (None, None)), n_channels)
    return ImageSource(
        kind, items, n_channels, shape, names=names, num_workers=num_workers, channels=channels
    )


def _probe(index: int, path: str) -> tuple[int, tuple[int, int]]:
    """Check one path and read its header: (channels, (H, W))."""
    where = describe_image(index, path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No such image file: {where}.") from None
    except (OSError, ValueError) as exc:  # e.g. too long, a file as a folder, a NUL byte
        raise ValueError(f"Cannot read {where}: {_reason(exc)}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(
            f"{where} is a directory, not an image file. For a folder of class "
            "sub-folders, use sklearn_cae.datasets.load_image_folder."
        )
    if not stat.S_ISREG(mode):
        raise ValueError(f"{where} is not a regular file.")
    try:
        channels, size = _header(path)
    except ImportError:
        raise
    except Exception as exc:  # permissions, I/O errors, whatever a hostile header raises
        message = _reason(exc)
        if repr(path) not in message:  # Pillow's and the OS's messages lack the path
            message = f"cannot read {path!r}: {message}"
        raise ValueError(f"Image {index}: {message}") from None
    if 0 in size:
        raise ValueError(f"{where} is zero-sized ({size[0]}x{size[1]}).")
    return channels, size


def _file_source(paths: list, num_workers, channels: str) -> ImageSource:
    names = [os.fspath(p) for p in paths]
    # Headers only (no pixels); threads hide file-system latency for long lists. map()
    # yields in order, so the first bad path in the list is the one reported.
    with ThreadPoolExecutor(max_workers=8 if len(names) > 64 else 1) as pool:
        headers = list(pool.map(_probe, range(len(names)), names))
    counts = [c for c, _ in headers]
    sizes = [size for _, size in headers]
    return _lazy_source(
        "files", names, counts, sizes, channels, names=names, num_workers=num_workers
    )


def _pil_source(images: list, channels: str) -> ImageSource:
    counts = [_pil_channels(img) for img in images]
    sizes = [_pil_size(img) for img in images]
    for i, size in enumerate(sizes):
        if 0 in size:
            raise ValueError(f"image {i} is zero-sized ({size[0]}x{size[1]}).")
    return _lazy_source("pil", list(images), counts, sizes, channels)


@validate_params(
    {
        # X takes many kinds; the checks below name the problem and the image.
        "X": "no_validation",
        "image_shape": ["array-like", None],
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left"), None],
        "channels": [StrOptions(set(CHANNEL_POLICIES))],
    },
    prefer_skip_nested_validation=True,
)
def as_image_source(
    X, *, image_shape=None, num_workers: int | None = None, channels: str = "convert"
) -> ImageSource:
    """Validate any accepted ``X`` and wrap it as an :class:`ImageSource`.

    Parameters
    ----------
    X : array-like, list of paths, list of PIL images, list of arrays, or ImageSource
        * ndarray (or torch tensor, or nested lists) ``(n, H, W)``, ``(n, H, W, C)`` or
          unambiguous ``(n, C, H, W)``, ``C`` in {1, 3, 4}: channels-last wins when the
          last axis could be channels; bool, integer or float pixels, all finite;
        * ``(n, H*W*C)`` with ``image_shape``;
        * a list / 1-D array / one-column 2-D array of ``str`` or ``pathlib.Path`` file
          paths (decoded lazily; see :func:`read_image`);
        * a list of PIL images, or of arrays ``(H, W[, C])`` (sizes and dtypes may differ).
        Images of different sizes are fine in the lazy kinds, and so are grey and colour
        images together (see ``channels``).
    image_shape : tuple of int, default=None
        ``(H, W)`` or ``(H, W, C)`` used to unflatten 2-D numeric ``X``; one entry may
        be -1. Ignored for other inputs.
    num_workers : int or None, default=None
        DataLoader workers for decoding files; see :class:`ImageSource`.
    channels : {"convert", "strict"}, default="convert"
        Grey and colour images in one ``X`` (files, PIL images or a list of arrays):
        ``"convert"`` replicates the grey ones to RGB when any image is colour (RGBA,
        palette, CMYK, ... are RGB already, alpha dropped), as torchvision's
        ``ImageFolder`` does; ``"strict"`` refuses the mix. An ``ImageSource`` passed as
        ``X`` is returned as it is.

    Returns
    -------
    ImageSource

    Raises
    ------
    ValueError, TypeError, FileNotFoundError
        With a message naming the problem and, where it applies, the image index or path.
    """
    from PIL import Image

    if isinstance(X, ImageSource):
        return X
    if isinstance(num_workers, bool):  # Interval(Integral, ...) would take True for 1
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}.")
    if isinstance(X, str | os.PathLike):
        raise TypeError(
            f"X is a single path ({os.fspath(X)!r}); pass a list of image paths, or use "
            "sklearn_cae.datasets.load_image_folder for a folder."
        )
    if isinstance(X, Image.Image):
        raise TypeError("X is a single PIL image; pass a list of images.")
    if X is None or isinstance(X, dict | set | numbers.Number):
        raise TypeError(f"X must be images (an array or a list), got {type(X).__name__}.")
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if hasattr(X, "dtypes") and hasattr(X, "to_numpy"):  # pandas
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS":
        if X.ndim == 2 and X.shape[1] == 1:  # a column of paths (e.g. from a DataFrame)
            X = X[:, 0]
        if X.ndim != 1 and X.dtype.kind in "US":
            raise ValueError(f"X is a {X.ndim}-D array of strings; pass a 1-D list of paths.")
        if X.ndim == 1 or X.dtype.kind in "US":
            X = list(X)
    if isinstance(X, list | tuple):
        if len(X) == 0:
            raise ValueError("X is empty (an empty list): at least one image is needed.")
        kinds = [_item_kind(item) for item in X]
        odd = [i for i, k in enumerate(kinds) if k != kinds[0]]
        if odd:
            i = odd[0]
            raise TypeError(
                f"X mixes kinds of items: item 0 is {_KIND_WORDS.get(kinds[0], kinds[0])}, "
                f"item {i} is {_KIND_WORDS.get(kinds[i], type(X[i]).__name__)}. Pass one "
                "kind: file paths, PIL images or arrays."
            )
        kind = kinds[0]
        if kind == "files":
            return _file_source(list(X), num_workers, channels)
        if kind == "pil":
            return _pil_source(list(X), channels)
        if kind == "arrays":
            return _list_of_arrays(list(X), channels)
        if kind != "numbers":
            raise TypeError(
                f"X holds items of type {kind}; expected file paths, PIL images or arrays."
            )
    try:
        X = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"X cannot be read as an array of images ({exc}).") from None
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (ValueError, TypeError):
            raise TypeError(
                f"X is an object array of shape {X.shape} whose entries are not numbers."
            ) from None
    return _array_source(X, image_shape)
