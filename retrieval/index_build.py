"""Index choice within a memory budget, and a streaming build that never holds every vector at once.

``auto`` (:func:`auto_factory`, used by :func:`retrieval.index.resolve_factory`) takes the most accurate tier whose
resident size (:func:`estimated_bytes`) fits the budget (``RETRIEVAL_INDEX_MEMORY_GB``, default 8):

1. ``Flat`` below ``AUTO_EXACT_LIMIT`` (200k) vectors: exact;
2. ``PQ{dim/2}x4fs,RFlat``: fast-scan PQ shortlist re-scored on the full float32 vectors (4*dim + dim/4 bytes
   per vector: 5M x 384-d in 8 GB);
3. ``IVF{n},SQ8``: k-means lists (``{n}`` = :func:`retrieval.index.ivf_lists_for`) of 8-bit codes, dim bytes per
   vector (10M x 384-d: 3.9 GB, memory-mapped by readers, so in the page cache, shared and evictable);
4. ``OPQ{m}_{dim},IVF{n},PQ{m}``: rotated 8-bit PQ, m = dim/4 bytes per vector, when even SQ8 does not fit
   (~18M at 384-d): recall@10 only 0.72-0.75 on the clustered data at 100k, and OPQ trained 6.5 min on 100k
   rows (bench/results-index-100k-opq.json); 4-bit SQ (0.77-0.79) and IVF fast-scan PQ192x4fsr (0.56-0.60)
   were no better at 1M. Past this point a bigger budget buys more recall than any code does.

The choice follows the faiss wiki's "Guidelines to choose an index" (exact; then, as memory gets tighter,
``...,PQNx4fs,RFlat`` -> ``...,SQ8`` -> ``OPQM_D,...,PQM``; 4*sqrt(n) to 16*sqrt(n) IVF lists) and autofaiss's
``get_optimal_index_keys_v2`` (the same ladder by memory); the coarse quantizer stays flat: at 4*sqrt(10M) =
12.6k lists it costs well under a millisecond a query and assigns exactly, where an ``_HNSW32`` one misplaced
vectors at its default efSearch (recall@10 0.93 instead of 0.98 at 1M, bench/index_10m.py's data) and was no
faster to add once its efSearch was raised.

:func:`retrieval.index_stream.build_from_batches` (called as :func:`retrieval.index.build_from_batches`) builds from a callable returning an iterator of ``(ids, vectors)`` batches (SQL keyset
pages, a generator): a typed factory that needs no training (Flat, HNSW) is filled in one pass; otherwise pass one
counts and keeps a seeded uniform sample (bottom-k of per-row random keys, the same
rows :func:`retrieval.index_stream.training_sample` takes from a whole matrix), the index is trained on it, pass two
adds batch by batch. A collection of at most ``ONE_PASS_ROWS`` is kept from pass one and built in one pass.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Callable, Iterable

import faiss
import numpy as np

log = logging.getLogger(__name__)

MEMORY_ENV = "RETRIEVAL_INDEX_MEMORY_GB"
# 8 GB: 10M x 384-d on a 16 GB machine with half left to Postgres, the encoders (1-2 GB) and the page cache;
# readers map one copy of the file between them, so this is per machine, not per web worker.
DEFAULT_MEMORY_GB = 8.0
# IndexIDMap2, never mapped: its id array (8 B) and reverse hash map (~50 B) per vector (tests/test_index_mmap.py)
ID_MAP_BYTES = 64
ONE_PASS_ROWS = 200_000  # a collection this small is kept from the first pass (307 MB at 384-d): no second pass
SAMPLE_SEED = 0

Batch = tuple[np.ndarray, np.ndarray]
Batches = Callable[[], Iterable[Batch]]


def ivf_lists_for(n_vectors: int) -> int:
    """A sensible IVF list count: about 4*sqrt(n), at least 1."""
    return max(1, int(4 * math.sqrt(max(n_vectors, 1))))


def memory_budget_bytes(budget_bytes: int | None = None) -> int:
    """``budget_bytes`` if given, else ``RETRIEVAL_INDEX_MEMORY_GB`` (GB, decimal) from the environment, else 8 GB."""
    if budget_bytes is not None:
        return int(budget_bytes)
    raw = os.environ.get(MEMORY_ENV, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MEMORY_GB
    except ValueError:
        log.warning("%s=%r is not a number of GB; using %s", MEMORY_ENV, raw, DEFAULT_MEMORY_GB)
        gb = DEFAULT_MEMORY_GB
    return int(gb * 1e9)


def auto_tiers(dim: int) -> list[str]:
    """The factories ``auto`` considers above the exact limit, most accurate first (``{n}``: IVF list count)."""
    second = f"PQ{dim // 2}x4fs,RFlat" if dim % 2 == 0 else "SQfp16"
    m = _pq_bytes(dim)
    return [second, "IVF{n},SQ8", f"OPQ{m}_{dim},IVF{{n}},PQ{m}"]


def auto_factory(n_vectors: int, dim: int, budget_bytes: int | None = None, exact_limit: int = 200_000) -> str:
    """The most accurate tier whose :func:`estimated_bytes` fits the budget (the smallest tier if none does)."""
    budget = memory_budget_bytes(budget_bytes)
    tiers = (["Flat"] if n_vectors < exact_limit else []) + auto_tiers(dim)
    for factory in tiers:
        if estimated_bytes(factory, n_vectors, dim) <= budget:
            return factory
    log.warning("no index tier fits %.2f GB for %d x %d-d vectors; using the smallest (%s, ~%.2f GB)", budget / 1e9,
                n_vectors, dim, tiers[-1], estimated_bytes(tiers[-1], n_vectors, dim) / 1e9)
    return tiers[-1]


def estimated_bytes(factory: str, n_vectors: int, dim: int) -> int:
    """Resident size of ``IDMap2,<factory>`` holding ``n_vectors`` (codes, ids, centroids, rotations, id maps).

    Knows Flat, SQfp16/SQ8/SQ6/SQ4, PQ{m}[x{b}][fs][,RFlat], HNSW{M}, IVF{L}[_HNSW{M}] and OPQ{m}[_{d}] prefixes
    (``{n}`` in place of L: :func:`retrieval.index.ivf_lists_for`); raises ValueError for anything else."""
    n, d = int(n_vectors), int(dim)
    total, per_vector = 0, ID_MAP_BYTES
    parts = factory.replace("{n}", str(ivf_lists_for(n))).split(",")
    if (opq := re.fullmatch(r"OPQ(\d+)(?:_(\d+))?", parts[0])) is not None:
        d_out = int(opq.group(2) or d)
        total += 4 * d * d_out
        d = d_out
        parts = parts[1:]
    if (ivf := re.fullmatch(r"IVF(\d+)(?:_HNSW(\d+))?", parts[0])) is not None:
        lists = int(ivf.group(1))
        total += 4 * lists * d + (lists * 8 * int(ivf.group(2)) if ivf.group(2) else 0)
        per_vector += 8  # the list's copy of the id
        parts = parts[1:]
    if not parts:
        raise ValueError(f"cannot size the index factory '{factory}'")
    for part in parts:
        per_vector += _code_bytes(part, d, factory)
    return total + n * per_vector


def _code_bytes(part: str, dim: int, factory: str) -> int:
    sq = {"Flat": 4 * dim, "RFlat": 4 * dim, "SQfp16": 2 * dim, "SQ8": dim, "SQ6": math.ceil(6 * dim / 8),
          "SQ4": math.ceil(dim / 2)}
    if part in sq:
        return sq[part]
    if (pq := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fsr?|np)?", part)) is not None:
        return math.ceil(int(pq.group(1)) * int(pq.group(2) or 8) / 8)
    if (hnsw := re.fullmatch(r"HNSW(\d+)(?:_(?:Flat|SQ8|SQfp16))?", part)) is not None:
        stored = {"SQ8": dim, "SQfp16": 2 * dim}.get(part.rpartition("_")[2], 4 * dim)
        return stored + 2 * 4 * int(hnsw.group(1)) + 12  # level-0 links at 2M, upper levels and offsets
    raise ValueError(f"cannot size '{part}' in the index factory '{factory}'")


def _pq_bytes(dim: int) -> int:
    """Sub-quantizers for the last tier: dim/4 (96 at 384-d), a divisor of dim, at most 256."""
    for m in range(min(256, max(1, dim // 4)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def sample_rows(n_rows: int, limit: int, seed: int = SAMPLE_SEED) -> np.ndarray | None:
    """Row positions of a uniform sample of ``limit`` out of ``n_rows`` (ascending), or None to take them all.

    Row i gets key ``default_rng(seed).random(n_rows)[i]``; the sample is the ``limit`` smallest keys. The keys
    of a stream's rows are the same, drawn batch by batch (:class:`StreamSample`): both give the same rows."""
    if n_rows <= limit:
        return None
    keys = np.random.default_rng(seed).random(n_rows)
    return np.sort(np.argpartition(keys, limit - 1)[:limit])


class StreamSample:
    """The rows of :func:`sample_rows` (for every ``limit`` up to ``capacity``) from a stream of unknown length.

    One buffer of ``capacity * 3/2`` rows (allocated once, filled lazily) holds the bottom-k of the keys seen so
    far, in stream order; when it is full it is compacted in place to the ``capacity`` smallest keys."""

    def __init__(self, capacity: int, dim: int, seed: int = SAMPLE_SEED) -> None:
        self.capacity, self.dim = int(capacity), int(dim)
        self.count = 0
        self._rng = np.random.default_rng(seed)
        room = max(1, self.capacity + self.capacity // 2)
        self._vecs = np.empty((room, self.dim), dtype=np.float32)  # untouched pages cost nothing
        self._keys = np.empty(room, dtype=np.float64)
        self._fill = 0
        self._threshold = math.inf  # keys at or above it cannot be among the `capacity` smallest

    def add(self, vectors: np.ndarray) -> None:
        keys = self._rng.random(len(vectors))
        take = np.flatnonzero(keys < self._threshold)
        while len(take):
            if self._fill == len(self._keys):
                self._compact(self.capacity)
                take = take[keys[take] < self._threshold]
                continue
            part = take[:len(self._keys) - self._fill]
            end = self._fill + len(part)
            self._vecs[self._fill:end] = vectors[part]
            self._keys[self._fill:end] = keys[part]
            self._fill, take = end, take[len(part):]
        self.count += len(vectors)

    def _compact(self, limit: int) -> None:
        if self._fill <= limit:
            return
        keep = np.sort(np.argpartition(self._keys[:self._fill], limit - 1)[:limit])
        for j in range(0, limit, 8192):  # keep[j] >= j: each block reads rows no earlier block overwrote
            block = keep[j:j + 8192]
            self._vecs[j:j + len(block)] = self._vecs[block]
        self._keys[:limit] = self._keys[keep]
        self._fill = limit
        self._threshold = float(self._keys[:limit].max())

    def sample(self, limit: int) -> np.ndarray:
        """The vectors of ``sample_rows(count, limit)``, in stream order (``limit`` <= capacity); a view."""
        if limit > self.capacity:
            raise ValueError(f"a sample of {limit} asked from one that keeps {self.capacity}")
        self._compact(max(1, limit))
        return self._vecs[:self._fill]
