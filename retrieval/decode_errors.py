"""The decoders' error type and the checks every decoder runs before it opens a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class DecodeError(ValueError):
    """A file could not be decoded; the message names the file and the problem."""


def check_regular(path: Path) -> None:
    """Refuse what is not a regular file before a decoder opens it (a FIFO would block, a device never ends)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(f"{path}: not a regular file; only regular files can be decoded")
    if st.st_size == 0:
        raise DecodeError(f"{path}: file is empty (0 bytes); nothing to index: restore it from a backup or delete it")


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of a library exception, for a message that goes on to say what to do."""
    strerror = getattr(exc, "strerror", None)  # PyAV/OSError: the reason without errno and file name
    msg = strerror if isinstance(strerror, str) and strerror else (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__
