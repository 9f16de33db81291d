"""Soak test of the real web server: N clients x M minutes of mixed queries, then memory and latency.

Starts `python -m webui` (2 workers x 4 threads) on the demo archive indexed into a temporary
folder (or uses --data-dir), runs --clients clients for --minutes (60% text, 20% image
upload, 20% audio upload, every query distinct), and prints one JSON object: per kind the
answered/503/error counts and p50/p99, each worker's RSS at the start (after warm-up) and at
the end, and the errors (anything but 200 or a 503 with Retry-After). Exits 1 on any error.
Never part of the tests.

    .venv/bin/python bench/soak.py --clients 16 --minutes 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_webui import start_server  # noqa: E402
from mixed_load import DEMO, REPO, Requests, scenario  # noqa: E402


def worker_rss_mb(arbiter_pid: int) -> dict[int, float]:
    """RSS (MB) of the gunicorn workers: the processes whose parent is the arbiter."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == arbiter_pid:
                pid = int(stat.parent.name)
                for line in (stat.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = round(int(line.split()[1]) / 1024, 1)
        except (OSError, IndexError, ValueError):
            continue
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--warmup", type=float, default=30, help="seconds of mixed queries before the start RSS")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = tmp / "data"
        subprocess.run([sys.executable, "-m", "indexer", "add", str(DEMO), "--data-dir", str(data_dir), "--json"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server.log")
    try:
        reqs = Requests()
        # warm-up: every tower loaded in every worker (a request lands on either worker; 5 s did not always
        # reach Whisper in both, and its ~100 MB then showed as growth)
        scenario(url, ["audio", "image", "text", "text"] * args.workers * 2, args.warmup, reqs)
        rss_start = worker_rss_mb(proc.pid)
        n = args.clients
        kinds = ["text"] * round(n * 0.6) + ["image"] * round(n * 0.2)
        kinds += ["audio"] * (n - len(kinds))
        series: list[list[float]] = []
        done = threading.Event()

        def sample() -> None:  # RSS every 30 s: a model loaded late shows as one step, a leak as a slope
            while not done.wait(30):
                series.append(list(worker_rss_mb(proc.pid).values()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stats = scenario(url, kinds, args.minutes * 60, reqs)
        done.set()
        rss_end = worker_rss_mb(proc.pid)
        errors = sum(k["errors"] for k in stats.values())
        print(json.dumps({
            "benchmark": f"soak: {n} clients x {args.minutes:g} min, 60/20/20 text/image/audio, distinct queries",
            "server": f"python -m webui --workers {args.workers} --threads {args.threads}",
            "kinds": stats, "errors": errors,
            "worker_rss_mb": {"start": list(rss_start.values()), "end": list(rss_end.values()),
                              "rss_series": series},
        }, indent=1))
        return 1 if errors else 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
