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

Where it happens: ``_options`` (parameter checks, policy names), ``_source``
(``ImageSource``, ``as_image_source``), ``_arrays`` (pixel array checks), ``_files``
(``read_image``: which reader, path checks), ``_pillow`` and ``_dicom`` (the two readers),
``_loader`` (lazy decoding in DataLoader workers), ``_intensity`` (scaling, resizing,
normalization).
"""

from __future__ import annotations

from ._arrays import describe_image
from ._files import read_image
from ._intensity import normalize_batch, preprocess_batch
from ._loader import NUM_WORKERS_ENV
from ._options import CHANNEL_POLICIES, INTENSITY_POLICIES, check_image_size, check_intensity
from ._source import ImageSource, as_image_source

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
