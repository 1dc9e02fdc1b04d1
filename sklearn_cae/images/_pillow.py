"""Pillow images to arrays, with Pillow's quirks handled: EXIF orientation, grey palettes,
16-bit colour samples, the modes it cannot hand to numpy."""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["pil_channels", "pil_size", "pil_to_array", "read_pillow", "read_pillow_header"]

_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION = 0x0112
# Pillow keeps one byte of 16-bit colour samples; this raw mode keeps the other one.
_OTHER_BYTE = {
    ";16B": ";16L",
    ";16L": ";16B",
    ";16N": ";16B" if sys.byteorder == "little" else ";16L",
}


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


def pil_channels(img) -> int:
    """1 (grey) or 3 (colour), as :func:`pil_to_array` will decode ``img``."""
    if img.mode in _GRAY_MODES or (img.mode in ("P", "PA") and _is_grey_palette(img)):
        return 1
    return 3


def _orientation(img) -> int:
    """The EXIF orientation (1 = upright); unreadable EXIF counts as upright."""
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF must not make the pixels unreadable
        return 1


def pil_size(img) -> tuple[int, int]:
    """(H, W) as displayed: EXIF orientations 5-8 swap width and height."""
    swapped = _orientation(img) in (5, 6, 7, 8)
    return (img.width, img.height) if swapped else (img.height, img.width)


def pil_to_array(img) -> np.ndarray:
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
        return pil_to_array(img)


def read_pillow(path: str) -> np.ndarray:
    """Decode a file Pillow knows to (H, W, 1 or 3); 16-bit colour keeps both bytes."""
    from PIL import Image

    with Image.open(path) as img:
        rawmode = _wide_rawmode(img)
        array = pil_to_array(img)
    if rawmode is None:
        return array
    # Pillow keeps the high byte of each 16-bit sample; add the low byte back.
    low = _other_bytes(path, rawmode)
    return (array.astype(np.uint16) << 8) | low.astype(np.uint16)


def read_pillow_header(path: str) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) as :func:`read_pillow` will decode ``path``, without its pixels."""
    from PIL import Image

    with Image.open(path) as img:
        return pil_channels(img), pil_size(img)
