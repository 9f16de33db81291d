"""Video indexing throughput: seconds of video indexed per second of wall time; prints JSON.

    python bench/video_indexing.py [--videos 4] [--seconds 60] [--cores 2]

Makes ``--videos`` H.264/AAC MP4s of ``--seconds`` each (256x192, 8 fps; a new demo picture every
6 s and a spoken sentence from tests/fixtures/speech in most scenes, as tests/fixtures/make_videos.py
does), then runs the real `python -m indexer add --json` on a fresh data directory pinned to
``--cores`` CPUs (``os.sched_setaffinity``), and reports video seconds per wall second with the
indexer's own per-stage timings. A benchmark, never part of the test run.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

PICTURES = ["dog-face", "pizza", "guitar", "house", "rocket", "cat-face", "red-apple", "umbrella", "sun", "fish"]
SENTENCES = ["dog_park", "stock_market", "chocolate_cake", "train_boston", "red_apple", "heavy_rain",
             "guitar_lesson", "moon_landing"]


def make(folder: Path, videos: int, seconds: int) -> float:
    from make_videos import write_video

    total = 0.0
    for v in range(videos):
        scenes = [(PICTURES[(v + i) % len(PICTURES)], 6) for i in range(seconds // 6)]
        speech = [(SENTENCES[(v * 3 + i) % len(SENTENCES)], 6 * i + 1.0) for i in range(len(scenes)) if i % 4 != 3]
        write_video(folder / f"video_{v:02d}.mp4", {"video": "libx264", "audio": "aac"}, scenes, speech)
        total += 6 * len(scenes)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, data = Path(tmp) / "videos", Path(tmp) / "data"
        folder.mkdir()
        seconds = make(folder, args.videos, args.seconds)
        cores = sorted(os.sched_getaffinity(0))[: args.cores]
        env = {**os.environ, "OMP_NUM_THREADS": str(len(cores)), "RETRIEVAL_ASR_THREADS": str(len(cores))}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "indexer", "add", str(folder), "--data-dir", str(data), "--json"],
                              cwd=REPO, env=env, capture_output=True, text=True, check=True,
                              preexec_fn=lambda: os.sched_setaffinity(0, cores))
        wall = time.perf_counter() - t0
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({"videos": args.videos, "video_seconds": seconds, "cores": len(cores),
                      "wall_s": round(wall, 2), "video_s_per_wall_s": round(seconds / wall, 2),
                      "added": summary["added"], "errors": summary["errors"], "timings": summary.get("timings")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
