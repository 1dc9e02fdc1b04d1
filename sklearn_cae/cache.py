"""On-disk cache of backbone feature maps, keyed per image.

The frozen backbone's forward pass dominates the cost of both featurizers, and it is the
same for every CV fold and grid point that shares a backbone, layer(s), image size and
preprocessing. :class:`FeatureCache` stores each image's tapped maps once, so that
different row subsets (folds) and different CAE settings reuse each other's work.

Layout::

    <location>/sklearn_cae_features/<model digest>/<key[:2]>/<key>.f16   one entry per image
    <location>/sklearn_cae_features/tmp/                                 unlinked training maps

* The model digest hashes everything that changes the maps: the truncated backbone's
  architecture and weights, the tapped layers, ``image_size``, ``intensity``, the input
  normalisation, the numeric precision (CUDA autocast or not) and this package's version.
  A changed backbone therefore looks in another folder and never reads stale entries.
* An image's key hashes its content (bytes, shape and dtype), not its row number.
* An entry is the float16 maps of all tapped layers, after a header with a CRC32. It is
  written to a temporary file and moved into place with :func:`os.replace`, which is
  atomic: concurrent writers (``GridSearchCV(n_jobs>1)``) or a killed process never
  leave a partial entry under its final name. An entry that fails its size or checksum
  test is treated as missing and rewritten.
* The cache only saves work: an entry that cannot be written (full disk, file-size
  limit, read-only folder) is skipped with a :class:`CacheWriteWarning`, and the CAE's
  training maps go to the system's temporary folder, or to memory, when the cache
  folder cannot hold them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import tempfile
import warnings
import weakref
import zlib
from pathlib import Path

import joblib
import numpy as np
import torch
from torch import nn

__all__ = ["CacheWriteWarning", "FeatureCache", "check_cache", "image_digests", "model_digest"]

# Bump when the entry format or the meaning of the stored maps changes.
_FORMAT = 1
_MAGIC = b"SKCAEF16"
_HEADER = struct.Struct("<8sIQ")  # magic, crc32 of the payload, payload bytes
_SUFFIX = ".f16"

_WEIGHTS_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CacheWriteWarning(RuntimeWarning):
    """A cache entry or the training maps could not be written where asked."""


def check_cache(cache) -> FeatureCache | None:
    """Turn the ``cache`` parameter into a :class:`FeatureCache` (or None).

    Follows scikit-learn's ``memory`` convention. ``~`` is expanded; the folder need
    not exist yet (it is created on the first write).

    Parameters
    ----------
    cache : None, str, path-like or joblib.Memory
        None disables caching; a directory path or a ``joblib.Memory`` with a
        location enables it (a ``Memory(location=None)`` disables it).

    Returns
    -------
    FeatureCache or None

    Raises
    ------
    ValueError
        For another type, an empty path, or a path that exists and is not a folder.
    """
    if cache is None:
        return None
    if isinstance(cache, joblib.Memory):
        if cache.location is None:
            return None
        cache = cache.location
    elif not isinstance(cache, str | os.PathLike):
        raise ValueError(
            "cache must be None, a directory path or a joblib.Memory, got "
            f"{type(cache).__name__}: {cache!r}."
        )
    return FeatureCache(_check_location(cache))


def _check_location(location) -> Path:
    """The cache folder as a ``Path``, ``~`` expanded; refuse what cannot be a folder."""
    text = os.fspath(location)
    if not isinstance(text, str) or not text.strip():
        # "" would silently cache into the working directory.
        raise ValueError(
            f"cache={location!r} is not a folder path; pass a folder such as "
            "'~/.cache/sklearn_cae', or None to disable caching."
        )
    path = Path(text).expanduser()
    for folder in (path, path / "sklearn_cae_features"):
        try:
            mode = os.stat(folder).st_mode
        except FileNotFoundError:
            break  # created on the first write
        except (OSError, ValueError) as exc:  # a file as a parent, NUL bytes, too long
            raise ValueError(f"cache={text!r} cannot be used as a folder: {exc}") from None
        if not stat.S_ISDIR(mode):
            raise ValueError(
                f"cache={text!r}: {str(folder)!r} exists and is not a folder; pass a "
                "folder for the cache, or None to disable caching."
            )
    return path


def _weights_digest(module: nn.Module) -> str:
    """Hash the module's parameters and buffers (memoised per module object)."""
    digest = _WEIGHTS_DIGESTS.get(module)
    if digest is None:
        hasher = hashlib.blake2b(digest_size=16)
        for name, tensor in module.state_dict().items():
            data = tensor.detach().cpu().contiguous()
            hasher.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
            hasher.update(data.view(-1).view(torch.uint8).numpy().tobytes())
        digest = hasher.hexdigest()
        _WEIGHTS_DIGESTS[module] = digest
    return digest


def model_digest(
    backbone: nn.Module,
    *,
    layers,
    image_size,
    intensity,
    mean,
    std,
    device: torch.device,
) -> str:
    """Digest of everything, besides the image, that changes the tapped maps.

    Parameters
    ----------
    backbone : torch.nn.Module
        The frozen, truncated backbone (architecture and weights are hashed).
    layers : list of str
        The tapped layers, in order.
    image_size, intensity, mean, std
        The preprocessing applied before the backbone.
    device : torch.device
        Only its type matters: CUDA runs under bf16 autocast, so its maps differ.

    Returns
    -------
    str
    """
    from . import __version__

    return joblib.hash(
        {
            "format": _FORMAT,
            "version": __version__,
            "architecture": f"{type(backbone).__qualname__}\n{backbone!r}",
            "weights": _weights_digest(backbone),
            "layers": list(layers),
            "image_size": tuple(image_size),
            "intensity": intensity,
            "mean": tuple(float(v) for v in mean),
            "std": tuple(float(v) for v in std),
            "precision": "cuda-bf16-autocast" if device.type == "cuda" else "fp32",
        }
    )


def image_digests(images: np.ndarray) -> list[str]:
    """Content digest of each image: its bytes, shape and dtype.

    Parameters
    ----------
    images : ndarray of shape (n, ...)
        A batch of images; each row is hashed on its own.

    Returns
    -------
    list of str
    """
    digests = []
    for image in images:
        image = np.ascontiguousarray(image)
        hasher = hashlib.blake2b(digest_size=20)
        hasher.update(f"{image.dtype.str}{image.shape};".encode())
        hasher.update(memoryview(image).cast("B"))
        digests.append(hasher.hexdigest())
    return digests


class FeatureCache:
    """Per-image store of float16 backbone maps under a directory.

    Parameters
    ----------
    location : str or path-like
        Root directory (created on first write). May be shared by several processes,
        or machines sharing a filesystem.

    Attributes
    ----------
    hits, misses, corrupt : int
        Counters since creation (per process), for tests and benchmarks.
    """

    def __init__(self, location: str | os.PathLike):
        self.root = Path(location).expanduser() / "sklearn_cae_features"
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._writable = True

    def _path(self, model: str, key: str) -> Path:
        return self.root / model / key[:2] / f"{key}{_SUFFIX}"

    def load(self, model: str, key: str, n_values: int) -> np.ndarray | None:
        """Return the entry's ``n_values`` float16 values, or None when missing or invalid."""
        try:
            data = self._path(model, key).read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError:  # unreadable (permissions, I/O error): recompute
            self.corrupt += 1
            self.misses += 1
            return None
        payload = data[_HEADER.size :]
        valid = len(data) == _HEADER.size + 2 * n_values
        if valid:
            magic, crc, size = _HEADER.unpack_from(data)
            valid = magic == _MAGIC and size == len(payload) and zlib.crc32(payload) == crc
        if not valid:
            # Damaged on disk, or an older format: recompute and overwrite.
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return np.frombuffer(payload, dtype=np.float16)

    def save(self, model: str, key: str, values: np.ndarray) -> None:
        """Write an entry atomically (temporary file, then :func:`os.replace`).

        An entry that cannot be written (full disk, file-size limit, read-only
        folder) is skipped: the first failure warns (:class:`CacheWriteWarning`) and
        this object then stops trying, since the maps are already computed.
        """
        if not self._writable:
            return
        try:
            self._write(self._path(model, key), key, values)
        except OSError as exc:
            self._writable = False
            warnings.warn(
                f"Cannot write to the feature cache in {str(self.root)!r} ({exc}); "
                "going on without storing new entries.",
                CacheWriteWarning,
                stacklevel=2,
            )

    @staticmethod
    def _write(path: Path, key: str, values: np.ndarray) -> None:
        payload = np.ascontiguousarray(values, dtype=np.float16).tobytes()
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        except FileNotFoundError:  # first entry of its folder (mkdir only then: it is slow)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(_HEADER.pack(_MAGIC, zlib.crc32(payload), len(payload)))
                file.write(payload)
            os.replace(tmp, path)
        except BaseException:  # a failed or interrupted write leaves no partial file
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def temporary_array(self, shape: tuple[int, ...], dtype=np.float16) -> np.ndarray:
        """A writable memory-mapped array in the cache folder, freed when dropped.

        The backing file is anonymous (unlinked as soon as it is created where the
        OS allows), so a killed process leaves nothing behind. Its space is reserved
        up front, so a full disk fails here rather than as a crash (SIGBUS) while the
        array is written. When the cache folder cannot hold it (read-only, full, a
        file-size limit), the system's temporary folder is used, and failing that,
        memory.
        """
        if int(np.prod(shape)) == 0:
            return np.empty(shape, dtype=dtype)
        errors = []
        for folder in (self.root / "tmp", None):  # None: the system's temporary folder
            try:
                return _mapped_array(folder, shape, np.dtype(dtype))
            except OSError as exc:
                errors.append(str(exc))
        warnings.warn(
            f"Cannot store the training maps on disk ({'; '.join(errors)}); keeping them "
            "in memory.",
            CacheWriteWarning,
            stacklevel=2,
        )
        return np.empty(shape, dtype=dtype)


def _mapped_array(folder: Path | None, shape: tuple[int, ...], dtype: np.dtype) -> np.memmap:
    """A memory-mapped array on an anonymous file in ``folder``, its space reserved."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as file:
        size = int(np.prod(shape)) * dtype.itemsize
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(file.fileno(), 0, size)
        else:
            file.truncate(size)
        return np.memmap(file, dtype=dtype, mode="r+", shape=shape)
