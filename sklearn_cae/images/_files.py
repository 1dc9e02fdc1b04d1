"""Image files: which reader decodes a file (Pillow, or pydicom by suffix or magic), its
header, and the checks of a path before any pixel is read."""

from __future__ import annotations

import os
import stat

import numpy as np

from .._utils import error_reason
from ._arrays import describe_image
from ._dicom import dicom_header, has_dicom_magic, has_dicom_suffix, read_dicom
from ._pillow import read_pillow, read_pillow_header

__all__ = ["probe_file", "read_image"]


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
    from PIL import UnidentifiedImageError

    path = os.fspath(path)
    if not has_dicom_suffix(path):
        try:
            return read_pillow(path)
        except UnidentifiedImageError:
            if not has_dicom_magic(path):
                raise
    return read_dicom(path, window)


def _read_header(path: str) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from the file header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    if has_dicom_suffix(path):
        return dicom_header(path)
    try:
        return read_pillow_header(path)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if has_dicom_magic(path):
            return dicom_header(path)
        raise ValueError(
            f"{path!r} is not an image file Pillow can read ({error_reason(exc)})."
        ) from None


def probe_file(index: int, path: str) -> tuple[int, tuple[int, int]]:
    """Check one path and read its header: (channels, (H, W))."""
    where = describe_image(index, path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No such image file: {where}.") from None
    except (OSError, ValueError) as exc:  # e.g. too long, a file as a folder, a NUL byte
        raise ValueError(f"Cannot read {where}: {error_reason(exc)}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(
            f"{where} is a directory, not an image file. For a folder of class "
            "sub-folders, use sklearn_cae.datasets.load_image_folder."
        )
    if not stat.S_ISREG(mode):
        raise ValueError(f"{where} is not a regular file.")
    try:
        channels, size = _read_header(path)
    except ImportError:
        raise
    except Exception as exc:  # permissions, I/O errors, whatever a hostile header raises
        message = error_reason(exc)
        if repr(path) not in message:  # Pillow's and the OS's messages lack the path
            message = f"cannot read {path!r}: {message}"
        raise ValueError(f"Image {index}: {message}") from None
    if 0 in size:
        raise ValueError(f"{where} is zero-sized ({size[0]}x{size[1]}).")
    return channels, size
