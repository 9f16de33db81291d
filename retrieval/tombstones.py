"""Tombstones: ids deleted from an index that cannot remove them in place (HNSW, IVF, refined ``…,RFlat``).

:class:`~retrieval.index.VectorIndex` keeps a sorted, unique int64 array of dead ids beside the FAISS
index. The vectors stay in the index (HNSW still routes through them), every read filters them out:
``count``, ``ids()``, ``vectors()``, the reference sample and :func:`live_search`, which over-fetches
and retries so that a query still gets the first k live hits of the index's own ranking (for an exhaustive
index the exact live top-k) even when every nearest neighbour is dead. SQL item ids are never reused, so a tombstone
never has to be lifted: adding a tombstoned id again is refused (:class:`TombstonedIdError`).

On disk they are ``tombstones.npy`` in the index folder, written atomically (temp file + rename) before the
manifest, whose ``extra["tombstones"]`` records how many there are; no file means none. A delete-only save
rewrites only that file and the manifest, never ``index.faiss``. Because ids are never reused, a tombstone
file newer than the index file is still correct for it (extra ids are simply not in the index, and are
dropped at load).

Dead vectors still cost memory, disk and over-fetch: when they pass :data:`COMPACT_FRACTION` of the index the
indexer rebuilds that modality from SQL (``indexer.writer.Writer.finish``), which drops them all.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

TOMBSTONES_NAME = "tombstones.npy"
# Compact (rebuild from SQL) past 10% dead. Below that, dead vectors cost at most ~10% more memory and disk
# and a search fetches k + 20% + OVERFETCH_MARGIN hits; a rebuild reads every embedding from SQL, builds and
# writes the whole file (1.5 GB at 1M; ~20 s for the index alone at 300k, bench/delete_scale.py, against
# well under 0.1 s for remove + save), so waiting for 10% of the collection to die spreads one rebuild over
# that many deletions instead of paying it on each run that deletes a file.
COMPACT_FRACTION = 0.10
# extra hits fetched on the first try beyond twice the expected dead: with 10% dead and k=10, more than 4 of
# the first 14 are dead for under 1% of queries (those search again); a refined index re-scores k_factor
# candidates per hit fetched, so every extra hit costs (8 instead of 2 doubled p50 at 1% dead, 300k RFlat)
OVERFETCH_MARGIN = 2
_EMPTY = np.zeros(0, dtype=np.int64)


class TombstonedIdError(ValueError):
    """An id that was deleted from this index is added again (SQL ids are never reused: a bug upstream)."""


def isin_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean mask (shape of ``ids``): which of ``ids`` are in the sorted array ``sorted_ids``."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


def _sorted(ids: np.ndarray) -> np.ndarray:
    """``ids`` sorted (an index's id map usually is already: SQL ids grow)."""
    return ids if len(ids) < 2 or bool((ids[1:] >= ids[:-1]).all()) else np.sort(ids, kind="stable")


def first_fetch(k: int, dead: int, ntotal: int) -> int:
    """How many hits to ask the index for on the first try: k plus twice the expected dead among them."""
    if dead == 0:
        return k
    return min(ntotal, k + dead, k + math.ceil(2 * k * dead / max(ntotal, 1)) + OVERFETCH_MARGIN)


def live_search(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], queries: np.ndarray, k: int,
                dead: np.ndarray, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` live hits per query from ``search(queries, kk)`` (the raw index search), dead ids dropped.

    Rows with fewer than ``k`` live hits are searched again with twice the fetch, up to ``k + len(dead)``:
    at most ``len(dead)`` of any top list can be dead, so that fetch always holds the live top-k the index
    ranks. Missing slots have id -1 and score -inf, as FAISS pads them."""
    n = len(queries)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    cap = min(ntotal, k + len(dead))
    kk = first_fetch(k, len(dead), ntotal)
    rows = np.arange(n)
    while True:
        scores, ids = search(queries[rows], kk)
        keep = (ids >= 0) & ~isin_sorted(dead, ids)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # live hits first, in the index's order
        got_i = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
        got_s = np.take_along_axis(np.where(keep, scores, -np.inf), order, axis=1)
        out_i[rows, : got_i.shape[1]] = got_i
        out_s[rows, : got_s.shape[1]] = got_s
        short = keep.sum(axis=1) < k
        if kk >= cap or not short.any():
            return out_s, out_i
        rows, kk = rows[short], min(cap, 2 * kk)


def file_key(path: Path) -> tuple[int, int, int, int] | None:
    """A file's identity (device, inode, mtime, size), None when it does not exist: saves rename onto the path,
    so a changed file has another inode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class Tombstones:
    """The dead ids of one index (sorted, unique int64), and which tombstone file they were last read from or
    written to (so an unchanged set is not rewritten)."""

    def __init__(self, dead: np.ndarray | None = None, key: tuple | None = None, known: bool = False) -> None:
        self.ids = _EMPTY.copy() if dead is None else np.unique(np.asarray(dead, dtype=np.int64))
        self._disk = (len(self.ids), key) if known else None

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        return isin_sorted(self.ids, ids)

    def live(self, ids: np.ndarray) -> np.ndarray:
        return ids[~self.mask(ids)] if len(self.ids) else ids

    def refuse(self, ids: np.ndarray, error: type[Exception], what: str) -> None:
        """Raise ``error`` naming up to five of ``ids`` that are dead."""
        if len(self.ids) and self.mask(ids).any():
            raise error(f"{what}: {np.asarray(ids)[self.mask(ids)][:5].tolist()}")

    def bury(self, ids: np.ndarray, stored: np.ndarray) -> int:
        """Add the ids of ``ids`` that are stored (``stored``: every id of the index) and not yet dead;
        returns how many."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        new = ids[isin_sorted(_sorted(stored), ids) & ~self.mask(ids)]
        self.ids = np.union1d(self.ids, new)
        return len(new)

    def keep_stored(self, stored: np.ndarray) -> None:
        """Drop dead ids the index does not store (a tombstone file newer than the index file may name some)."""
        self.ids = self.ids[isin_sorted(_sorted(stored), self.ids)]

    def search(self, search: Callable, queries: np.ndarray, k: int, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
        """``search(queries, k)`` (the raw index search) when none are dead, else :func:`live_search`."""
        return live_search(search, queries, k, self.ids, ntotal) if len(self.ids) else search(queries, k)

    def record(self, extra: dict | None) -> dict:
        """A manifest's ``extra`` with this set's size (no key when there are none)."""
        extra = {k: v for k, v in (extra or {}).items() if k != "tombstones"}
        if len(self.ids):
            extra["tombstones"] = len(self.ids)
        return extra

    @classmethod
    def load(cls, folder: Path, extra: dict | None) -> "Tombstones":
        """The tombstones saved in ``folder``, checked against the manifest's ``extra``: a file with fewer ids
        than the manifest records (lost or truncated) raises ValueError, so the caller rebuilds from SQL
        instead of serving deleted items."""
        path = Path(folder) / TOMBSTONES_NAME
        key = file_key(path)
        try:
            dead = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            dead = _EMPTY
        except Exception as exc:  # noqa: BLE001 - numpy raises several kinds on a damaged file
            raise ValueError(f"{path} is unreadable ({exc}); run `python -m indexer rebuild`") from None
        if dead.ndim != 1 or (len(dead) and dead.dtype.kind not in "iu"):
            raise ValueError(f"{path} does not hold a list of ids; run `python -m indexer rebuild`")
        expected = int((extra or {}).get("tombstones", 0))
        if len(dead) < expected:
            raise ValueError(f"{path} holds {len(dead)} deleted ids, the manifest says {expected}; "
                             "run `python -m indexer rebuild`")
        return cls(dead, key, known=True)

    def save(self, folder: Path) -> None:
        """Replace ``folder``'s tombstone file atomically (temp file + rename; removed when there are none),
        unless it is the one this set was read from or written to (tombstones only grow: the count tells)."""
        path = Path(folder) / TOMBSTONES_NAME
        if self._disk == (len(self.ids), file_key(path)):
            return
        if len(self.ids) == 0:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, self.ids, allow_pickle=False)
            os.replace(tmp, path)
        self._disk = (len(self.ids), file_key(path))
