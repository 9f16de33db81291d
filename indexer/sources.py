"""The files behind catalog rows: open them only while they are still the regular file that was indexed.

At index time a file's identity is recorded with its row (``st_dev``, ``st_ino``, size, mtime; migration
0003). :func:`open_regular` opens a path without ever blocking (``O_NONBLOCK``: a FIFO swapped in does
not hang the reader) and refuses anything but a regular file; :func:`sha256_regular` hashes at most the
size ``fstat`` reported, so even a device can never stream forever. At serve time :func:`verify_source`
(or :func:`open_indexed`, which also closes the gap between the check and the read) refuses a path that
is no longer that file: replaced by a link to something outside the archive, by another file, or edited
since (the web UI answers 404 and says to re-run the indexer).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Mapping

_INT64 = 1 << 63


class SourceChanged(OSError):
    """The file at a catalog path is not the file that was indexed (or not a regular file at all)."""


def as_int64(value: int) -> int:
    """A 64-bit unsigned ``st_dev``/``st_ino`` as the signed value a BIGINT column stores (and back is not needed:
    values are only compared after the same mapping)."""
    value = int(value)
    return value - (1 << 64) if value >= _INT64 else value


def open_regular(path: str | os.PathLike, dev: int | None = None, ino: int | None = None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (links followed), optionally the one with ``dev``/``ino``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceChanged(f"{path}: not a regular file; only regular files are media")
        if dev is not None and ino is not None and (as_int64(st.st_dev), as_int64(st.st_ino)) != (
                as_int64(dev), as_int64(ino)):
            raise SourceChanged(f"{path}: is no longer the file that was indexed (replaced or re-linked)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_regular(path: str | os.PathLike, dev: int | None = None, ino: int | None = None) -> str:
    """SHA-256 of a regular file, reading at most the size ``fstat`` reported when it was opened."""
    h = hashlib.sha256()
    with open_regular(path, dev, ino) as f:
        left = os.fstat(f.fileno()).st_size
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _matches(st: os.stat_result, row: Mapping) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    if row.get("dev") is not None and row.get("inode") is not None:
        if (as_int64(st.st_dev), as_int64(st.st_ino)) != (as_int64(row["dev"]), as_int64(row["inode"])):
            return False
    return st.st_size == row.get("size") and st.st_mtime_ns == row.get("mtime_ns")


def verify_source(path: str | os.PathLike, file_row: Mapping) -> bool:
    """Whether ``path`` is still the regular file described by ``file_row`` (``dev``, ``inode``, ``size``,
    ``mtime_ns`` as :func:`indexer.repository.item_detail` returns them)."""
    try:
        return _matches(os.stat(path), file_row)
    except OSError:
        return False


def open_indexed(path: str | os.PathLike, file_row: Mapping) -> BinaryIO:
    """``path`` opened for reading, checked on the open descriptor to be the file that was indexed;
    raises :class:`SourceChanged` (or ``FileNotFoundError``) otherwise."""
    f = open_regular(path)
    if not _matches(os.fstat(f.fileno()), file_row):
        f.close()
        raise SourceChanged(f"{path} changed since it was indexed; re-run `python -m indexer add` on its folder")
    return f


def describe(path: str | Path) -> str:
    """Why ``path`` cannot be served, for an error message."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is no longer there"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "was replaced by a link"
    return "changed since it was indexed" if stat.S_ISREG(st.st_mode) else "is no longer a regular file"
