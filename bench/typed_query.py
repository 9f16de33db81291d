"""Typed-query latency in one process (Flask test client, no HTTP): median of 40 distinct re-ranked queries.

Side by side with an older commit: check it out in a worktree and run this script there on the same data,
alternating (the machine is shared)::

    .venv/bin/python -m indexer add demo --data-dir /tmp/q1data
    git worktree add /tmp/old <REV>
    for w in /tmp/old .; do (cd $w && PYTHONPATH=$w .venv/bin/python $OLDPWD/bench/typed_query.py /tmp/q1data); done

Prints one JSON object: median ms, the last answer's timings and whether it was re-ranked.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from webui import create_app


def main() -> int:
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "data"
    client = create_app({"DATA_DIR": data_dir, "TESTING": True}).test_client()
    for i in range(3):
        client.post("/api/search", json={"text": f"warm up {i}", "k": 10})
    times, last = [], {}
    for i in range(40):
        t = time.perf_counter()
        last = client.post("/api/search", json={"text": f"a dog playing number {i}", "k": 10}).get_json()
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"benchmark": "typed query, target all, k=10, in process", "queries": len(times),
                      "median_ms": round(statistics.median(times), 1), "timings_ms": last["timings_ms"],
                      "rerank": last["rerank"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
