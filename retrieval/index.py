"""FAISS vector index for one modality, with ids = SQL primary keys and a manifest.

One :class:`VectorIndex` per item modality. Vectors are unit float32 rows and the
metric is inner product (= cosine). The factory string picks the structure:
``"Flat"`` (exact, the default for small collections), ``"IVF1024,Flat"``,
``"HNSW32"``, ... or ``"auto"`` which picks by collection size. Every index is
wrapped in ``IndexIDMap2`` so ids are the database's primary keys.

On disk an index is a folder holding ``index.faiss``, ``manifest.json`` (model, checksums, dim, metric,
factory, live count, revision) and ``tombstones.npy`` while removed ids are still stored. Each is written
atomically (temp file + rename), the manifest last, so a crash in between leaves a manifest whose ``revision``
no longer matches the database and the caller rebuilds from the stored embeddings. ``index.faiss`` is
rewritten only when its vectors changed: a delete-only save writes the tombstones and the manifest.

**Removal**: ``Flat`` and ``SQ…`` indices remove ids in place; HNSW, IVF and refined ``…,RFlat`` ones (what
``auto`` builds above 200k) keep *tombstones* that every read leaves out (:mod:`retrieval.tombstones`: how
search still returns the live top-k, and when the indexer compacts).

When faiss sees a GPU (faiss-gpu builds), search runs on it; the saved file is
always the CPU form.

**Memory-mapped loading** (``VectorIndex.load(folder, mmap=True)``, what read-only consumers use: web workers,
``retrieval search``): the file is read with ``faiss.IO_FLAG_MMAP_IFC``, so the bulk of the index stays in the
page cache and several gunicorn workers share one copy instead of each holding its own. What faiss 1.15.1 maps
(checked per kind in ``tests/test_index_mmap.py``, RSS measured there):

* ``Flat``, ``SQfp16``/``SQ8`` (``IndexFlatCodes``): the codes — everything but the id map;
* ``PQ{m}x4fs,RFlat`` (``auto`` above 200k): the exact re-scoring vectors (the ``RFlat`` part, ~94% of the
  file at 384-d); the fast-scan PQ codes (an ``AlignedTable``, dim/2 bytes per vector) are copied;
* ``HNSW``: the neighbour lists and the stored vectors; levels/offsets (~12 B per vector) are copied;
* ``IVF…``: the inverted lists' codes and ids (``ArrayInvertedLists``); centroids are copied.

Never mapped: ``IndexIDMap2``'s id map and its reverse map (built at load, ~50 B per vector of private memory).
A faiss without ``IO_FLAG_MMAP_IFC``, or a file it cannot map, falls back to a normal read
(``VectorIndex.mapped`` says which); ``RETRIEVAL_INDEX_MMAP=0`` in the environment turns mapping off (every
reader copies the index into its own memory, as before; e.g. for an index on a slow network file system). A mapped index is read-only: faiss aborts the process on a write into a
mapped vector, so :meth:`VectorIndex.add` and :meth:`VectorIndex.remove` refuse it with
:class:`ReadOnlyIndexError` first; the indexer (the one writer) loads ordinary copies. Saves replace the file by
rename, never in place, so a mapping of the old file stays valid (its inode lives until the last mapping goes)
and the next load maps the new file.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from .index_manifest import (  # noqa: F401  (re-exported: the index's public names)
    MANIFEST_NAME, IndexManifest, IndexMismatchError, _write_json_atomic, check_compatible, choose_factory,
    read_manifest, write_manifest,
)
from .index_build import (  # noqa: F401  (ivf_lists_for re-exported)
    Batch, Batches, StreamSample, auto_factory, ivf_lists_for, sample_rows,
)
from . import index_build as _plan  # its ONE_PASS_ROWS read at build time (tests change it)
from .tombstones import TOMBSTONES_NAME, Tombstones, TombstonedIdError, file_key  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

VIDEO_INDICES = ("video-frame", "video-speech")  # a video's keyframes and speech windows (retrieval.video)
INDEX_NAMES = ("image", "audio", "text", *VIDEO_INDICES)  # one FAISS index each, in data-dir/index/<name>
INDEX_NAME = "index.faiss"
AUTO_EXACT_LIMIT = 200_000
HNSW_EF_SEARCH = 128
REFINE_K_FACTOR = 64
REFINE_SHORTLIST = REFINE_K_FACTOR * 10  # exact re-scoring of max(640, 2k) candidates (see _raw_search)
REFERENCE_SAMPLE = 2048  # vectors kept to calibrate multi-input scores (retrieval.fusion)


class ReadOnlyIndexError(RuntimeError):
    """A memory-mapped index cannot be changed (load it with ``mmap=False`` to write)."""


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


def ivf_nprobe_for(nlist: int) -> int:
    """Lists an IVF search visits: sqrt(nlist), at least 16 (all of them below 16). It was nlist/16, a fixed
    share: 790 lists and ~6% of the codes a query at 10M; sqrt keeps the scan sub-linear (112 of 12.6k lists,
    ~1%) and kept recall@10 at its plateau on clustered data (bench/index_10m.py's nprobe sweep)."""
    return max(1, min(nlist, max(16, math.isqrt(max(nlist, 1)))))


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


TRAIN_POINTS_PER_LIST = 64
MAX_TRAIN_POINTS = 256_000
GPU_MAX_K = 2048  # faiss GPU indices answer at most this many hits per query: larger fetches search on the CPU


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 ids."""

    def __init__(self, manifest: IndexManifest, index: faiss.Index | None = None, mapped: bool = False) -> None:
        self.manifest = manifest
        self._cpu = index if index is not None else self._empty(manifest.factory, manifest.dim)
        self.mapped = mapped  # read with IO_FLAG_MMAP_IFC: its codes live in the file's pages (read-only)
        self._gpu: faiss.Index | None = None
        self._reference: np.ndarray | None = None
        self._lock = threading.Lock()
        self._dead = Tombstones()  # ids removed but still stored (indices without remove_ids)
        self._version = 0  # bumped when the FAISS index itself changes (add, remove_ids)
        self._disk: tuple | None = None  # (version, index file key) of the file this index was loaded/saved as

    # ---- construction -------------------------------------------------
    @staticmethod
    def _empty(factory: str, dim: int) -> faiss.Index:
        return faiss.index_factory(dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        model: str,
        checksums: dict[str, str],
        dim: int,
        factory: str = "auto",
        modality: str = "",
        revision: int = 0,
    ) -> "VectorIndex":
        """Build a fresh index over ``vectors`` (N, dim) with ``ids`` (N,).

        ``factory`` ``"auto"`` picks by size (:func:`resolve_factory`) and is re-chosen whenever the
        collection is rebuilt; any other string is recorded as the user's choice and kept by later runs."""

        vectors = _as_matrix(vectors, dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        return build_from_batches(lambda: iter([(ids, vectors)]), model=model, checksums=checksums, dim=dim,
                                  factory=factory, modality=modality, revision=revision)

    def _tune(self) -> None:
        inner = faiss.downcast_index(self._cpu.index)
        if isinstance(inner, faiss.IndexRefine):
            inner.k_factor = max(inner.k_factor, REFINE_K_FACTOR)
        elif isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = max(inner.hnsw.efSearch, HNSW_EF_SEARCH)
        ivf = faiss.try_extract_index_ivf(self._cpu.index)  # also under OPQ (IndexPreTransform) or a refine
        if ivf is not None:
            ivf.nprobe = ivf_nprobe_for(ivf.nlist)

    # ---- mutation -----------------------------------------------------
    @property
    def count(self) -> int:
        """Live vectors: those stored minus tombstones."""
        return int(self._cpu.ntotal) - len(self._dead)

    @property
    def supports_remove(self) -> bool:
        """Every index can remove ids: in place (:attr:`removes_in_place`) or by tombstones."""
        return True

    @property
    def removes_in_place(self) -> bool:
        # IVF removes without renumbering its entries while IndexIDMap2 compacts its id map as if it did, so
        # later searches returned other items' ids; HNSW and IndexRefine have no remove_ids: tombstones instead
        f = self.manifest.factory.upper()
        return not (f.startswith("HNSW") or "RFLAT" in f or "REFINE" in f or "IVF" in f)

    @property
    def tombstones(self) -> np.ndarray:
        return self._dead.ids.copy()  # sorted ids removed but still stored

    @property
    def dead_fraction(self) -> float:
        return len(self._dead) / max(int(self._cpu.ntotal), 1)  # tombstones over stored vectors

    @property
    def is_trained(self) -> bool:
        return bool(self._cpu.is_trained)

    def _check_writable(self) -> None:
        if self.mapped:
            raise ReadOnlyIndexError(
                f"the {(self.manifest.modality + ' ') if self.manifest.modality else ''}index is memory-mapped "
                "(read-only); load it with VectorIndex.load(folder, mmap=False) to change it")

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._check_writable()
        if not self._cpu.is_trained:
            raise RuntimeError(
                f"index '{self.manifest.factory}' is not trained; rebuild it with VectorIndex.build"
            )
        ids = np.asarray(ids, dtype=np.int64)
        self._dead.refuse(ids, TombstonedIdError, f"removed from the {self.manifest.modality or ''} index, ids are "
                          "never reused: rebuild the index instead of adding them again")
        self._cpu.add_with_ids(_as_matrix(vectors, self.manifest.dim), ids)
        self._version += 1
        self._gpu = self._reference = None
        self._sync_manifest()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (in place, or as tombstones where the index cannot); returns how many were live."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if len(ids) == 0:
            return 0
        self._check_writable()
        with self._lock:
            if self.removes_in_place:
                removed = int(self._cpu.remove_ids(ids))
                self._version += 1
                self._gpu = None
            else:
                removed = self._dead.bury(ids, self._all_ids())
        self._reference = None
        self._sync_manifest()
        return removed

    def _sync_manifest(self) -> None:
        self.manifest.count = self.count
        self.manifest.extra = self._dead.record(self.manifest.extra)

    def _all_ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._cpu.id_map).astype(np.int64, copy=False)

    def ids(self) -> np.ndarray:
        """The live ids in the index (order of insertion)."""
        return self._dead.live(self._all_ids())

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (M, dim), as the index holds them (decoded if compressed).

        Exact for Flat, HNSW and refined (``RFlat``) indices; PQ/SQ codes decode to
        approximations. IVF indices get a direct map (id -> list slot) on first use.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.zeros((0, self.manifest.dim), dtype=np.float32)
        self._dead.refuse(ids, KeyError, f"ids not in the {(self.manifest.modality + ' ') if self.manifest.modality else ''}index")
        with self._lock:
            ivf = faiss.try_extract_index_ivf(self._cpu.index)
            if ivf is not None and ivf.direct_map.no():
                ivf.make_direct_map(True)
            try:
                return np.asarray(self._cpu.reconstruct_batch(ids), dtype=np.float32)
            except RuntimeError as exc:
                known = set(self.ids().tolist())
                missing = [int(i) for i in ids if int(i) not in known]
                if missing:
                    raise KeyError(f"ids not in the {(self.manifest.modality + ' ') if self.manifest.modality else ''}index: {missing[:5]}") from None
                raise RuntimeError(f"the '{self.manifest.factory}' index cannot return stored vectors ({exc})") from None

    def reference_sample(self, size: int = REFERENCE_SAMPLE) -> np.ndarray:
        """Up to ``size`` stored vectors, a fixed (seeded) sample of the collection, kept until it changes."""
        ref = self._reference
        if ref is None or len(ref) != min(size, self.count):
            ids = self.ids()
            if len(ids) > size:
                ids = np.sort(np.random.default_rng(0).choice(ids, size, replace=False))
            ref = self.vectors(ids)
            self._reference = ref
        return ref

    # ---- search -------------------------------------------------------
    def _searchable(self) -> faiss.Index:
        if _gpu_available() and self._gpu is None:
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self._cpu)
            except RuntimeError:  # structure without a GPU implementation (e.g. HNSW)
                self._gpu = self._cpu
        return self._gpu if self._gpu is not None else self._cpu

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1."""
        queries = _as_matrix(queries, self.manifest.dim)
        k = max(1, min(int(k), max(self.count, 1)))
        if self.count == 0:
            n = len(queries)
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        return self._dead.search(self._raw_search, queries, k, int(self._cpu.ntotal))

    def _raw_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > REFINE_SHORTLIST // REFINE_K_FACTOR and isinstance(faiss.downcast_index(self._cpu.index), faiss.IndexRefine):
            # re-score max(640, 2k) candidates, not 64k: the top 10 of any k sees the same 640 (recall@10 0.995
            # at 1M), and a hybrid pool of 1,000 costs 7.5 ms instead of 36.5 (recall@100 at k=100: 0.90, was
            # 0.9997 with 6,400 candidates for 10.8 instead of 7.1 ms)
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = max(REFINE_SHORTLIST, 2 * k) / k
            return self._cpu.search(queries, k, params=params)
        return (self._searchable() if k <= GPU_MAX_K else self._cpu).search(queries, k)

    # ---- persistence --------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the index file (unless ``folder`` holds this very state), the tombstones, then the manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index_path = folder / INDEX_NAME
        if self._disk != (self._version, file_key(index_path)):
            tmp_index = folder / (INDEX_NAME + ".tmp")
            faiss.write_index(self._cpu, str(tmp_index))
            os.replace(tmp_index, index_path)
            self._disk = (self._version, file_key(index_path))
        self._dead.save(folder)
        self._sync_manifest()
        _write_json_atomic(folder / MANIFEST_NAME, asdict(self.manifest))

    @classmethod
    def load(cls, folder: Path, mmap: bool = False) -> "VectorIndex":
        """The saved index in ``folder``; ``mmap``: memory-mapped and read-only (see the module docstring), for
        processes that only search; falls back to a normal read where faiss cannot map the file."""
        folder = Path(folder)
        index_path = folder / INDEX_NAME
        for _ in range(3):  # again if a compaction renamed a new index file (and dropped tombstones) meanwhile
            manifest, key = read_manifest(folder), file_key(index_path)
            if key is None:
                raise FileNotFoundError(f"{index_path} is missing; run `python -m indexer rebuild`")
            index, mapped = _read_index(index_path, mmap)
            dead = Tombstones.load(folder, manifest.extra)
            if file_key(index_path) == key:
                break
        else:
            raise RuntimeError(f"{index_path} kept changing while it was read")
        vi = cls(manifest, index, mapped=mapped)
        vi._tune()
        vi._set_dead(dead)
        vi._disk = (vi._version, key)
        return vi

    def with_tombstones_of(self, folder: Path) -> "VectorIndex":
        """This index (the same FAISS object: a mapped one shares its pages) with ``folder``'s manifest and
        tombstones: what a reader loads when only the tombstone file changed since it read ``index.faiss``."""
        manifest = read_manifest(folder)
        vi = VectorIndex(manifest, self._cpu, mapped=self.mapped)
        vi._gpu, vi._lock, vi._version, vi._disk = self._gpu, self._lock, self._version, self._disk
        vi._set_dead(Tombstones.load(folder, manifest.extra))
        return vi

    def _set_dead(self, dead: Tombstones) -> None:
        if len(dead):
            dead.keep_stored(self._all_ids())
        self._dead, self._reference = dead, None
        self._sync_manifest()

    def check_model(self, model: str, checksums: dict[str, str]) -> None:
        """Refuse queries from another model than the one this index was built with."""
        check_compatible(self.manifest, model, checksums)


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force ground truth (for tests and benchmarks)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    scores, pos = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, np.where(pos >= 0, np.asarray(ids)[pos], -1)


MMAP_FLAG = getattr(faiss, "IO_FLAG_MMAP_IFC", None)  # absent from older faiss builds: normal reads there
MMAP_ENV = "RETRIEVAL_INDEX_MMAP"  # "0": never map (read-only loads copy the file, as writable ones do)


def _read_index(path: Path, mmap: bool) -> tuple[faiss.Index, bool]:
    """(index, whether it is memory-mapped)."""
    if mmap and MMAP_FLAG is not None and os.environ.get(MMAP_ENV, "1") != "0":
        try:
            return faiss.read_index(str(path), MMAP_FLAG), True
        except RuntimeError as exc:  # e.g. a file system without mmap: a private copy still serves
            log.warning("cannot memory-map %s (%s); reading it into memory", path, exc)
    return faiss.read_index(str(path)), False


def _training_sample(vectors: np.ndarray, factory: str) -> np.ndarray:
    """At most 64 points per IVF list (and 256k overall): k-means on all 1M rows took minutes. A seeded uniform
    sample, the same rows the streaming build keeps (:func:`retrieval.index_build.sample_rows`)."""
    rows = sample_rows(len(vectors), training_limit(factory, vectors.shape[1]))
    return vectors if rows is None else vectors[rows]


def _as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {x.shape}")
    return x


# ---- building (streamed: the vectors never all in memory; retrieval.index_build plans) ----
def training_limit(factory: str, dim: int) -> int:
    """How many vectors train ``factory``: ``TRAIN_POINTS_PER_LIST`` per IVF list, ``MAX_TRAIN_POINTS`` at most
    (k-means on all 1M rows took minutes)."""
    inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(inner)
    return min(MAX_TRAIN_POINTS, TRAIN_POINTS_PER_LIST * ivf.nlist) if ivf is not None else MAX_TRAIN_POINTS


def build_from_batches(
    batches: Batches,
    *,
    model: str,
    checksums: dict[str, str],
    dim: int,
    factory: str = "auto",
    modality: str = "",
    revision: int = 0,
    budget_bytes: int | None = None,
    timings: dict[str, float] | None = None,
) -> "VectorIndex":
    """Build a :class:`~retrieval.index.VectorIndex` from ``batches()``, an iterable of (ids, vectors) batches
    that can be read twice in the same order; the result equals :meth:`VectorIndex.build` of their
    concatenation. ``timings``, if given, receives ``scan_s``, ``train_s``, ``add_s`` (seconds)."""
    import time

    t0 = time.perf_counter()
    n = added = 0
    index = None
    if factory != "auto" and "{n}" not in factory:  # a typed factory that needs no training (Flat, HNSW...)
        index = _new_index(factory, factory, model=model, checksums=checksums, dim=dim, modality=modality,
                           revision=revision)
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
        index = _new_index(factory, concrete, model=model, checksums=checksums, dim=dim, modality=modality,
                           revision=revision)
        t1 = time.perf_counter()
        if not index._cpu.is_trained:  # IVF, PQ, SQ8, ...: train on the sample
            if n == 0:
                index.manifest.factory = "Flat"
                index._cpu = VectorIndex._empty("Flat", dim)
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


def _new_index(requested: str, concrete: str, **manifest: object) -> "VectorIndex":
    m = IndexManifest(factory=concrete, **manifest)  # type: ignore[arg-type]
    m.checksums = dict(m.checksums)
    m.set_user_factory(requested)
    return VectorIndex(m)


def _batch(ids: np.ndarray, vectors: np.ndarray, dim: int) -> Batch:
    vectors = _as_matrix(vectors, dim)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(vectors):
        raise ValueError(f"a batch of {len(ids)} ids and {len(vectors)} vectors")
    return ids, vectors
