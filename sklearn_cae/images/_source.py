"""ImageSource, the validated images the featurizers read batch by batch, and
as_image_source, which turns every accepted kind of ``X`` into one."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .._param_validation import StrOptions, strict_int, validate_params
from ._arrays import (
    channels_last,
    check_finite,
    check_pixel_dtype,
    check_unit_range,
    describe_image,
)
from ._files import probe_file
from ._intensity import to_unit
from ._loader import lazy_batches
from ._options import CHANNEL_POLICIES, check_image_shape, check_intensity
from ._pillow import pil_channels, pil_size

__all__ = ["ImageSource", "as_image_source"]


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

    def take(self, rows: Sequence[int]) -> ImageSource:
        """The images at positions ``rows``, in that order, as an ``ImageSource``.

        Nothing is read. The subset keeps this source's ``kind``, ``n_channels`` and
        ``num_workers``, and each image's own ``channels``.

        Parameters
        ----------
        rows : sequence of int
            Positions in this source.

        Returns
        -------
        ImageSource
        """
        rows = list(rows)
        items = (
            self.items[rows]
            if isinstance(self.items, np.ndarray)
            else [self.items[i] for i in rows]
        )
        return ImageSource(
            self.kind,
            items,
            self.n_channels,
            (len(rows), *self.shape[1:]),
            names=[self.names[i] for i in rows] if self.names else None,
            num_workers=self.num_workers,
            channels=[self.channels[i] for i in rows],
        )

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
        intensity : {"auto", "minmax", "dtype", "dicom_window"} or (low, high)
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
        else:
            yield from lazy_batches(self, batch_size, image_size, intensity, device, with_raw)

    def _array_batches(self, batch_size, image_size, intensity, device, with_raw):
        images = self.items
        for start in range(0, len(images), batch_size):
            raw = images[start : start + batch_size]
            if intensity == "dtype":
                check_unit_range(raw, start)
            yield (raw if with_raw else None), to_unit(raw, intensity, image_size, device)


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
    check_pixel_dtype(X.dtype, "X")
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
        shape = check_image_shape(image_shape)
        try:
            X = X.reshape((X.shape[0], *shape))
        except ValueError:
            raise ValueError(
                f"Rows of X have {X.shape[1]} values, which cannot be reshaped to "
                f"image_shape={shape} ({int(np.prod([s for s in shape if s > 0]))} values "
                "per image, or a multiple of it with -1)."
            ) from None
    images = channels_last(X, batch=True, where="X")
    check_finite(images)
    return ImageSource("array", images, images.shape[-1], images.shape)


def _list_of_arrays(items: list, channels: str) -> ImageSource:
    arrays = []
    for i, item in enumerate(items):
        a = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        where = f"image {i}"
        check_pixel_dtype(a.dtype, where)
        a = channels_last(a, batch=False, where=where)
        check_finite(a[np.newaxis], offset=i)
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


def _file_source(paths: list, num_workers, channels: str) -> ImageSource:
    names = [os.fspath(p) for p in paths]
    # Headers only (no pixels); threads hide file-system latency for long lists. map()
    # yields in order, so the first bad path in the list is the one reported.
    with ThreadPoolExecutor(max_workers=8 if len(names) > 64 else 1) as pool:
        headers = list(pool.map(probe_file, range(len(names)), names))
    counts = [c for c, _ in headers]
    sizes = [size for _, size in headers]
    return _lazy_source(
        "files", names, counts, sizes, channels, names=names, num_workers=num_workers
    )


def _pil_source(images: list, channels: str) -> ImageSource:
    counts = [pil_channels(img) for img in images]
    sizes = [pil_size(img) for img in images]
    for i, size in enumerate(sizes):
        if 0 in size:
            raise ValueError(f"image {i} is zero-sized ({size[0]}x{size[1]}).")
    return _lazy_source("pil", list(images), counts, sizes, channels)


@validate_params(
    {
        # X takes many kinds; the checks below name the problem and the image.
        "X": "no_validation",
        "image_shape": ["array-like", None],
        "num_workers": [strict_int(0, None, closed="left"), None],
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
