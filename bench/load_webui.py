"""Load check of the web API: text search through the real gunicorn server on 127.0.0.1.

Starts `python -m webui` (unless --url points at a running one) on a data directory
(by default the test fixtures' spoken clips, notes and long recording, indexed with
the bundled model into a temporary folder), then for each client count runs a
bounded number of POST /api/search requests from that many concurrent keep-alive
connections. Every request is a different sentence, so no query vector comes from
the server's cache: each one is encoded by the text tower, searched and joined
with the catalog. Prints one JSON object (requests/s, p50/p90/p99 latency, errors
per level) and writes it to --out. Exits 1 if any request failed.

    .venv/bin/python bench/load_webui.py                      # 2 workers x 4 threads, 1/8/32 clients
    .venv/bin/python bench/load_webui.py --workers 1 --requests 100 --out /tmp/w1.json
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"

SUBJECTS = ["a dog", "the train", "heavy rain", "my guitar teacher", "an astronaut", "the stock market", "a red apple",
            "the violin player", "a chocolate cake", "the office printer", "a lighthouse keeper", "the moon"]
VERBS = ["arrives", "waits", "falls", "plays", "lands", "starts", "shines", "breaks", "sings", "sleeps"]
PLACES = ["in the park", "at noon", "before the party", "on friday", "near boston", "tomorrow morning",
          "in the kitchen", "at the meeting", "on the table", "after the concert", "in the garden"]


def sentences():
    """Distinct queries, in an order that does not repeat a neighbour's subject."""
    for place, verb, subject in itertools.product(PLACES, VERBS, SUBJECTS):
        yield f"{subject} {verb} {place}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def index_fixtures(data_dir: Path) -> None:
    archive = data_dir.parent / "archive"
    for name in ("speech", "notes", "long"):
        shutil.copytree(FIXTURES / name, archive / name, ignore=shutil.ignore_patterns("*.json"))
    subprocess.run([sys.executable, "-m", "indexer", "add", str(archive), "--data-dir", str(data_dir), "--json"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def start_server(data_dir: Path, workers: int, threads: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "webui", "--data-dir", str(data_dir), "--port", str(port),
                             "--workers", str(workers), "--threads", str(threads)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"python -m webui exited ({proc.returncode}); see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"python -m webui did not start in 300 s; see {log_path}")


def run_level(url: str, clients: int, queries: list[str], k: int, max_seconds: float) -> dict:
    parts = urlsplit(url)
    todo = iter(queries)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds
    start_gate = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        start_gate.wait()
        while time.monotonic() < deadline:
            with lock:
                q = next(todo, None)
            if q is None:
                break
            body = json.dumps({"text": q, "k": k})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                elapsed = time.perf_counter() - t0
                ok = resp.status == 200 and len(json.loads(data)["hits"]) > 0
                problem = None if ok else f"HTTP {resp.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                elapsed, problem = time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            with lock:
                if problem:
                    errors.append(problem)
                else:
                    latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = len(latencies) + len(errors)
    ms = [x * 1000 for x in latencies]
    return {
        "clients": clients, "requests": done, "errors": len(errors), "seconds": round(wall, 2),
        "req_per_s": round(done / wall, 1) if wall else None,
        "p50_ms": round(percentile(ms, 0.50), 1), "p90_ms": round(percentile(ms, 0.90), 1),
        "p99_ms": round(percentile(ms, 0.99), 1), "max_ms": round(max(ms), 1) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "stopped_early": done < len(queries), "error_samples": errors[:3],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="an indexed data directory (default: index the test fixtures)")
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=300, help="requests per client count (default 300)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=180, help="stop a level after this long (default 180)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results-webui.json")
    args = p.parse_args()

    pool = list(sentences())
    needed = args.requests * len(args.clients) + 20
    if needed > len(pool):
        raise SystemExit(f"only {len(pool)} distinct queries; ask for at most {(len(pool) - 20) // len(args.clients)} requests")
    tmp = Path(tempfile.mkdtemp(prefix="load_webui_"))
    proc = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            data_dir = args.data_dir
            if data_dir is None:
                data_dir = tmp / "data"
                index_fixtures(data_dir)
            proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server.log")
        conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
        conn.request("GET", "/api/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        warm = run_level(url, max(1, args.workers * 2), pool[:20], args.k, 120)  # every worker loads and warms up
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['error_samples']}")
        levels, offset = [], 20
        load_before = os.getloadavg()
        for clients in args.clients:
            levels.append(run_level(url, clients, pool[offset:offset + args.requests], args.k, args.max_seconds))
            offset += args.requests
            print(json.dumps(levels[-1]), file=sys.stderr)
        result = {
            "benchmark": "POST /api/search, JSON text query, k=%d, every query distinct (no cache hits)" % args.k,
            "server": None if args.url else {"command": f"python -m webui --workers {args.workers} --threads {args.threads}",
                                             "wsgi": "gunicorn gthread", "workers": args.workers, "threads": args.threads},
            "index": {"model": stats.get("model"), "items": stats.get("items")},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)},
            "levels": levels,
            "total_errors": sum(level["errors"] for level in levels),
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["total_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
