"""Old model beside new one, in one run: `python -m retrieval eval` on every held-out check.

    python bench/model_generations.py [--models triad-mini-v1 triad-mini-3] [--manifests M ...]
                                      [--work data/eval-gen] [--out bench/results-model-generations.json]

For each manifest and model the gallery is indexed once (``eval --keep-data-dir``) and
evaluated twice: first stage only (``--no-rerank``) and as a search runs (re-ranked
where the model's re-ranker is enabled for the pair; once for a model without one). Prints one JSON document:
``{manifest: {model: {"first": {pair: metrics}, "rerank": {...}}}}`` and writes it to
``--out``. Default manifests are the ones ``build-data`` writes (held-out concepts,
held-out drawing sets, held-out icon concepts, seen concepts in the held-out voice),
the Symbola style check, and the committed real human clips; missing ones are skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from retrieval.encoders.registry import has_part  # noqa: E402
DEFAULT_MANIFESTS = ["data/train/eval_heldout.jsonl", "data/train/eval_style_fxemoji.jsonl",
                     "data/train/eval_style_icon-park-outline.jsonl", "data/train/eval_heldout_icons.jsonl",
                     "data/train/eval_seen_voice.jsonl", "data/train/eval_style.jsonl",
                     "tests/fixtures/human/eval_human.jsonl"]


def _eval(manifest: Path, model: str, work: Path, rerank: bool) -> dict:
    cmd = [sys.executable, "-m", "retrieval", "eval", "--manifest", str(manifest), "--model", model, "--json",
           "--keep-data-dir", str(work)] + ([] if rerank else ["--no-rerank"])
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["triad-mini-v1", "triad-mini-3"])
    p.add_argument("--manifests", nargs="+", default=DEFAULT_MANIFESTS)
    p.add_argument("--work", default="data/eval-gen", help="index folders, one per manifest and model (kept)")
    p.add_argument("--out", default="bench/results-model-generations.json")
    args = p.parse_args()
    results: dict = {}
    for m in args.manifests:
        manifest = REPO / m
        if not manifest.is_file():
            print(f"skipping {m}: not built (python -m retrieval build-data)", file=sys.stderr)
            continue
        results[m] = {}
        for model in args.models:
            work = REPO / args.work / f"{manifest.stem}-{model}"
            t = time.perf_counter()
            first = _eval(manifest, model, work, rerank=False)
            # a model without a re-ranker ranks the same both ways: not run twice
            reranked = _eval(manifest, model, work, rerank=True) if has_part(model, "reranker") else first
            results[m][model] = {"first": first, "rerank": reranked, "seconds": round(time.perf_counter() - t, 1)}
            print(f"{m} {model}: {results[m][model]['seconds']} s", file=sys.stderr)
            Path(REPO / args.out).write_text(json.dumps(results, indent=1) + "\n")  # partial results survive
    doc = json.dumps(results, indent=1)
    Path(REPO / args.out).write_text(doc + "\n")
    print(doc)


if __name__ == "__main__":
    main()
