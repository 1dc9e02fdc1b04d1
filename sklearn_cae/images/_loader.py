"""Lazy decoding of files, PIL images and odd-sized arrays: a DataLoader whose worker
processes decode, check and scale one image each, and report failures by image."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._utils import error_reason
from ._arrays import check_finite, check_pixel_dtype, check_unit_range, describe_image
from ._files import read_image
from ._intensity import to_unit
from ._pillow import pil_to_array

if TYPE_CHECKING:
    from ._source import ImageSource

__all__ = ["NUM_WORKERS_ENV", "lazy_batches"]

#: Environment variable that sets the number of DataLoader workers decoding files
#: (0 decodes in the calling process, as Dask's daemonic workers must).
NUM_WORKERS_ENV = "SKLEARN_CAE_NUM_WORKERS"


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
                image = pil_to_array(item)
        except (FileNotFoundError, ImportError):
            raise
        except Exception as exc:  # corrupt data: Pillow and pydicom raise many types
            raise ValueError(f"Cannot decode {where}: {error_reason(exc)}") from None
        check_pixel_dtype(image.dtype, where)
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
            check_finite(image[np.newaxis], offset=i, names=self.names)
            if self.intensity == "dtype":
                check_unit_range(image[np.newaxis], offset=i, names=self.names)
            unit = to_unit(image[np.newaxis], self.intensity, self.image_size, "cpu")[0]
            # Grey among colour: replicated here, not in ``image``, so a grey image's raw
            # pixels (and cache key) are the same alone or in a mixed set.
            unit = unit.expand(self.n_channels, -1, -1)
        except Exception as exc:  # every failure is reported, naming its image
            kept = FileNotFoundError | ImportError | TypeError
            error = type(exc) if isinstance(exc, kept) else ValueError
            message = error_reason(exc)
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


def lazy_batches(
    source: ImageSource, batch_size: int, image_size, intensity, device, with_raw: bool
) -> Iterator[tuple[list | None, torch.Tensor]]:
    """Yield ``(raw, unit)`` batches of a lazy ``source``, decoded by a DataLoader.

    What :meth:`ImageSource.batches` yields for files, PIL images and lists of arrays;
    ``intensity`` is already checked.
    """
    dataset = _LazyImages(
        source.items, source.kind, source.names, image_size, intensity, with_raw, source.channels
    )
    n_batches = -(-len(source) // batch_size)
    workers = (
        (source.num_workers if source.num_workers is not None else _default_num_workers(n_batches))
        if source.kind == "files"
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
