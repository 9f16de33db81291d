"""Crash rounds: kill -9 the indexer at random points, resume, and check the catalog equals a clean run's.

    python bench/crash.py [--rounds N] [--seed S] [--notes N] [--media N] [--videos N] [--backends sqlite,postgres]
                          [--pg-url URL]

The archive is ``--notes`` generated notes plus ``--media`` files from ``demo/`` (pictures and spoken
clips, alternately) plus ``--videos`` fixture videos (``tests/fixtures/make_videos.py``: keyframes and
narration), so kills land in image, audio and video decoding and encoding as well as in text.

Each round picks one scenario on one backend (every combination in turn, from a seeded start; with
both backends three rounds cover ``add`` on SQLite, the migration on Postgres, ``rebuild --tokens`` on SQLite):

* ``add``: ``indexer add`` killed after a random delay, then run again;
* ``migration``: the first migration killed right after its k-th DDL statement (k random), then ``add``;
* ``rebuild`` / ``rebuild-tokens``: ``indexer rebuild [--tokens]`` of a finished catalog killed after a random
  delay, then ``add``.

After each round the catalog must hold the same files and items (name, modality, start, content) as one
clean run, every FAISS index must hold exactly the database's embedding ids, every item must have token
features (the bundled model writes them), and no half-swapped token store may be left. Prints one JSON
object: per round the scenario, backend, kill point, whether the process was really killed, and ``ok``.
Postgres rounds use a fresh database on ``--pg-url`` (default the test server) and drop it afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCENARIOS = ("add", "migration", "rebuild", "rebuild-tokens")
TOKEN_MODEL = "triad-mini"  # --model default: the first generation has a re-ranker, so its items get token files
MODEL = TOKEN_MODEL  # the model of this run (set from --model)
TOPICS = ["gardening tomatoes", "fixing a bicycle chain", "learning the piano", "baking sourdough bread",
          "hiking in the alps", "painting with watercolors", "repairing a leaking tap", "training a puppy"]

_KILLED_MIGRATION = """
import os, signal, sys
from pathlib import Path
from alembic.operations import Operations
count = [0]
at = int(sys.argv[2])
for name in ("create_table", "execute", "create_index"):
    original = getattr(Operations, name)
    def op(self, *a, _original=original, **k):
        out = _original(self, *a, **k)
        count[0] += 1
        if count[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(Operations, name, op)
from indexer.catalog import Catalog
Catalog(Path(sys.argv[1]))
"""


def _env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def _indexer(args: list[str], database_url: str | None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "indexer", *args], cwd=REPO, env=_env(database_url),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"indexer {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def _killed_after(args: list[str], database_url: str | None, delay: float) -> bool:
    """Run ``indexer args`` and kill -9 it after ``delay`` s; True if it was still running then."""
    proc = subprocess.Popen([sys.executable, "-m", "indexer", *args], cwd=REPO, env=_env(database_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def catalog_state(data_dir: Path, database_url: str | None) -> dict:
    """Files/items as comparable rows, and the agreement of indices and tokens with the database."""
    from indexer import repository as repo
    from indexer.catalog import Catalog

    catalog = Catalog(data_dir, database_url=database_url)
    try:
        indices = catalog.fresh_indices()
        problems: list[str] = []
        with catalog.session() as s:
            rows = sorted((Path(m["path"]).name, m["modality"], m["start"], m["content"] or "")
                          for m in repo.item_hits(s, sorted(repo.item_ids(s))).values())
            files = sorted((Path(p).name, k.status) for p, k in repo.known_files_under(s, ["/"]).items())
            all_ids = repo.item_ids(s, ["image", "audio", "text"])  # video segments have no tokens (by design)
            for modality, count in repo.item_counts(s).items():
                db_ids = {int(i) for ids, _ in repo.iter_embeddings(s, modality) for i in ids}
                index_ids = set(indices[modality].ids().tolist()) if modality in indices else set()
                if db_ids != index_ids:
                    problems.append(f"{modality}: index holds {len(index_ids)} ids, database {len(db_ids)}")
        from retrieval.encoders.registry import has_part

        store = catalog.token_store()
        token_ids = store.ids()
        if not has_part(MODEL, "reranker"):  # a model without a re-ranker writes no tokens at all
            all_ids = set()
        if token_ids != all_ids:
            problems.append(f"tokens: {len(all_ids - token_ids)} items without, {len(token_ids - all_ids)} stray")
        for leftover in ("tokens.new", "tokens.old"):
            if (data_dir / leftover).exists():
                problems.append(f"{leftover} left behind")
    finally:
        catalog.close()
    return {"rows": rows, "files": files, "problems": problems}


class Postgres:
    """Fresh databases on a real server (dropped on close)."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
        self.base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.names: list[str] = []

    def new(self) -> str:
        name = f"crash_{uuid.uuid4().hex[:10]}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{self.base}/{name}"

    def close(self) -> None:
        for name in self.names:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def run_round(scenario: str, backend: str, rng: random.Random, notes: Path, work: Path, timings: dict,
              clean: dict, pg: Postgres | None) -> dict:
    data = work / f"data_{uuid.uuid4().hex[:6]}"
    url = pg.new() if backend == "postgres" else None
    out: dict = {"scenario": scenario, "backend": backend}
    t0 = time.perf_counter()
    if scenario == "add":
        out["kill_after_s"] = round(rng.uniform(0.5, timings["add_s"]), 2)
        out["killed"] = _killed_after(["add", str(notes), "--model", MODEL, "--data-dir", str(data), "--batch-size", "2", "--quiet"],
                                      url, out["kill_after_s"])
    elif scenario == "migration":
        out["kill_after_ddl"] = rng.randint(1, 12)
        proc = subprocess.run([sys.executable, "-c", _KILLED_MIGRATION, str(data), str(out["kill_after_ddl"])],
                              cwd=REPO, env=_env(url), capture_output=True, timeout=120)
        out["killed"] = proc.returncode == -signal.SIGKILL
    else:
        if url is None:  # a finished SQLite catalog: a copy of the clean one (its paths are the same files)
            shutil.copytree(work / "clean", data)
        else:
            _indexer(["add", str(notes), "--model", MODEL, "--data-dir", str(data), "--quiet"], url)
        args = ["rebuild", "--data-dir", str(data)] + (["--tokens"] if scenario == "rebuild-tokens" else [])
        out["kill_after_s"] = round(rng.uniform(0.5, timings["rebuild_tokens_s" if "tokens" in scenario
                                                          else "rebuild_s"]), 2)
        out["killed"] = _killed_after(args, url, out["kill_after_s"])
    _indexer(["add", str(notes), "--model", MODEL, "--data-dir", str(data), "--quiet"], url)
    state = catalog_state(data, url)
    out["problems"] = state["problems"] + (["catalog differs from a clean run"]
                                           if (state["rows"], state["files"]) != (clean["rows"], clean["files"]) else [])
    out["ok"] = not out["problems"]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    shutil.rmtree(data, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--model", default=TOKEN_MODEL, help="bundled model to index with (default: triad-mini, which writes "
                                                  "re-ranking tokens; the default model has no re-ranker, so none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--notes", type=int, default=12, help="generated notes in the archive")
    p.add_argument("--media", type=int, default=3, help="demo pictures and clips in the archive (alternately)")
    p.add_argument("--videos", type=int, default=1, help="fixture videos in the archive (made with PyAV)")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--pg-url", default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args(argv)
    global MODEL
    MODEL = args.model
    rng = random.Random(args.seed)
    backends = [b for b in args.backends.split(",") if b]
    combos = [(s, b) for s in SCENARIOS for b in backends]
    work = Path(tempfile.mkdtemp(prefix="crash_bench_"))
    pg = Postgres(args.pg_url) if "postgres" in backends else None
    try:
        notes = work / "notes"
        notes.mkdir()
        for i in range(args.notes):
            (notes / f"note_{i:03d}.txt").write_text(f"Note {i}: some thoughts about {TOPICS[i % len(TOPICS)]}.")
        pictures, clips = sorted((REPO / "demo" / "images").glob("*.png")), sorted((REPO / "demo" / "speech").glob("*.wav"))
        for i in range(args.media):
            src = (pictures if i % 2 == 0 else clips)[i // 2]
            shutil.copyfile(src, notes / src.name)
        if args.videos:
            sys.path.insert(0, str(REPO / "tests" / "fixtures"))
            from make_videos import VIDEOS, make_videos

            made = make_videos(work / "videos")
            for name in [n for n in VIDEOS][: args.videos]:
                shutil.copyfile(made[name], notes / name)
        timings = {}
        t = time.perf_counter()
        _indexer(["add", str(notes), "--model", MODEL, "--data-dir", str(work / "clean"), "--quiet"], None)
        timings["add_s"] = time.perf_counter() - t
        t = time.perf_counter()
        _indexer(["rebuild", "--data-dir", str(work / "clean")], None)
        timings["rebuild_s"] = time.perf_counter() - t
        timings["rebuild_tokens_s"] = timings["add_s"]  # re-encodes every item, as add does
        clean = catalog_state(work / "clean", None)
        if clean["problems"]:
            raise RuntimeError(f"the clean run is not consistent: {clean['problems']}")
        start = args.seed % len(combos)
        step = 3 if math.gcd(3, len(combos)) == 1 else 1  # 3 rounds: add, migration, rebuild --tokens
        rounds = [run_round(*combos[(start + i * step) % len(combos)], rng, notes, work, timings, clean, pg)
                  for i in range(args.rounds)]
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {"rounds": rounds, "ok": all(r["ok"] for r in rounds), "killed": sum(r["killed"] for r in rounds),
              "timings": {k: round(v, 2) for k, v in timings.items()}, "seed": args.seed}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
