"""Maps in a few large append-only shard files, found through an SQLite index.

A record is ``magic, crc32, payload bytes, model and key lengths, model, key, payload``;
the CRC covers everything after itself, so a record torn by SIGKILL or a power loss, or
damaged on disk, fails its check and is recomputed, never read. Each writing process
appends to shards of its own (created under a temporary name, locked with ``flock``,
then renamed), so writers never interleave; the index (SQLite, whose locking serialises
concurrent processes) is updated only after a record is written. The index holds
nothing the shards do not: when it is missing or damaged it is rebuilt by scanning them.

Eviction is least-recently-used per record: the rows of the oldest records are deleted,
then the shards holding dead records are compacted (their live records copied into a new
shard, the old file removed). Shards another process is still appending to (locked) are
left for a later pass.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .._utils import new_file_mode

try:  # POSIX; elsewhere shards are never compacted while another process may write them
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["ShardStore", "store_for"]

_MAGIC = b"SKCAESH2"
_PREFIX = struct.Struct("<8sI")  # magic, crc32 of the rest of the record
_FIELDS = struct.Struct("<QHH")  # payload bytes, model length, key length
#: A writer starts a new shard past this size.
SHARD_BYTES = 256 << 20
_SUFFIX = ".shard"
_OPEN_READERS = 32
_QUERY_CHUNK = 500  # SQLite's default limit on host parameters is 999
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    model TEXT NOT NULL, key TEXT NOT NULL, shard TEXT NOT NULL,
    offset INTEGER NOT NULL, size INTEGER NOT NULL, used REAL NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used);
CREATE INDEX IF NOT EXISTS entries_by_shard ON entries (shard);
"""


def encode_record(model: str, key: str, payload: bytes) -> bytes:
    """One shard record: prefix (magic, CRC), fields, model, key, payload."""
    model_bytes, key_bytes = model.encode(), key.encode()  # lengths in bytes, not characters
    rest = _FIELDS.pack(len(payload), len(model_bytes), len(key_bytes)) + model_bytes + key_bytes
    rest += payload
    return _PREFIX.pack(_MAGIC, zlib.crc32(rest)) + rest


def _decode_header(data: bytes) -> tuple[int, str, str, int] | None:
    """(crc, model, key, record size) of a record's first bytes, None if not a record."""
    head = _PREFIX.size + _FIELDS.size
    if len(data) < head:
        return None
    magic, crc = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        return None
    n_payload, n_model, n_key = _FIELDS.unpack_from(data, _PREFIX.size)
    names = data[head : head + n_model + n_key]
    if len(names) < n_model + n_key:
        return None
    model, key = names[:n_model].decode(errors="replace"), names[n_model:].decode(errors="replace")
    return crc, model, key, head + n_model + n_key + n_payload


def decode_record(data: bytes, model: str, key: str, n_values: int) -> np.ndarray | None:
    """The float16 payload of ``data`` if it is the intact record of (model, key)."""
    header = _decode_header(data)
    if header is None:
        return None
    crc, found_model, found_key, size = header
    payload_start = size - 2 * n_values
    valid = (
        (found_model, found_key) == (model, key)
        and size == len(data)
        and payload_start == _PREFIX.size + _FIELDS.size + len(model.encode()) + len(key.encode())
        and zlib.crc32(memoryview(data)[_PREFIX.size :]) == crc
    )
    return np.frombuffer(data, dtype=np.float16, offset=payload_start) if valid else None


def scan_shard(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """Yield ``(offset, model, key, size)`` of the intact records, up to the first bad one."""
    with open(path, "rb") as file:
        data = file.read()
    offset = 0
    while offset < len(data):
        header = _decode_header(data[offset : offset + 4096])
        if header is None:
            return
        crc, model, key, size = header
        record = memoryview(data)[offset : offset + size]
        if len(record) < size or zlib.crc32(record[_PREFIX.size :]) != crc:
            return  # a torn tail: what follows is not trusted
        yield offset, model, key, size
        offset += size


class _Writer:
    """An open, locked shard that only this process appends to."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".new")
        try:
            os.fchmod(fd, new_file_mode(folder / "new"))
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.name = Path(tmp).name[1 : -len(".new")] + _SUFFIX
            os.rename(tmp, folder / self.name)  # visible to compaction only once locked
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.fd, self.path, self.size = fd, folder / self.name, 0

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; return its offset. A failed write is cut off."""
        start = self.size
        view = memoryview(data)
        try:
            while view:
                view = view[os.pwrite(self.fd, view, self.size) :]
                self.size = start + len(data) - len(view)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            self.size = start
            raise
        return start

    def close(self, *, drop_if_empty: bool = False) -> None:
        if drop_if_empty and self.size == 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)  # releases the lock


def _is_damaged(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB, as opposed to a lock timeout or a full disk."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class ShardStore:
    """The shards and index under one folder, shared by every cache object of a process."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shards = folder / "shards"
        self.index_path = folder / "index.sqlite"
        self.lock = threading.RLock()
        self.written_since_check = 0
        self._connection: sqlite3.Connection | None = None
        self._opened: tuple[int, int] | None = None
        self._writer: _Writer | None = None
        self._readers: OrderedDict[str, int] = OrderedDict()

    # ------------------------------------------------------------------- index
    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if self._connection is not None:
            if self._index_identity() == self._opened:
                return self._connection
            self._forget_files()  # the folder was removed or replaced meanwhile
        missing = not self.index_path.exists()
        if missing and not create and not self._shard_paths():
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        damaged = self._open()
        if missing or damaged:
            self._rebuild()
        return self._connection

    def _index_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.index_path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _forget_files(self) -> None:
        """Close the index, this process's shard and the open readers."""
        self._connection.close()
        self._connection = None
        self.close_writer()
        while self._readers:
            os.close(self._readers.popitem()[1])

    def _open(self) -> bool:
        """Open the index as ``_connection``; return whether a damaged one was replaced."""
        for attempt in range(2):
            connection = sqlite3.connect(
                self.index_path, timeout=60, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA synchronous=NORMAL")
                with contextlib.suppress(sqlite3.OperationalError):  # a read-only folder
                    connection.executescript(_SCHEMA)
                connection.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                connection.close()
                if attempt or not _is_damaged(exc):
                    raise
                self.index_path.unlink()  # damaged: rebuilt from the shards
                continue
            self._connection, self._opened = connection, self._index_identity()
            return attempt == 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, sql: str, parameters=(), *, create: bool = False) -> list[tuple]:
        """Run a read; a damaged index is rebuilt once, a missing one reads as empty."""
        for attempt in range(2):
            connection = self._connect(create=create)
            if connection is None:
                return []
            try:
                return connection.execute(sql, parameters).fetchall()
            except sqlite3.DatabaseError as exc:
                if attempt or not _is_damaged(exc):
                    raise
                self._reset_index()
        return []  # pragma: no cover

    def _write_rows(self, sql: str, rows: Sequence[tuple]) -> None:
        connection = self._connect(create=True)
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(sql, rows)
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise

    def _reset_index(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
            self._opened = None
        with contextlib.suppress(FileNotFoundError):
            self.index_path.unlink()

    def _rebuild(self) -> None:
        """Index every intact record of every shard (the index is only a shortcut)."""
        rows = []
        for path in self._shard_paths():
            with contextlib.suppress(OSError):
                used = path.stat().st_mtime
                rows += [
                    (model, key, path.name, offset, size, used)
                    for offset, model, key, size in scan_shard(path)
                ]
        self._write_rows("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)

    # ------------------------------------------------------------------ reads
    def locate(self, model: str, keys: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """``{key: (shard, offset, size)}`` of the keys the index holds."""
        found = {}
        with self.lock:
            for start in range(0, len(keys), _QUERY_CHUNK):
                chunk = list(keys[start : start + _QUERY_CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._query(
                    "SELECT key, shard, offset, size FROM entries "
                    f"WHERE model = ? AND key IN ({marks})",
                    (model, *chunk),
                )
                found.update((key, (shard, offset, size)) for key, shard, offset, size in rows)
        return found

    def touch(self, model: str, keys: Sequence[str]) -> None:
        """Mark entries as just used (for LRU eviction); a read-only index is left as is."""
        if not keys:
            return
        now = time.time()
        with self.lock, contextlib.suppress(sqlite3.Error, OSError):
            self._write_rows(
                "UPDATE entries SET used = ? WHERE model = ? AND key = ?",
                [(now, model, key) for key in keys],
            )

    def read(self, location: tuple[str, int, int]) -> bytes | None:
        """A record's bytes, or None when its shard is gone (compacted meanwhile)."""
        shard, offset, size = location
        with self.lock:
            fd = self._readers.pop(shard, None)
            if fd is None:
                try:
                    fd = os.open(self.shards / shard, os.O_RDONLY)
                except FileNotFoundError:
                    return None
            self._readers[shard] = fd
            while len(self._readers) > _OPEN_READERS:
                os.close(self._readers.popitem(last=False)[1])
            return os.pread(fd, size, offset)

    def forget(self, model: str, keys: Sequence[str]) -> None:
        """Drop index rows (of damaged records) so that they are recomputed."""
        with self.lock, contextlib.suppress(sqlite3.Error, OSError):
            self._write_rows(
                "DELETE FROM entries WHERE model = ? AND key = ?", [(model, k) for k in keys]
            )

    # ------------------------------------------------------------------ writes
    def append(self, model: str, keys: Sequence[str], payloads: Sequence[bytes]) -> int:
        """Store records (shard first, then index); return the bytes written."""
        records = [
            encode_record(model, key, payload) for key, payload in zip(keys, payloads, strict=True)
        ]
        data = b"".join(records)
        with self.lock:
            if self._writer is None:
                self._writer = _Writer(self.shards)
            writer = self._writer
            try:
                offset = writer.append(data)
            except OSError:
                self.close_writer()
                raise
            rows, used = [], time.time()
            for key, record in zip(keys, records, strict=True):
                rows.append((model, key, writer.name, offset, len(record), used))
                offset += len(record)
            self._write_rows("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
            if writer.size >= SHARD_BYTES:
                self.close_writer()
            self.written_since_check += len(data)
        return len(data)

    def close_writer(self) -> None:
        with self.lock:
            if self._writer is not None:
                self._writer.close(drop_if_empty=True)
                self._writer = None

    # ------------------------------------------------------------- housekeeping
    def _shard_paths(self) -> list[Path]:
        try:
            return sorted(self.shards.glob(f"*{_SUFFIX}"))
        except OSError:
            return []

    def disk_bytes(self) -> int:
        """Bytes on disk: shards (including unfinished ones) and the index."""
        total = 0
        for path in [*self.shards.glob("*"), self.index_path] if self.shards.exists() else []:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def summary(self) -> dict:
        with self.lock:
            rows = self._query("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries")
            models = self._query("SELECT COUNT(DISTINCT model) FROM entries")
        entries, live = rows[0] if rows else (0, 0)
        return {
            "entries": int(entries),
            "live_bytes": int(live),
            "models": int(models[0][0]) if models else 0,
            "shards": len(self._shard_paths()),
            "disk_bytes": self.disk_bytes(),
        }

    def prune(self, max_size: int, *, compact: bool = False) -> int:
        """Evict least-recently-used records until the store fits ``max_size`` bytes.

        With ``compact``, the shards are rewritten without their dead records even when
        nothing needs evicting (what ``sklearn-cae cache prune`` asks for); the automatic
        prune after writes compacts only when it evicts. Returns the number evicted.
        """
        with self.lock:
            self.close_writer()  # so that this process's shard can be compacted too
            self.written_since_check = 0
            over = self.disk_bytes() > max_size
            if not over and not compact:
                return 0
            evicted = self._evict(max_size) if over else 0
            self._compact()
            return evicted

    def _evict(self, max_size: int) -> int:
        index_bytes = self.index_path.stat().st_size if self.index_path.exists() else 0
        target = max_size - index_bytes
        live = self.summary()["live_bytes"]
        doomed = []
        if live > target:
            for model, key, size in self._query(
                "SELECT model, key, size FROM entries ORDER BY used"
            ):
                if live <= target:
                    break
                doomed.append((model, key))
                live -= size
        self._write_rows("DELETE FROM entries WHERE model = ? AND key = ?", doomed)
        return len(doomed)

    def _compact(self) -> None:
        """Copy the live records of shards with dead ones into new shards; remove the old."""
        writer = None
        try:
            for path in self._shard_paths():
                rows = self._query(
                    "SELECT model, key, offset, size FROM entries WHERE shard = ? ORDER BY offset",
                    (path.name,),
                )
                try:
                    if sum(row[3] for row in rows) == path.stat().st_size:
                        continue  # nothing dead
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    if fcntl is not None:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            continue  # another process is still appending to it
                    elif self._writer is not None:  # pragma: no cover - no locks here
                        continue
                    moved = []
                    for model, key, offset, size in rows:
                        record = os.pread(fd, size, offset)
                        if _decode_header(record) is None or len(record) != size:
                            continue
                        if writer is None or writer.size >= SHARD_BYTES:
                            if writer is not None:
                                writer.close()
                            writer = _Writer(self.shards)
                        new_offset = writer.append(record)
                        moved.append((writer.name, new_offset, model, key, path.name, offset))
                    self._write_rows(
                        "UPDATE entries SET shard = ?, offset = ? "
                        "WHERE model = ? AND key = ? AND shard = ? AND offset = ?",
                        moved,
                    )
                    self._drop_reader(path.name)
                    path.unlink(missing_ok=True)  # another process compacted it first
                finally:
                    os.close(fd)
        finally:
            if writer is not None:
                writer.close(drop_if_empty=True)

    def _drop_reader(self, shard: str) -> None:
        fd = self._readers.pop(shard, None)
        if fd is not None:
            os.close(fd)


_STORES: dict[tuple[str, int], ShardStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(folder: Path) -> ShardStore:
    """The process's store for ``folder`` (one per process: a forked child gets its own)."""
    key = (str(folder), os.getpid())
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = ShardStore(folder)
        return store
