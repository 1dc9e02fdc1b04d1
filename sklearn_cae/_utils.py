"""Small helpers that several modules share: error text and atomic file writes."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "error_reason", "new_file_mode"]


def error_reason(exc: BaseException) -> str:
    """An exception's message on one line, or its type's name when it has none.

    >>> error_reason(ValueError("bad\\n  value"))
    'bad value'
    >>> error_reason(KeyError())
    'KeyError'
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def new_file_mode(path: Path) -> int:
    """The permissions ``path`` has, or those a new file gets (mkstemp's are 0600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    fsync: bool = True,
    keep_mode: bool = True,
    **open_kwargs,
) -> Iterator[IO]:
    """Open a temporary file next to ``path``; it replaces ``path`` only if all goes well.

    A full disk, a file-size limit or Ctrl-C leaves what was at ``path`` untouched and
    no temporary file behind. The parent folder must exist.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    mode : str, default="wb"
        The mode the temporary file is opened with ("w" for text).
    fsync : bool, default=True
        Flush the file to disk before it replaces ``path`` (off for cache entries,
        whose loss costs only a recomputation).
    keep_mode : bool, default=True
        Give the new file the permissions of the one it replaces (or a new file's),
        not mkstemp's 0600.
    **open_kwargs
        Passed to :func:`open` (``newline``, ``encoding``, ...).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(target, "w") as file:
    ...     _ = file.write("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        if keep_mode:
            os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:  # disk full, file-size limit, Ctrl-C: keep what was there
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
