"""DICOM files through pydicom: a header parse within a read budget (hostile files stop
early), the modality rescale, colour lookup tables and the stored VOI window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._utils import error_reason

__all__ = ["dicom_header", "has_dicom_magic", "has_dicom_suffix", "read_dicom"]

_DICOM_SUFFIXES = {".dcm", ".dicom"}
# A DICOM header is parsed reading at most this many bytes; values longer than
# _DICOM_DEFER_BYTES are skipped, not read, so real headers stay far below it.
_DICOM_HEADER_BYTES = 1 << 20
_DICOM_DEFER_BYTES = 4096


def has_dicom_suffix(path: str) -> bool:
    """Whether ``path`` ends in ``.dcm`` or ``.dicom`` (any case)."""
    return Path(path).suffix.lower() in _DICOM_SUFFIXES


def has_dicom_magic(path: str) -> bool:
    """Whether the file holds ``DICM`` after the 128-byte preamble."""
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
    return ValueError(f"{path!r} is not a readable DICOM image ({error_reason(exc)}).")


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


def dicom_header(path: str) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from a DICOM header, without decoding pixels."""
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


def read_dicom(path: str, window: bool = False) -> np.ndarray:
    """Decode a DICOM file to (H, W, C): rescaled, or windowed with ``window``."""
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
