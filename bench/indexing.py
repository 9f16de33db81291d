"""Indexing throughput on a generated folder (text notes and images); prints JSON.

    python bench/indexing.py [--notes 2000] [--images 0] [--model NAME]

Runs the real `python -m indexer add --json` on a fresh data directory, then
again (everything unchanged: the incremental fast path), and reports files/s
and the per-stage timings the indexer itself measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WORDS = ("river mountain coffee violin garden engine harbor winter market lantern forest bicycle "
         "library thunder orchard kitchen satellite meadow festival compass").split()


def _make_folder(root: Path, notes: int, images: int) -> None:
    rng = np.random.default_rng(0)
    (root / "notes").mkdir(parents=True)
    for i in range(notes):
        words = " ".join(rng.choice(WORDS, 40))
        (root / "notes" / f"n{i:06d}.txt").write_text(f"Note {i}. {words}.")
    if images:
        from PIL import Image

        (root / "images").mkdir()
        for i in range(images):
            Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / "images" / f"i{i:06d}.png")


def _run(folder: Path, data: Path, model: str | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "indexer", "add", str(folder), "--data-dir", str(data), "--json"]
    if model:
        cmd += ["--model", model]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=2000)
    ap.add_argument("--images", type=int, default=0)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, data = Path(tmp) / "archive", Path(tmp) / "data"
        _make_folder(folder, args.notes, args.images)
        files = args.notes + args.images
        first, wall1 = _run(folder, data, args.model)
        second, wall2 = _run(folder, data, args.model)
    t = first["timings"]
    out = {
        "files": files, "cpus": os.cpu_count(),
        "first_run": {"summary": {k: first[k] for k in ("added", "errors")}, "wall_s": round(wall1, 2),
                      "files_per_s_excl_model_load": round(files / max(t["total_s"] - t.get("model_load_s", 0), 1e-9), 1),
                      "timings": t},
        "unchanged_rerun": {"unchanged": second["unchanged"], "wall_s": round(wall2, 2),
                            "total_s": second["timings"]["total_s"]},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
