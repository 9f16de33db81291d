"""Serving at scale, side by side in one run: raw ``index.search`` vs our server by vector (``/api/search`` and
the clip-retrieval compatible ``/knn-service``) and by typed text.

**Synthetic data**: N text items (passages, 10 per synthetic file by default) whose vectors are generated,
not encoded, written into a fresh data
directory through the real schema and the repository API (``repo.upsert_file`` / ``repo.add_items``, one
transaction per batch, the bundled model recorded as the catalog's model), then indexed by the project's
own ``Catalog.rebuild_index`` (``auto``: exact below 200k vectors, fast-scan PQ + exact re-scoring above).
Two generators: ``random`` unit vectors (the hardest case) and ``clustered`` (unit vectors around 1,000
centres, which looks more like real embeddings). Queries are distinct random unit vectors (or, clustered,
perturbed stored vectors), so nothing is served from a cache; the files do not exist (metadata only).

It then starts the real ``python -m webui`` and measures, with a bounded loop of keep-alive connections on
127.0.0.1: p50/p99 latency, requests/s, server ÷ raw p50, memory per gunicorn worker (RssAnon: private; RssFile: the memory-mapped index, shared by the
workers; Pss: each shared page divided among its processes), recall@10 of the index against exact search. Not yet here (issue 14): clip-retrieval's own ``clip back`` on the same data, 32 clients.

    .venv/bin/python bench/serve_scale.py --items 100000 --out bench/results-serve-scale-100k.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from load_webui import percentile, start_server  # noqa: E402

DIM = 384
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vectors(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return unit(rng.standard_normal((n, DIM), dtype=np.float32))
    centres = unit(rng.standard_normal((1000, DIM), dtype=np.float32))
    return unit(centres[rng.integers(0, 1000, n)] + 0.08 * rng.standard_normal((n, DIM), dtype=np.float32))


def build(data_dir: Path, kind: str, n: int, per_file: int, batch: int = 5000) -> dict:
    """N synthetic text items (``per_file`` passages per file, as a long note's) through the repository API,
    then the index through ``Catalog.rebuild_index``."""
    from indexer import repository as repo
    from indexer.catalog import Catalog
    from retrieval.encoders import create_model

    model = create_model(None)
    if model.dim != DIM:
        raise SystemExit(f"the bundled model is {model.dim}-d; this bench writes {DIM}-d vectors")
    catalog = Catalog(data_dir)
    t0 = time.perf_counter()
    try:
        with catalog.session() as s:
            repo.set_model(s, model.name, model.checksums)
            s.commit()
        for start in range(0, n, batch):
            vecs = vectors(kind, min(batch, n - start), seed=1 + start)
            with catalog.session() as s:
                for first in range(0, len(vecs), per_file):
                    i = start + first
                    row = repo.upsert_file(s, path=f"/synthetic/{i:08d}.txt", file_id=None, modality="text",
                                           size=64 * per_file, mtime_ns=0, sha256=None, error=None)
                    repo.add_items(s, row.id, [repo.NewItem("text", vec, content=f"synthetic passage {i + j}")
                                               for j, vec in enumerate(vecs[first:first + per_file])])
                repo.bump_revision(s)
                s.commit()
            if start // batch % 10 == 0:
                log(f"wrote {start + len(vecs):,} items")
        written = time.perf_counter() - t0
        _, checksums, revision = catalog.state()
        t1 = time.perf_counter()
        index = catalog.rebuild_index("text", model.name, checksums, revision)
        return {"items": n, "items_per_file": per_file, "generator": kind, "write_s": round(written, 1),
                "index_build_s": round(time.perf_counter() - t1, 1), "factory": index.manifest.factory}
    finally:
        catalog.close()


def queries(kind: str, n: int, stored: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng(12345)
    if kind == "clustered" and stored is not None:
        return unit(stored[rng.integers(0, len(stored), n)] + 0.05 * rng.standard_normal((n, DIM), dtype=np.float32))
    return unit(rng.standard_normal((n, DIM), dtype=np.float32))


def summary(latencies: list[float], wall: float, errors: list[str], clients: int) -> dict:
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "requests": len(ms) + len(errors), "errors": len(errors),
            "req_per_s": round(len(ms) / wall, 1) if wall else None,
            "p50_ms": round(percentile(ms, 0.5), 2), "p99_ms": round(percentile(ms, 0.99), 2),
            "error_samples": errors[:3]}


def raw_level(index, qs: np.ndarray, k: int, clients: int) -> dict:
    """``VectorIndex.search`` of one query at a time from ``clients`` threads (FAISS releases the GIL)."""
    todo, lock, latencies = iter(range(len(qs))), threading.Lock(), []

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            t = time.perf_counter()
            index.search(qs[i:i + 1], k)
            with lock:
                latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - t0, [], clients)


def http_level(port: int, path: str, bodies: list[bytes], k: int, clients: int) -> dict:
    todo, lock, latencies, errors = iter(bodies), threading.Lock(), [], []
    gate = threading.Barrier(clients + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        gate.wait()
        while True:
            with lock:
                body = next(todo, None)
            if body is None:
                break
            t = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                elapsed = time.perf_counter() - t
                hits = data["hits"] if isinstance(data, dict) else data
                problem = None if resp.status == 200 and len(hits) == k else f"HTTP {resp.status}: {str(data)[:200]}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                elapsed, problem = 0.0, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                (errors.append(problem) if problem else latencies.append(elapsed))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - t0, errors, clients)


def worker_memory_mb(arbiter: int) -> list[dict]:
    """Per gunicorn worker: VmRSS split into RssAnon (private: the model, id maps, caches) and RssFile (mapped
    files: the memory-mapped indices, shared by every worker through the page cache), and Pss (RSS with each
    shared page divided among the processes mapping it: what one worker really costs)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != arbiter:
                continue
            status = dict(line.split(":", 1) for line in (stat.parent / "status").read_text().splitlines() if ":" in line)
            row = {k: round(int(status[k].split()[0]) / 1024, 1) for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}
            rollup = (stat.parent / "smaps_rollup").read_text().splitlines()
            pss = next((line for line in rollup if line.startswith("Pss:")), None)
            if pss:
                row["Pss"] = round(int(pss.split()[1]) / 1024, 1)
            out.append(row)
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return sorted(out, key=lambda r: r["VmRSS"])


def _stop(proc: subprocess.Popen) -> None:
    """A loaded machine may take long to stop gunicorn: never lose the result for it."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--generator", choices=["random", "clustered"], default="random")
    p.add_argument("--items-per-file", type=int, default=10, help="passages per synthetic file (default 10)")
    p.add_argument("--data-dir", type=Path, help="keep the synthetic data directory here (default: a temp dir)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    p.add_argument("--requests", type=int, default=200, help="requests per measured level")
    p.add_argument("--out", type=Path)
    p.add_argument("--no-copy-baseline", dest="copy_baseline", action="store_false",
                   help="skip the second server that copies the index into each worker (memory comparison)")
    args = p.parse_args()

    from retrieval.index import VectorIndex, exact_search

    tmp = Path(tempfile.mkdtemp(prefix="serve_scale_"))
    data_dir = args.data_dir or tmp / "data"
    proc = None
    try:
        info = data_dir / "serve_scale_build.json"  # how a kept --data-dir was built, for later runs' JSON
        if (data_dir / "index").is_dir():
            built = {**(json.loads(info.read_text()) if info.is_file() else {}), "reused": True}
        else:
            built = build(data_dir, args.generator, args.items, args.items_per_file)
            info.write_text(json.dumps(built))
        log(f"built: {built}")
        index = VectorIndex.load(data_dir / "index" / "text", mmap=True)  # as the server's workers load it
        stored = index.vectors(index.ids()[:: max(1, index.count // 20000)])
        levels_needed = 1 + 3 * len(args.ks) * len(args.clients)  # raw + 3 routes x ks x clients (+ 3 warm-ups of 20)
        qs = queries(args.generator, args.requests * levels_needed + 200, stored)
        sample = qs[:100]
        all_ids = index.ids()
        exact = exact_search(index.vectors(all_ids), all_ids, sample, 10)[1]
        approx = index.search(sample, 10)[1]
        recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]))
        load_before = round(os.getloadavg()[0], 2)
        raw = {f"k={k}": [raw_level(index, qs[:args.requests], k, c) for c in args.clients] for k in args.ks}
        log(f"raw: {json.dumps(raw)}")

        proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server.log")
        port = int(url.rsplit(":", 1)[1])
        pos = args.requests

        def bodies(kind: str, k: int, n: int = args.requests) -> list[bytes]:
            nonlocal pos
            chunk, pos = qs[pos:pos + n], pos + n
            if kind == "api_vector":
                return [json.dumps({"vector": q.tolist(), "target": "text", "k": k}).encode() for q in chunk]
            if kind == "knn_service":
                return [json.dumps({"embedding_input": q.tolist(), "modality": "text", "num_images": k,
                                    "num_result_ids": k, "indice_name": data_dir.name}).encode() for q in chunk]
            return [json.dumps({"text": f"synthetic query number {pos + i}", "target": "text", "k": k}).encode()
                    for i in range(len(chunk))]

        routes = {"api_vector": "/api/search", "knn_service": "/knn-service", "api_text": "/api/search"}
        for kind in routes:  # warm every worker: model, index, first requests
            http_level(port, routes[kind], bodies(kind, 10, 20), 10, args.workers * 2)
        server: dict = {}
        for kind, path in routes.items():
            for k in args.ks:
                levels = [http_level(port, path, bodies(kind, k), k, c) for c in args.clients]
                for level, raw_level_ in zip(levels, raw[f"k={k}"]):
                    level["server_over_raw_p50"] = round(level["p50_ms"] / max(raw_level_["p50_ms"], 1e-3), 2)
                server.setdefault(kind, {})[f"k={k}"] = levels
                log(f"{kind} k={k}: {json.dumps(levels)}")
        memory = worker_memory_mb(proc.pid)
        log(f"memory per worker (MB): {json.dumps(memory)}")
        copied = None
        if args.copy_baseline:  # the same server and warm-up with every worker copying the index (as before mmap)
            _stop(proc)
            os.environ["RETRIEVAL_INDEX_MMAP"] = "0"
            try:
                proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server-copy.log")
            finally:
                os.environ.pop("RETRIEVAL_INDEX_MMAP")
            port = int(url.rsplit(":", 1)[1])
            for kind in routes:
                http_level(port, routes[kind], bodies(kind, 10, 20), 10, args.workers * 2)
            copied = worker_memory_mb(proc.pid)
            log(f"memory per worker, index copied (MB): {json.dumps(copied)}")
        result = {
            "benchmark": "serve_scale: raw VectorIndex.search vs POST /api/search (vector, text) and /knn-service "
                         "(embedding_input) on synthetic vectors written through the repository API",
            "data": {**built, "dim": DIM, "count": index.count, "factory": index.manifest.factory,
                     "recall@10_vs_exact": round(recall, 4)},
            "server": {"command": f"python -m webui --workers {args.workers} --threads {args.threads}",
                       "rss_mb_per_worker": [w["VmRSS"] for w in memory],
                       "memory_mb_per_worker": memory,
                       "index_file_mb": round((data_dir / "index" / "text" / "index.faiss").stat().st_size / 2**20, 1),
                       "index_mapped_here": index.mapped,  # the workers load it the same way (webui.engine)
                       "memory_mb_per_worker_index_copied": copied,
                       "memory_note": "memory_mb_per_worker: after the measured levels, indices memory-mapped (the "
                                      "default); _index_copied: a second server on the same data with "
                                      "RETRIEVAL_INDEX_MMAP=0, after the same warm-up (20 requests per route)"},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m_before": load_before, "load_avg_1m_after": round(os.getloadavg()[0], 2)},
            "raw_index_search": raw, "http": server,
            "text_note": "api_text: typed queries, each distinct (encoded by the text tower; text->text has no "
                         "re-ranker, so none runs)",
            "total_errors": sum(level["errors"] for kinds in server.values() for ls in kinds.values() for level in ls),
        }
    finally:
        if proc is not None:
            _stop(proc)
        if args.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["total_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
