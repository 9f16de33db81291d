"""Reader: walk the indexed roots; yield the regular media files in them and the entries that must be skipped.

Only regular files are media. Every entry is ``lstat``-ed before anything opens it, so a FIFO named
``x.wav`` (``open()`` would block) or a link to ``/dev/zero`` (an endless stream to hash) is never
opened. Links are resolved here and must stay inside the indexed roots: a link to ``/etc/shadow``
named ``x.md`` is skipped, not indexed. A :class:`Skipped` entry carries a message that says what is
wrong and what to do; the indexer records it as a file error (``python -m indexer errors``), so
unreadable folders, dangling links, link loops, non-regular files and file names that are not UTF-8
are visible instead of silently missing. Hidden files and folders (``.name``) are not indexed; links
to folders are not followed (their targets are indexed where they are).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from retrieval import decoders

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


@dataclass(frozen=True)
class Candidate:
    """A regular file whose content (or, for text, name) is a supported modality."""

    path: str
    modality: str
    size: int
    mtime_ns: int
    dev: int = 0
    ino: int = 0


@dataclass(frozen=True)
class Skipped:
    """An entry that is not indexed, with why and what to do. ``path`` is printable (bad bytes escaped)."""

    path: str
    modality: str | None
    reason: str


def printable(path: str) -> str:
    """``path`` with bytes that are not UTF-8 shown as ``\\xNN`` (a string the database can store)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _suffix_modality(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    for modality, exts in (("image", decoders.IMAGE_EXTENSIONS), ("audio", decoders.AUDIO_EXTENSIONS),
                           ("text", decoders.TEXT_EXTENSIONS), ("video", decoders.VIDEO_EXTENSIONS)):
        if suffix in exts:
            return modality
    return None


def _inside(target: str, roots: Sequence[str]) -> bool:
    return any(target == r or target.startswith(r.rstrip("/") + "/") for r in roots)


def examine(path: str, roots: Sequence[str]) -> Candidate | Skipped | None:
    """What one directory entry is: a candidate, a skip (with its message), or None (not media, ignored)."""
    shown = printable(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Skipped(shown, _suffix_modality(path), f"{shown}: cannot be read ({exc.strerror}); "
                       f"check its permissions")
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.path.realpath(path, strict=True)
        except OSError as exc:
            link = printable(os.readlink(path)) if os.path.islink(path) else "?"
            if exc.errno == errno.ELOOP:
                return Skipped(shown, _suffix_modality(path), f"{shown}: link loop (-> {link}); it can never be "
                               f"opened: delete the link or point it at a file")
            return Skipped(shown, _suffix_modality(path), f"{shown}: dangling link to {link} (the target does "
                           f"not exist); fix the link or delete it")
        if not _inside(target, roots):
            return Skipped(shown, _suffix_modality(path), f"{shown}: link to {printable(target)}, outside the "
                           f"indexed folders; only files inside them are indexed: index the target's folder "
                           f"too, or replace the link with a copy of the file")
        try:
            st = os.stat(target)
        except OSError as exc:
            return Skipped(shown, _suffix_modality(path), f"{shown}: link target cannot be read ({exc.strerror})")
    if stat.S_ISDIR(st.st_mode):
        return None  # a link to a folder: not followed
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        return Skipped(shown, _suffix_modality(path), f"{shown}: is {kind}, not a regular file; only regular "
                       f"files are media: replace it with the file itself, or delete it")
    modality = decoders.sniff(Path(path))
    if modality is None:
        return None
    if shown != path:  # surrogate escapes: the name's bytes are not UTF-8
        return Skipped(shown, modality, f"{shown}: the file name is not valid UTF-8, so it cannot be stored "
                       f"or shown; rename it (e.g. `convmv -f latin1 -t utf-8 --notest FILE`)")
    return Candidate(path, modality, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


def scan(roots: Sequence[Path]) -> Iterator[Candidate | Skipped]:
    """Every indexable file under ``roots`` (absolute, resolved), and every entry that had to be skipped."""
    names = [str(r) for r in roots]
    for root in names:
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            found = examine(root, names)
            if found:
                yield found
            continue
        skipped: list[Skipped] = []

        def unreadable(exc: OSError) -> None:
            where = printable(exc.filename or root)
            skipped.append(Skipped(where, None, f"{where}: folder cannot be read ({exc.strerror}); its files "
                                   f"are not indexed: give the indexer read access (chmod +rx) or move them"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
            yield from skipped
            skipped.clear()
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    found = examine(os.path.join(dirpath, name), names)
                    if found:
                        yield found
        yield from skipped
