"""The cache object the featurizers use: lookups, writes, a size cap, info and prune."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from ._keys import FORMAT
from ._store import decode_record, store_for

__all__ = ["CacheInfo", "CacheWriteWarning", "FeatureCache", "check_cache", "parse_size"]

_STORE_FOLDER = f"shards-v{FORMAT}"
_KEY_MODES = ("file", "content")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Per-image folders of the first format (one file per image), never read by this one.
_LEGACY_FOLDER = re.compile(r"[0-9a-f]{32}")


class CacheWriteWarning(RuntimeWarning):
    """A cache entry or the training maps could not be written where asked."""


def parse_size(size) -> int:
    """Bytes from an int or a string such as ``"500M"``, ``"20 GiB"`` or ``"1.5G"``.

    Units are binary (K = 1024 bytes); a trailing ``B`` or ``iB`` is optional.

    >>> parse_size("1.5K"), parse_size("2 GiB"), parse_size(100)
    (1536, 2147483648, 100)
    """
    if isinstance(size, bool):
        raise ValueError(
            f"max_size must be a number of bytes or a size such as '10G', got {size!r}."
        )
    if isinstance(size, int | np.integer):
        value = int(size)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", str(size), re.IGNORECASE)
        if match is None:
            raise ValueError(
                f"max_size must be a number of bytes or a size such as '500M' or '10G', "
                f"got {size!r}."
            )
        value = int(float(match[1]) * _UNITS[match[2].upper()])
    if value < 0:
        raise ValueError(f"max_size must not be negative, got {size!r}.")
    return value


def check_cache(cache) -> FeatureCache | None:
    """Turn the ``cache`` parameter into a :class:`FeatureCache` (or None).

    Follows scikit-learn's ``memory`` convention. ``~`` is expanded; the folder need
    not exist yet (it is created on the first write).

    Parameters
    ----------
    cache : None, str, path-like, joblib.Memory or FeatureCache
        None disables caching; a directory path or a ``joblib.Memory`` with a
        location enables it (a ``Memory(location=None)`` disables it); a
        :class:`FeatureCache` is used as it is (to set ``max_size`` or ``key``).

    Returns
    -------
    FeatureCache or None

    Raises
    ------
    ValueError
        For another type, an empty path, or a path that exists and is not a folder.
    """
    if cache is None or isinstance(cache, FeatureCache):
        return cache
    if isinstance(cache, joblib.Memory):
        if cache.location is None:
            return None
        cache = cache.location
    elif not isinstance(cache, str | os.PathLike):
        raise ValueError(
            "cache must be None, a directory path, a joblib.Memory or a FeatureCache, got "
            f"{type(cache).__name__}: {cache!r}."
        )
    return FeatureCache(cache)


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


@dataclass(frozen=True)
class CacheInfo:
    """What :meth:`FeatureCache.info` reports (sizes in bytes)."""

    location: str
    entries: int
    size: int
    live_size: int
    shards: int
    models: int
    max_size: int | None
    legacy_size: int

    def __str__(self) -> str:
        def mib(n: int) -> str:
            return f"{n / (1 << 20):,.1f} MiB"

        lines = [
            f"cache:    {self.location}",
            f"entries:  {self.entries:,} images' maps, for {self.models} backbone setting(s)",
            f"size:     {mib(self.size)} in {self.shards} shard(s) and the index "
            f"({mib(self.size - self.live_size)} reclaimable by prune)",
        ]
        if self.max_size is not None:
            lines.append(f"max size: {mib(self.max_size)}")
        if self.legacy_size:
            lines.append(
                f"older format: {mib(self.legacy_size)} of per-image files never read; "
                "prune removes them"
            )
        return "\n".join(lines)


class FeatureCache:
    """Store of float16 backbone maps under a folder, for large collections.

    Maps live in a few large append-only shard files with a checksum per record and an
    SQLite index (see :mod:`sklearn_cae.cache`). Several processes, or machines on a
    shared file system with working locks, may use one folder at once.

    Parameters
    ----------
    location : str or path-like
        Root folder (created on the first write); the maps go to
        ``<location>/sklearn_cae_features/``.
    max_size : int, str or None, default=None
        Size cap in bytes, or a string such as ``"20G"`` (see :func:`parse_size`).
        When writes take the cache past it, the least recently used entries are
        evicted. None: no cap.
    key : {"file", "content"}, default="file"
        How image files are keyed: ``"file"`` on (resolved path, size, modification
        time), read without decoding; ``"content"`` on their decoded pixels (slower:
        every file is decoded, also on a hit; use it when files are rewritten with
        their old time stamps). In-memory images are always keyed on content.

    Attributes
    ----------
    hits, misses, corrupt : int
        Counters since creation (per process), for tests and benchmarks.
    """

    def __init__(self, location: str | os.PathLike, *, max_size=None, key: str = "file"):
        self.location = _check_location(location)
        self.max_size = None if max_size is None else parse_size(max_size)
        if key not in _KEY_MODES:
            raise ValueError(f"key must be one of {_KEY_MODES}, got {key!r}.")
        self.key = key
        self.root = self.location / "sklearn_cae_features"
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._writable = True

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.location)!r}, max_size={self.max_size}, key={self.key!r})"

    @property
    def _store(self):
        return store_for(self.root / _STORE_FOLDER)

    # ----------------------------------------------------------------- lookups
    def contains(self, model: str, keys: list[str]) -> set[str]:
        """The keys that have an entry (marked as used, so no eviction takes them next)."""
        try:
            present = set(self._store.locate(model, keys))
        except (OSError, sqlite3.Error):
            return set()
        self._store.touch(model, list(present))
        return present

    def load_many(self, model: str, keys: list[str], n_values: int) -> list[np.ndarray | None]:
        """Each entry's ``n_values`` float16 values, or None when missing or invalid.

        An entry that fails its checksum (a torn write, a damaged disk) is counted in
        ``corrupt``, dropped from the index and reported missing, so it is recomputed.
        """
        store = self._store
        try:
            locations = store.locate(model, keys)
        except (OSError, sqlite3.Error):
            locations = {}
        entries, damaged = [], []
        for key in keys:
            location = locations.get(key)
            try:
                data = None if location is None else store.read(location)
            except OSError:  # unreadable (permissions, I/O error): recompute
                data = b""
            values = None if data is None else decode_record(data, model, key, n_values)
            if values is None and data is not None:
                damaged.append(key)
            entries.append(values)
        self.hits += sum(e is not None for e in entries)
        self.misses += sum(e is None for e in entries)
        self.corrupt += len(damaged)
        store.forget(model, damaged)
        store.touch(model, [k for k, e in zip(keys, entries, strict=True) if e is not None])
        return entries

    def load(self, model: str, key: str, n_values: int) -> np.ndarray | None:
        """One entry's ``n_values`` float16 values, or None (see :meth:`load_many`)."""
        return self.load_many(model, [key], n_values)[0]

    # ------------------------------------------------------------------ writes
    def save_many(self, model: str, keys: list[str], values: np.ndarray) -> None:
        """Append entries (rows of ``values``) to this process's shard, then index them.

        An entry that cannot be written (full disk, file-size limit, read-only folder)
        is skipped: the first failure warns (:class:`CacheWriteWarning`) and this
        object then stops trying, since the maps are already computed. A record cut
        short by the failure is truncated away, and never indexed.
        """
        if not self._writable or not len(keys):
            return
        rows = np.ascontiguousarray(values, dtype=np.float16).reshape(len(keys), -1)
        store = self._store
        try:
            store.append(model, list(keys), [row.tobytes() for row in rows])
            if self.max_size is not None and store.written_since_check >= self.max_size // 50:
                store.prune(self.max_size)
        except (OSError, sqlite3.Error) as exc:
            self._writable = False
            warnings.warn(
                f"Cannot write to the feature cache in {str(self.root)!r} ({exc}); "
                "going on without storing new entries.",
                CacheWriteWarning,
                stacklevel=2,
            )

    def save(self, model: str, key: str, values: np.ndarray) -> None:
        """Store one entry (see :meth:`save_many`)."""
        self.save_many(model, [key], np.asarray(values)[np.newaxis])

    def fitted_path(self, identity: str) -> Path:
        """Where a featurizer fitted under ``identity`` (a digest of its parameters and
        training images) is kept, so that a run over the same images reuses the fit."""
        return self.root / f"fitted-v{FORMAT}" / f"{identity}.joblib"

    def close(self) -> None:
        """Finish this process's shard: the next write starts a new one.

        A process appends to one shard at a time, which other processes' ``prune`` does
        not compact while it is open. Closing is never needed for correctness.
        """
        self._store.close_writer()

    # ----------------------------------------------------------- housekeeping
    def info(self) -> CacheInfo:
        """Entries, sizes and shards of the cache (for ``sklearn-cae cache info``)."""
        summary = self._store.summary()
        return CacheInfo(
            location=str(self.location),
            entries=summary["entries"],
            size=summary["disk_bytes"],
            live_size=summary["live_bytes"],
            shards=summary["shards"],
            models=summary["models"],
            max_size=self.max_size,
            legacy_size=sum(_folder_bytes(path) for path in self._legacy_folders()),
        )

    def prune(self, max_size=None) -> int:
        """Evict least recently used entries until the cache holds at most ``max_size``.

        Also removes the per-image files of the first cache format, which are never
        read, and compacts the shards: the space of evicted, replaced or damaged
        records is given back (shards another process is writing are left for later).

        Parameters
        ----------
        max_size : int, str or None, default=None
            Bytes, or a string such as ``"10G"``; None uses the object's ``max_size``,
            and without one only the older format's files are removed.

        Returns
        -------
        int
            The number of entries evicted.
        """
        for path in self._legacy_folders():
            shutil.rmtree(path, ignore_errors=True)
        cap = self.max_size if max_size is None else parse_size(max_size)
        return 0 if cap is None else self._store.prune(cap, compact=True)

    def _legacy_folders(self) -> list[Path]:
        try:
            return [
                p for p in self.root.iterdir() if p.is_dir() and _LEGACY_FOLDER.fullmatch(p.name)
            ]
        except OSError:
            return []

    def temporary_array(self, shape: tuple[int, ...], dtype=np.float16) -> np.ndarray:
        """A writable memory-mapped array in the cache folder, freed when dropped.

        The backing file is anonymous (unlinked as soon as it is created where the
        OS allows), so a killed process leaves nothing behind. Its space is reserved
        up front, so a full disk fails here rather than as a crash (SIGBUS) while the
        array is written. When the cache folder cannot hold it (read-only, full, a
        file-size limit), the system's temporary folder is used, and failing that,
        memory.
        """
        return temporary_array(shape, dtype, folders=(self.root / "tmp", None))


def temporary_array(shape: tuple[int, ...], dtype=np.float16, *, folders=(None,)) -> np.ndarray:
    """A memory-mapped array on an anonymous file in the first folder that can hold it.

    ``None`` in ``folders`` is the system's temporary folder; when none can hold it,
    the array is kept in memory, with a :class:`CacheWriteWarning`.
    """
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    errors = []
    for folder in folders:
        try:
            return _mapped_array(folder, shape, np.dtype(dtype))
        except OSError as exc:
            errors.append(str(exc))
    warnings.warn(
        f"Cannot store the training maps on disk ({'; '.join(errors)}); keeping them in memory.",
        CacheWriteWarning,
        stacklevel=3,
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


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total
