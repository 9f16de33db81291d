"""Deleting from a large index: tombstones + a small save vs rebuilding the whole index (issue 14 part 4).

At the level of :class:`retrieval.index.VectorIndex` (no data directory): ``N`` random 384-d unit vectors
(seeded) in the index ``auto`` builds at that size (``PQ192x4fs,RFlat`` above 200k, which cannot remove ids
in place), saved to a temporary folder. Then:

* ``delete``: remove 1, then 100, then 10,000 more ids and save after each step (time of ``remove`` and of
  ``save``, and whether ``index.faiss`` was rewritten: it must not be), against
* ``rebuild``: ``VectorIndex.build`` over the live vectors + ``save`` (what a deletion cost before);
* ``search``: single-query latency (p50/p99 ms, k=10) and recall@10 against exact search over the live
  vectors, with 0%, 1% and 10% of the vectors tombstoned (random ids, a fresh set after the deletions above),
  and ``adversarial``: queries whose 200 nearest live neighbours were just deleted (on top of the 10%: the
  search must retry with larger fetches).

Run from the repo root (about 3 GB of memory at the default N):

    OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python bench/delete_scale.py            # N = 300000
    .venv/bin/python bench/delete_scale.py --n 30000 --queries 30 --factory HNSW32       # a quick look

One JSON object is printed on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from retrieval.index import INDEX_NAME, VectorIndex, exact_search, resolve_factory  # noqa: E402
from retrieval.tombstones import TOMBSTONES_NAME, Tombstones  # noqa: E402

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def file_identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def build(ids: np.ndarray, x: np.ndarray, dim: int, factory: str) -> VectorIndex:
    return VectorIndex.build(ids, x, model="bench", checksums={}, dim=dim, factory=factory, modality="text")


def timed(index: VectorIndex, queries: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    """Milliseconds of each single-query search, and the ids found."""
    index.search(queries[:3], k)  # warm up
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, got = index.search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
        found.append(got[0])
    return times, np.stack(found)


def percentiles(times: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)])), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--factory", default="auto", help="as VectorIndex.build (default auto: by size)")
    p.add_argument("--rounds", type=int, default=3, help="search rounds, each timing 0%%, 1%% and 10%% in turn "
                   "(other load on the machine then weighs on all three alike)")
    args = p.parse_args()
    n, dim = args.n, args.dim
    rng = np.random.default_rng(0)
    x = unit(rng, n, dim)
    ids = np.arange(n, dtype=np.int64) + 1
    queries = unit(rng, args.queries, dim)
    out: dict = {"n": n, "dim": dim, "factory": resolve_factory(args.factory, n, dim), "queries": args.queries,
                 "faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
                 "machine": platform.machine(), "initial": {}, "delete": [], "rebuild": {}, "search": {}}

    with tempfile.TemporaryDirectory(prefix="delete_scale_") as tmp:
        folder = Path(tmp)
        log(f"building {out['factory']} over {n} x {dim}")
        t = time.perf_counter()
        index = build(ids, x, dim, args.factory)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        index.save(folder)
        out["initial"] = {"build_s": round(build_s, 2), "save_s": round(time.perf_counter() - t, 2),
                          "index_file_mb": round((folder / INDEX_NAME).stat().st_size / 2**20, 1)}
        log(f"built in {build_s:.1f}s")

        live = np.ones(n, dtype=bool)
        before = file_identity(folder / INDEX_NAME)
        for step in (1, 100, 10_000):
            victims = rng.choice(np.flatnonzero(live), step, replace=False)
            live[victims] = False
            t = time.perf_counter()
            removed = index.remove(ids[victims])
            remove_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            index.save(folder)
            save_ms = (time.perf_counter() - t) * 1000
            out["delete"].append({
                "ids": step, "removed": removed, "tombstones": int(n - live.sum()),
                "remove_ms": round(remove_ms, 2), "save_ms": round(save_ms, 2),
                "remove_plus_save_ms": round(remove_ms + save_ms, 2),
                "index_file_rewritten": file_identity(folder / INDEX_NAME) != before,
                "tombstone_file_kb": round(os.path.getsize(folder / TOMBSTONES_NAME) / 1024, 1)
                if (folder / TOMBSTONES_NAME).exists() else 0})
            log(f"deleted {step}: {out['delete'][-1]}")

        log("rebuilding from the live vectors (what every deletion cost before tombstones)")
        t = time.perf_counter()
        rebuilt = build(ids[live], x[live], dim, args.factory)
        rebuild_build_s = time.perf_counter() - t
        t = time.perf_counter()
        rebuilt.save(Path(tmp) / "rebuilt")
        out["rebuild"] = {"vectors": int(live.sum()), "build_s": round(rebuild_build_s, 2),
                          "save_s": round(time.perf_counter() - t, 2),
                          "total_s": round(time.perf_counter() - t + rebuild_build_s, 2)}
        del rebuilt
        log(f"rebuild: {out['rebuild']}")

        # search: fresh random tombstone sets (the 1% one inside the 10% one), timed in interleaved rounds
        dead10 = np.sort(rng.choice(ids, n // 10, replace=False))
        sets = {"0%": dead10[:0], "1%": np.sort(rng.choice(dead10, n // 100, replace=False)), "10%": dead10}
        times: dict[str, list[float]] = {name: [] for name in sets}
        for r in range(args.rounds):
            for name, dead in sets.items():
                index._dead = Tombstones(dead)  # bench-only: swap the tombstone set in place
                took, found = timed(index, queries)
                times[name] += took
                if r == 0:
                    keep = ~np.isin(ids, dead)
                    out["search"][name] = {"tombstones": len(dead), "recall@10": recall(
                        found, exact_search(x[keep], ids[keep], queries, 10)[1])}
        for name in sets:
            out["search"][name].update(percentiles(times[name]))
            log(f"search at {name}: {out['search'][name]}")

        index._dead, live[:] = Tombstones(dead10), ~np.isin(ids, dead10)
        hard = queries[:20]  # each loses its 200 nearest live neighbours
        near = exact_search(x[live], ids[live], hard, 200)[1]
        victims = np.unique(near.ravel())
        live[np.isin(ids, victims)] = False
        index.remove(victims)
        took, found = timed(index, hard)
        calls: list[int] = []
        raw = index._raw_search
        index._raw_search = lambda q, k: (calls.append(k), raw(q, k))[1]  # count the retries (bench-only peek)
        for q in hard:
            index.search(q[None, :], 10)
        index._raw_search = raw
        want = exact_search(x[live], ids[live], hard, 10)[1]
        out["search"]["adversarial"] = {**percentiles(took), "recall@10": recall(found, want), "queries": len(hard),
                                        "tombstones": int(n - live.sum()),
                                        "index_searches_per_query": round(len(calls) / len(hard), 2),
                                        "largest_fetch": max(calls)}
        log(f"adversarial: {out['search']['adversarial']}")
    out["total_s"] = round(time.perf_counter() - T0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
