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
workers; Pss: each shared page divided among its processes), recall@10 of the index against exact search;
hybrid (keywords + vectors) typed queries and ``GET /api/stats``. Each passage's text is 12 pseudo-words drawn
from a Zipf law over a 50,000-word vocabulary (a hybrid query's 3 words then hit a few to ~100k passages each,
as real words do); typed queries are 3 such words.

**The peer in the same run** (``--no-peer`` to skip): clip-retrieval 2.45.0's ``clip back`` (bench/peer_clip_back.py,
in its own venv under ``~/.cache/retrieval-bench``, made here on first use with pip; never in requirements.txt) serves the
same vectors, in the same order, with the same captions as Arrow metadata (its fastest provider) and the index
its own builder (``clip-retrieval index``, autofaiss) chose; it answers the same ``/knn-service`` bodies at the
same k and clients, one level after ours, and its recall@10 against exact search is measured the same way.

    .venv/bin/python bench/serve_scale.py --items 1000000 --out bench/results-serve-scale-1m.json

**The catalog on Postgres**: ``--postgres`` writes the same items into a fresh database on the real server
(``--pg-admin-url``, default ``postgresql://postgres@127.0.0.1:5432/postgres``; the database is named after the data
directory and kept with it, so a kept ``--data-dir`` reuses both) and runs the server on it through
``DATABASE_URL``, exactly as a user's Postgres catalog runs; the JSON's ``data.catalog`` says which.

    .venv/bin/python bench/serve_scale.py --items 1000000 --postgres --no-peer --out bench/results-serve-scale-1m-pg.json
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
_END = object()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


VOCAB = 50_000
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70: pseudo-words of 2-4 syllables


def word(rank: int) -> str:
    """The vocabulary's word of ``rank`` (0 = the most frequent): distinct, pronounceable, no real English."""
    out, r = [], rank + 70
    while r:
        r, d = divmod(r, 70)
        out.append(_SYLLABLES[d])
    return "".join(out)


def passages(n: int, seed: int, words: int = 12) -> list[str]:
    ranks = np.random.default_rng(seed).zipf(1.1, (n, words)) - 1
    return [" ".join(word(int(r) % VOCAB) for r in row) for row in ranks]


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
    from indexer.db import analyze_if_stale
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
            texts = passages(len(vecs), seed=1 + start)
            with catalog.session() as s:
                for first in range(0, len(vecs), per_file):
                    i = start + first
                    row = repo.upsert_file(s, path=f"/synthetic/{i:08d}.txt", file_id=None, modality="text",
                                           size=64 * per_file, mtime_ns=0, sha256=None, error=None)
                    repo.add_items(s, row.id, [repo.NewItem("text", vec, content=texts[first + j])
                                               for j, vec in enumerate(vecs[first:first + per_file])])
                repo.bump_revision(s)
                s.commit()
            if start // batch % 10 == 0:
                log(f"wrote {start + len(vecs):,} items")
        written = time.perf_counter() - t0
        analyzed = analyze_if_stale(catalog.engine)  # what `indexer add` does at the end of a run (Postgres)
        _, checksums, revision = catalog.state()
        t1 = time.perf_counter()
        index = catalog.rebuild_index("text", model.name, checksums, revision)
        return {"items": n, "items_per_file": per_file, "generator": kind, "write_s": round(written, 1),
                "index_build_s": round(time.perf_counter() - t1, 1), "factory": index.manifest.factory,
                "planner_statistics_refreshed": analyzed}
    finally:
        catalog.close()


def postgres_catalog(admin_url: str, data_dir: Path, fresh: bool) -> str:
    """The SQLAlchemy URL of the Postgres database that holds ``data_dir``'s catalog; ``fresh``: (re)create it."""
    import hashlib

    import psycopg

    name = "serve_scale_" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if fresh or not exists:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


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


def http_level(port: int, path: str, bodies: list[bytes | None], k: int | None, clients: int,
               max_s: float = 60.0) -> dict:
    """``bodies`` POSTed to ``path`` (None: a GET) by ``clients`` keep-alive connections; an answer counts when it
    is a 200 with ``k`` hits (``k`` None: any 200)."""
    todo, lock, latencies, errors = iter(bodies), threading.Lock(), [], []
    gate = threading.Barrier(clients + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        gate.wait()
        while time.perf_counter() < stop_at:
            with lock:
                body = next(todo, _END)
            if body is _END:
                break
            t = time.perf_counter()
            try:
                if body is None:
                    conn.request("GET", path)
                else:
                    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                elapsed = time.perf_counter() - t
                if k is None:
                    ok = resp.status == 200
                else:
                    hits = data["hits"] if isinstance(data, dict) else data
                    ok = resp.status == 200 and len(hits) == k
                problem = None if ok else f"HTTP {resp.status}: {str(data)[:200]}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                elapsed, problem = 0.0, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                (errors.append(problem) if problem else latencies.append(elapsed))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    stop_at = time.perf_counter() + 3600  # set when the clients start: a slow route stops after max_s
    for t in threads:
        t.start()
    stop_at = time.perf_counter() + max_s
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - t0, errors, clients)


PEER = "clip-retrieval==2.45.0"
PEER_VENV = Path.home() / ".cache" / "retrieval-bench" / "clip-retrieval-2.45.0"


def peer_python() -> Path:
    """The peer's own venv (made on first use: ``pip install clip-retrieval==2.45.0``; its ``clip`` dependency
    still imports ``pkg_resources``, which setuptools 81 dropped)."""
    py = PEER_VENV / "bin" / "python"
    probe = [str(py), "-c", "import clip_retrieval.clip_back, pkg_resources"]
    if not py.is_file() or subprocess.run(probe, capture_output=True).returncode != 0:
        log(f"installing {PEER} into its own venv {PEER_VENV} (a few minutes, once)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PEER, "setuptools<81"],
                       check=True)
    return py


def prepare_peer(data_dir: Path, index) -> tuple[Path, np.ndarray, dict]:
    """The peer's folder for this data directory: the same vectors (row i = the i-th id) and captions, its index
    built by its own builder (kept with a kept --data-dir). Returns (folder, ids by row, build info)."""
    from sqlalchemy import select

    from indexer.catalog import Catalog
    from indexer.models import File, Item

    peer_dir = data_dir / "peer"
    ids = np.sort(index.ids())
    info = peer_dir / "index" / "prepare.json"
    if not info.is_file():
        shutil.rmtree(peer_dir, ignore_errors=True)
        peer_dir.mkdir(parents=True)
        np.save(peer_dir / "emb.npy", np.concatenate([index.vectors(ids[i:i + 100_000])
                                                      for i in range(0, len(ids), 100_000)]))
        catalog = Catalog(data_dir, migrate=False)
        try:
            with catalog.session() as s, open(peer_dir / "captions.txt", "w") as out:
                rows = s.execute(select(Item.id, File.path, Item.content).join(File, File.id == Item.file_id)
                                 .where(Item.modality == "text").order_by(Item.id))
                got = 0
                for (item_id, path, content), expected in zip(rows, ids):
                    if item_id != expected:
                        raise SystemExit(f"catalog item {item_id} where the index holds {expected}: rebuild the index")
                    out.write(f"{path}\t{(content or '').replace(chr(10), ' ')}\n")
                    got += 1
        finally:
            catalog.close()
        log(f"peer: building its index over {got:,} vectors with clip-retrieval's own builder (autofaiss)")
        subprocess.run([str(peer_python()), str(REPO / "bench" / "peer_clip_back.py"), "prepare",
                        str(peer_dir / "emb.npy"), str(peer_dir / "captions.txt"), str(peer_dir)], check=True,
                       stdout=open(peer_dir / "prepare.log", "wb"), stderr=subprocess.STDOUT)
        (peer_dir / "emb.npy").unlink()
    built = json.loads(info.read_text())
    chosen = json.loads((peer_dir / "index" / "text.json").read_text())
    return peer_dir, ids, {**built, "index_key": chosen.get("index_key"), "index_param": chosen.get("index_param"),
                           "index_file_mb": round((peer_dir / "index" / "text.index").stat().st_size / 2**20, 1)}


def start_peer(peer_dir: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    from load_webui import free_port

    port = free_port()
    proc = subprocess.Popen([str(peer_python()), str(REPO / "bench" / "peer_clip_back.py"), "serve", str(peer_dir),
                             str(port)], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    deadline = time.perf_counter() + 900
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clip back exited ({proc.returncode}); see {log_path}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/indices-list")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(1)
    raise SystemExit(f"clip back did not answer within 900 s; see {log_path}")


def process_memory_mb(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(status[k].split()[0]) / 1024, 1) for k in ("VmRSS", "RssAnon", "RssFile")}


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
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    p.add_argument("--requests", type=int, default=200, help="requests per measured level (each also stops after --max-s)")
    p.add_argument("--max-s", type=float, default=30.0, help="seconds per measured level at most (default 30)")
    p.add_argument("--out", type=Path)
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip clip-retrieval's clip back")
    p.add_argument("--no-copy-baseline", dest="copy_baseline", action="store_false",
                   help="skip the second server that copies the index into each worker (memory comparison)")
    p.add_argument("--postgres", action="store_true", help="the catalog on the real Postgres server, not SQLite")
    p.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="where --postgres creates its database (default: the local server)")
    args = p.parse_args()

    from retrieval.index import VectorIndex, exact_search

    tmp = Path(tempfile.mkdtemp(prefix="serve_scale_"))
    data_dir = args.data_dir or tmp / "data"
    proc = peer = None
    try:
        info = data_dir / "serve_scale_build.json"  # how a kept --data-dir was built, for later runs' JSON
        reuse = (data_dir / "index").is_dir()
        if args.postgres:  # the server inherits the environment: its workers read the same catalog
            os.environ["DATABASE_URL"] = postgres_catalog(args.pg_admin_url, data_dir, fresh=not reuse)
        if reuse:
            built = {**(json.loads(info.read_text()) if info.is_file() else {}), "reused": True}
        else:
            built = build(data_dir, args.generator, args.items, args.items_per_file)
            info.write_text(json.dumps(built))
        log(f"built: {built}")
        index = VectorIndex.load(data_dir / "index" / "text", mmap=True)  # as the server's workers load it
        peer_info = None
        if args.peer:
            peer_dir, peer_ids, peer_info = prepare_peer(data_dir, index)
            log(f"peer index: {peer_info}")
        stored = index.vectors(index.ids()[:: max(1, index.count // 20000)])
        per_level = len(args.ks) * len(args.clients)
        qs = queries(args.generator, args.requests * (1 + 3 * per_level) + 400, stored)
        sample = qs[:100]
        all_ids = index.ids()
        exact = exact_search(index.vectors(all_ids), all_ids, sample, 10)[1]
        approx = index.search(sample, 10)[1]
        recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]))
        load_before = round(os.getloadavg()[0], 2)
        raw = {f"k={k}": [raw_level(index, qs[:args.requests], k, c) for c in args.clients] for k in args.ks}
        log(f"raw: {json.dumps(raw)}")
        encode_ms = typed_encode_ms()
        log(f"text tower, one query: p50 {encode_ms} ms")

        proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server.log")
        port = int(url.rsplit(":", 1)[1])
        pos = args.requests
        words = np.random.default_rng(7)

        def bodies(kind: str, k: int, n: int = args.requests) -> list[bytes | None]:
            nonlocal pos
            if kind in ("api_vector", "knn_service", "peer_knn"):
                chunk, pos = qs[pos:pos + n], (pos + n) % (len(qs) - n)
                if kind == "api_vector":
                    return [json.dumps({"vector": q.tolist(), "target": "text", "k": k}).encode() for q in chunk]
                name = "peer" if kind == "peer_knn" else data_dir.name
                return [json.dumps({"embedding_input": q.tolist(), "modality": "text", "num_images": k,
                                    "num_result_ids": k, "indice_name": name}).encode() for q in chunk]
            if kind == "stats":
                return [None] * n
            text = [" ".join(word(int(r) % VOCAB) for r in words.zipf(1.1, 3) - 1) for _ in range(n)]
            return [json.dumps({"text": t, "target": "text", "k": k, **({"hybrid": True} if kind == "api_hybrid" else {})}
                               ).encode() for t in text]

        routes = {"api_vector": "/api/search", "knn_service": "/knn-service", "api_text": "/api/search",
                  "api_hybrid": "/api/search"}
        for kind in routes:  # warm every worker: model, index, first requests
            http_level(port, routes[kind], bodies(kind, 10, 20), 10, args.workers * 2)
        server: dict = {}
        for kind, path in routes.items():
            for k in args.ks:
                levels = [http_level(port, path, bodies(kind, k), k, c, args.max_s) for c in args.clients]
                for level, raw_level_ in zip(levels, raw[f"k={k}"]):
                    level["server_over_raw_p50"] = round(level["p50_ms"] / max(raw_level_["p50_ms"], 1e-3), 2)
                    if kind == "api_text":  # what a typed query cannot avoid: encode it, then search
                        level["server_over_encode_plus_raw_p50"] = round(
                            level["p50_ms"] / max(raw_level_["p50_ms"] + encode_ms, 1e-3), 2)
                server.setdefault(kind, {})[f"k={k}"] = levels
                log(f"{kind} k={k}: {json.dumps(levels)}")
        server["stats"] = [http_level(port, "/api/stats", bodies("stats", 0), None, c, args.max_s)
                           for c in args.clients[:2]]
        log(f"stats: {json.dumps(server['stats'])}")
        memory = worker_memory_mb(proc.pid)
        log(f"memory per worker (MB): {json.dumps(memory)}")
        _stop(proc)
        proc = None
        copied = None
        if args.copy_baseline:  # the same server and warm-up with every worker copying the index (as before mmap)
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
            _stop(proc)
            proc = None
        peer_result = None
        if args.peer:
            peer, peer_port = start_peer(peer_dir, tmp / "peer.log")
            http_level(peer_port, "/knn-service", bodies("peer_knn", 10, 20), 10, 4)
            got = []
            for q in sample:  # its recall: rows -> our ids
                conn = http.client.HTTPConnection("127.0.0.1", peer_port, timeout=60)
                conn.request("POST", "/knn-service", body=json.dumps(
                    {"embedding_input": q.tolist(), "modality": "text", "num_images": 10, "num_result_ids": 10,
                     "indice_name": "peer"}).encode(), headers={"Content-Type": "application/json"})
                got.append([int(peer_ids[h["id"]]) for h in json.loads(conn.getresponse().read())])
                conn.close()
            peer_recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(got, exact)]))
            peer_levels = {}
            for k in args.ks:
                levels = [http_level(peer_port, "/knn-service", bodies("peer_knn", k), k, c, args.max_s)
                          for c in args.clients]
                for level, ours, raw_level_ in zip(levels, server["knn_service"][f"k={k}"], raw[f"k={k}"]):
                    level["server_over_our_raw_p50"] = round(level["p50_ms"] / max(raw_level_["p50_ms"], 1e-3), 2)
                    level["ours_over_peer_p50"] = round(ours["p50_ms"] / max(level["p50_ms"], 1e-3), 2)
                    level["ours_over_peer_req_per_s"] = round((ours["req_per_s"] or 0) / max(level["req_per_s"] or 0, 1e-3), 2)
                peer_levels[f"k={k}"] = levels
                log(f"peer knn k={k}: {json.dumps(levels)}")
            peer_result = {"command": "clip_back(enable_faiss_memory_mapping=True, use_arrow=True) "
                                      "(bench/peer_clip_back.py serve)",
                           "version": PEER, "index": peer_info, "recall@10_vs_exact": round(peer_recall, 4),
                           "memory_mb": process_memory_mb(peer.pid), "knn_service": peer_levels}
        result = {
            "benchmark": "serve_scale: raw VectorIndex.search vs POST /api/search (vector, text, hybrid), /knn-service "
                         "(embedding_input) and GET /api/stats on synthetic vectors written through the repository API, "
                         "with clip-retrieval's clip back on the same vectors",
            "data": {**built, "catalog": "postgresql" if args.postgres else "sqlite", "dim": DIM, "count": index.count,
                     "factory": index.manifest.factory,
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
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **gpu_info(),
                        "load_avg_1m_before": load_before, "load_avg_1m_after": round(os.getloadavg()[0], 2)},
            "raw_index_search": raw, "text_encode_p50_ms": encode_ms, "http": server, "peer_clip_back": peer_result,
            "level_note": f"each level: up to {args.requests} requests or {args.max_s} s, whichever comes first",
            "text_note": "api_text / api_hybrid: typed queries of 3 Zipf-drawn vocabulary words, each distinct "
                         "(encoded by the text tower; text->text has no re-ranker, so none runs)",
            "total_errors": sum(level["errors"] for kinds in server.values()
                                for ls in (kinds.values() if isinstance(kinds, dict) else [kinds]) for level in ls),
        }
    finally:
        for running in (proc, peer):
            if running is not None:
                _stop(running)
        if args.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["total_errors"] else 0


def gpu_info() -> dict:
    """What this run searched and encoded on: faiss GPUs (index cloned there when > 0) and torch's CUDA device."""
    import faiss
    import torch

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return {"faiss_gpus": gpus, "torch_cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def typed_encode_ms(n: int = 30) -> float:
    """p50 of the bundled text tower encoding one typed query, in this process (the part of a typed query the
    server cannot skip)."""
    from retrieval.encoders import create_model

    tower = create_model(None)
    tower.encode("text", ["warm up"])
    times = []
    for i in range(n):
        t = time.perf_counter()
        tower.encode("text", [f"{word(i)} {word(3 * i + 1)} {word(7 * i + 2)}"])
        times.append((time.perf_counter() - t) * 1000)
    return round(percentile(times, 0.5), 2)


if __name__ == "__main__":
    sys.exit(main())
