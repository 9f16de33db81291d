"""Streaming index build: fill a :class:`~retrieval.index.VectorIndex` from batches of (ids, vectors).

:mod:`retrieval.index_build` plans (tiers, sizes, samples); this module runs the plan. The caller passes the
index class (``new``), so this module does not import :mod:`retrieval.index` (which imports this one):
:func:`retrieval.index.build_from_batches` is the public entry. A typed factory that needs no training (Flat,
HNSW) is filled in one pass; otherwise pass one counts and keeps a seeded uniform sample, the index is trained
on it, and pass two adds batch by batch (a collection of at most ``ONE_PASS_ROWS`` is kept from pass one).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import faiss
import numpy as np

from . import index_build as _plan  # its ONE_PASS_ROWS read at build time (tests change it)
from .index_build import Batch, Batches, StreamSample, auto_factory, ivf_lists_for, sample_rows
from .index_manifest import IndexManifest

log = logging.getLogger(__name__)

AUTO_EXACT_LIMIT = 200_000
TRAIN_POINTS_PER_LIST = 64
MAX_TRAIN_POINTS = 256_000


def resolve_factory(factory: str, n_vectors: int, dim: int = 384, budget_bytes: int | None = None) -> str:
    """Turn ``"auto"`` into a concrete factory string for ``n_vectors`` rows of ``dim``: the most accurate tier
    whose resident size fits ``budget_bytes`` (None: ``RETRIEVAL_INDEX_MEMORY_GB``, default 8 GB), see
    :mod:`retrieval.index_build`. Flat below ``AUTO_EXACT_LIMIT``; then 4-bit fast-scan PQ (dim/2 sub-quantizers)
    shortlisting ``REFINE_K_FACTOR``*k candidates re-scored exactly (on random 384-d data, the hardest case,
    HNSW32 and IVF missed recall@10 0.95 at any speed worth having; this kept ~0.999); then ``IVF{n},SQ8`` and
    ``OPQ..,IVF{n},PQ..`` (``{n}``: :func:`ivf_lists_for` at build time) when the full vectors do not fit."""
    if factory != "auto":
        return factory
    return auto_factory(n_vectors, dim, budget_bytes, exact_limit=AUTO_EXACT_LIMIT)


def as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    """``x`` as a contiguous float32 (N, dim) matrix (one row for a 1-d vector), or a ValueError naming the shape."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {x.shape}")
    return x


def training_limit(factory: str, dim: int) -> int:
    """How many vectors train ``factory``: ``TRAIN_POINTS_PER_LIST`` per IVF list, ``MAX_TRAIN_POINTS`` at most
    (k-means on all 1M rows took minutes)."""
    inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(inner)
    return min(MAX_TRAIN_POINTS, TRAIN_POINTS_PER_LIST * ivf.nlist) if ivf is not None else MAX_TRAIN_POINTS


def training_sample(vectors: np.ndarray, factory: str) -> np.ndarray:
    """At most 64 points per IVF list (and 256k overall): k-means on all 1M rows took minutes. A seeded uniform
    sample, the same rows the streaming build keeps (:func:`retrieval.index_build.sample_rows`)."""
    rows = sample_rows(len(vectors), training_limit(factory, vectors.shape[1]))
    return vectors if rows is None else vectors[rows]


def build_from_batches(
    batches: Batches,
    *,
    new: Callable[[IndexManifest], Any],
    model: str,
    checksums: dict[str, str],
    dim: int,
    factory: str = "auto",
    modality: str = "",
    revision: int = 0,
    budget_bytes: int | None = None,
    timings: dict[str, float] | None = None,
) -> Any:
    """Build an index (``new(manifest)``, a ``VectorIndex``) from ``batches()``, an iterable of (ids, vectors)
    batches that can be read twice in the same order; the result equals a build of their concatenation.
    ``timings``, if given, receives ``scan_s``, ``train_s``, ``add_s`` (seconds)."""
    t0 = time.perf_counter()
    n = added = 0
    index = None

    def make(concrete: str) -> Any:
        m = IndexManifest(factory=concrete, model=model, checksums=dict(checksums), dim=dim, modality=modality,
                          revision=revision)
        m.set_user_factory(factory)
        return new(m)

    if factory != "auto" and "{n}" not in factory:  # a typed factory that needs no training (Flat, HNSW...)
        index = make(factory)
        if index._cpu.is_trained:
            index._tune()
        else:
            index = None
    if index is not None:  # one pass: straight into the index
        for ids, vecs in batches():
            ids, vecs = _batch(ids, vecs, dim)
            if len(ids):
                index._cpu.add_with_ids(vecs, ids)
                n = added = added + len(ids)
        t1 = t2 = time.perf_counter()
    else:
        sampler = StreamSample(MAX_TRAIN_POINTS, dim)
        held: list[Batch] | None = []
        for ids, vecs in batches():
            ids, vecs = _batch(ids, vecs, dim)
            sampler.add(vecs)
            if held is not None:
                held.append((ids, vecs))
                if sampler.count > _plan.ONE_PASS_ROWS:
                    held = None  # too many to keep: the second pass reads them again
        n = sampler.count
        concrete = resolve_factory(factory, n, dim, budget_bytes=budget_bytes)
        if "{n}" in concrete:
            concrete = concrete.replace("{n}", str(ivf_lists_for(n)))
        index = make(concrete)
        t1 = time.perf_counter()
        if not index._cpu.is_trained:  # IVF, PQ, SQ8, ...: train on the sample
            if n == 0:
                index.manifest.factory = "Flat"
                index._cpu = type(index)._empty("Flat", dim)
            else:
                index._cpu.train(sampler.sample(training_limit(concrete, dim)))
        del sampler
        index._tune()
        t2 = time.perf_counter()
        for ids, vecs in (held if held is not None else (_batch(i, v, dim) for i, v in batches())):
            if len(ids):
                index._cpu.add_with_ids(vecs, ids)
                added += len(ids)
    if added != n:
        log.warning("the %s embeddings changed during the rebuild: %d counted, %d added", modality or "", n, added)
    index.manifest.count = int(index._cpu.ntotal)
    if timings is not None:
        timings.update(scan_s=t1 - t0, train_s=t2 - t1, add_s=time.perf_counter() - t2)
    return index


def _batch(ids: np.ndarray, vectors: np.ndarray, dim: int) -> Batch:
    vectors = as_matrix(vectors, dim)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(vectors):
        raise ValueError(f"a batch of {len(ids)} ids and {len(vectors)} vectors")
    return ids, vectors
