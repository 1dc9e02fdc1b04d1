"""The deployment side of an exported graph, with numpy and Pillow only (no torch).

The featurizer scales a ``uint8`` image to [0, 1] (divides by 255), then resizes it to
``image_size`` with antialiased bilinear interpolation (``torch.nn.functional.
interpolate(..., mode="bilinear", antialias=True)``, aspect ratio not kept; no resize
when the image already has that size). Pillow's ``BILINEAR`` filter on float images
is the same filter (torch's antialiased mode was written to match it), so
:func:`resize_images` resizes each channel as a float image with Pillow. A
``float32`` graph takes that resized image as it is (values on the 0..255 scale), the
featurizer's own input up to float rounding; a ``uint8`` graph takes it rounded back to
``uint8``, and that rounding (at most half a grey level) moves the features of small
images upscaled a lot (28 px MedMNIST to 128 px) by up to 15% of their range, and a
few labels with them (``benchmarks/results/export.md``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

__all__ = ["INPUT_DTYPES", "read_metadata", "resize_images"]

#: The input types an exported graph can take: ``float32``, the resized image before
#: any rounding (the default, as close to the pipeline as the graph gets), or ``uint8``.
INPUT_DTYPES = ("float32", "uint8")


def _as_size(image_size) -> tuple[int, int]:
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"image_size must be an int or a pair of ints, got {image_size!r}.")
    return int(size[0]), int(size[1])


def _channels_last_uint8(image, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"Image {index} is {array.dtype}; resize_images takes uint8 images. Scale it "
            "to 0..255 first (the featurizer's intensity policy decides how)."
        )
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        return array[..., :3] if array.shape[-1] == 4 else array  # alpha dropped
    if array.ndim == 2:
        return array[..., np.newaxis]
    raise ValueError(
        f"Image {index} has shape {array.shape}; expected (H, W), (H, W, 1), (H, W, 3) "
        "or (H, W, 4)."
    )


def check_input_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype, one of :data:`INPUT_DTYPES`."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or checked.name not in INPUT_DTYPES:
        raise ValueError(f"dtype must be one of {INPUT_DTYPES}, got {dtype!r}.")
    return checked


def _resize_channel(channel: np.ndarray, size: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    from PIL import Image

    if channel.shape == size:
        return channel
    resized = Image.fromarray(channel.astype(np.float32)).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    if dtype == np.uint8:
        return np.clip(np.rint(np.asarray(resized)), 0, 255)
    return np.asarray(resized)  # bilinear weights are >= 0: no value leaves 0..255


def resize_images(images: np.ndarray | Sequence, image_size, dtype="float32") -> np.ndarray:
    """Resize ``uint8`` images for an exported graph, as the featurizer resizes them.

    Parameters
    ----------
    images : ndarray of shape (n, H, W) or (n, H, W, C), or a sequence of images
        ``uint8`` images: arrays ``(H, W)`` or ``(H, W, C)`` with C in 1, 3, 4 (alpha
        dropped), or PIL images, of any sizes.
    image_size : int or (int, int)
        The featurizer's ``image_size`` (the graph's metadata holds it).
    dtype : {"float32", "uint8"}, default="float32"
        The graph's input type (its metadata's ``input_dtype``): ``float32`` keeps the
        resized values (0..255, not rounded), ``uint8`` rounds them.

    Returns
    -------
    ndarray of float32 or uint8
        ``(n, h, w)`` when every image is grey, else ``(n, h, w, 3)`` (grey images
        replicated to RGB, as the featurizer does): the graph's input.

    Examples
    --------
    >>> import numpy as np
    >>> resized = resize_images(np.zeros((2, 28, 28), np.uint8), 64)
    >>> resized.shape, resized.dtype
    ((2, 64, 64), dtype('float32'))
    """
    size = _as_size(image_size)
    dtype = check_input_dtype(dtype)
    arrays = [_channels_last_uint8(image, i) for i, image in enumerate(images)]
    if not arrays:
        raise ValueError("No images to resize.")
    colour = any(a.shape[-1] == 3 for a in arrays)
    out = np.empty((len(arrays), *size, 3 if colour else 1), dtype=dtype)
    for i, array in enumerate(arrays):
        if colour and array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        for c in range(array.shape[-1]):
            out[i, ..., c] = _resize_channel(array[..., c], size, dtype)
    return out if colour else out[..., 0]


def read_metadata(model) -> dict:
    """The metadata an exported graph carries (image size, channels, classes, ...).

    Parameters
    ----------
    model : str, os.PathLike or onnxruntime.InferenceSession
        The ``.onnx`` file or a session on it.

    Returns
    -------
    dict
        ``image_size`` ([h, w]), ``channels`` (1 or 3), ``input_dtype``,
        ``input_layout``, ``class_names`` (list or None), ``outputs``, ``sklearn_cae_version``,
        ``resize``, ``intensity``.
    """
    import onnxruntime

    session = model
    if not isinstance(model, onnxruntime.InferenceSession):
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return {
        key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()
    }
