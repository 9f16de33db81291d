"""Cold start of `python -m retrieval search`: wall time of fresh processes on the demo archive; prints JSON.

    python bench/cli_cold.py [--runs 5] [--data-dir data/demo] [--baseline CHECKOUT]

Indexes the committed demo into ``--data-dir`` when it is not there yet, then runs
a typed query (and, once each, a spoken and an image query) in new processes,
``--runs`` times, and reports the median and the spread, plus where one typed
query's time goes (``-X importtime`` top modules). ``--baseline`` runs the same
typed query from another checkout (say an older commit: ``git worktree add
/tmp/old 7cd17bf``) alternately with this one, on its own demo index, so the ratio
is taken on one machine load. Target (issue: one search service): a typed query
<= 4 s cold on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], repo: Path = REPO) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return time.perf_counter() - t


def _import_top(data_dir: Path, n: int = 8) -> list[dict]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "retrieval", "search", "--text", "a dog",
                           "--data-dir", str(data_dir)], cwd=REPO, capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                rows.append({"module": parts[2].strip(), "s": int(parts[1]) / 1e6})
            except ValueError:
                continue
    return sorted(rows, key=lambda r: -r["s"])[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", default="data/demo")
    ap.add_argument("--baseline", help="another checkout to time alternately (its own data dir: CHECKOUT/data/demo)")
    args = ap.parse_args()
    data = Path(args.data_dir).resolve()
    if not (data / "index").is_dir():
        _run(["indexer", "add", "demo", "--data-dir", str(data)])
    search = ["retrieval", "search", "--data-dir", str(data)]
    typed, base = [], []
    old = Path(args.baseline).resolve() if args.baseline else None
    if old is not None and not (old / "data" / "demo" / "index").is_dir():
        _run(["indexer", "add", "demo", "--data-dir", str(old / "data" / "demo")], old)
    for _ in range(args.runs):
        typed.append(_run([*search, "--text", "a dog"]))
        if old is not None:
            base.append(_run(["retrieval", "search", "--data-dir", str(old / "data" / "demo"), "--text", "a dog"], old))
    out = {
        "runs": args.runs,
        "typed_s": {"median": round(statistics.median(typed), 2), "min": round(min(typed), 2),
                    "max": round(max(typed), 2)},
        "typed_no_rerank_s": round(_run([*search, "--text", "a dog", "--no-rerank"]), 2),
        "spoken_s": round(_run([*search, "--audio", "demo/speech/a-dog.wav"]), 2),
        "image_s": round(_run([*search, "--image", "demo/images/dog-face-google.png"]), 2),
        "typed_import_top": _import_top(data),
        "target_typed_s": 4.0,
    }
    if base:
        out["baseline_typed_s"] = {"median": round(statistics.median(base), 2), "checkout": str(old)}
        out["speedup"] = round(statistics.median(base) / statistics.median(typed), 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
