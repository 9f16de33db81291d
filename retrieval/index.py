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
from typing import Any

import faiss
import numpy as np

from .index_manifest import (  # noqa: F401  (re-exported: the index's public names)
    MANIFEST_NAME, IndexManifest, IndexMismatchError, _write_json_atomic, check_compatible, choose_factory,
    read_manifest, write_manifest,
)
from .index_build import (  # noqa: F401  (ivf_lists_for re-exported)
    Batch, Batches, StreamSample, auto_factory, ivf_lists_for, sample_rows,
)
from . import index_stream as _stream
from .index_stream import (  # noqa: F401  (re-exported)
    AUTO_EXACT_LIMIT, as_matrix as _as_matrix, resolve_factory,
    training_limit, training_sample as _training_sample,
)
from .tombstones import TOMBSTONES_NAME, Tombstones, TombstonedIdError, file_key  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

VIDEO_INDICES = ("video-frame", "video-speech")  # a video's keyframes and speech windows (retrieval.video)
INDEX_NAMES = ("image", "audio", "text", *VIDEO_INDICES)  # one FAISS index each, in data-dir/index/<name>
INDEX_NAME = "index.faiss"
HNSW_EF_SEARCH = 128
REFINE_K_FACTOR = 64
REFINE_SHORTLIST = REFINE_K_FACTOR * 10  # exact re-scoring of max(640, 2k) candidates (see _raw_search)
REFERENCE_SAMPLE = 2048  # vectors kept to calibrate multi-input scores (retrieval.fusion)


class ReadOnlyIndexError(RuntimeError):
    """A memory-mapped index cannot be changed (load it with ``mmap=False`` to write)."""


def ivf_nprobe_for(nlist: int) -> int:
    """Lists an IVF search visits: sqrt(nlist), at least 16 (all of them below 16). It was nlist/16, a fixed
    share: 790 lists and ~6% of the codes a query at 10M; sqrt keeps the scan sub-linear (112 of 12.6k lists,
    ~1%) and kept recall@10 at its plateau on clustered data (bench/index_10m.py's nprobe sweep)."""
    return max(1, min(nlist, max(16, math.isqrt(max(nlist, 1)))))


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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


# ---- building (streamed: the vectors never all in memory; retrieval.index_stream runs it) ----
def build_from_batches(batches: Batches, **kwargs: Any) -> "VectorIndex":
    """A :class:`VectorIndex` from ``batches()``, an iterable of (ids, vectors) batches that can be read twice in
    the same order (SQL keyset pages, a generator); keywords as :func:`retrieval.index_stream.build_from_batches`
    (``model``, ``checksums``, ``dim``, ``factory``, ``modality``, ``revision``, ``budget_bytes``, ``timings``)."""
    return _stream.build_from_batches(batches, new=VectorIndex, **kwargs)
