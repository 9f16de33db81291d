"""The bundled model's three speech views side by side on one eval manifest.

Each spoken clip of the manifest (``python -m retrieval eval`` format) is embedded
three ways by the bundled model's speech tower: the ASR cascade alone (Whisper
transcript -> text tower), the trained attention-pooling head alone (Whisper
encoder frames -> head), and the two fused by the learned gate. Each view is
scored, by exact search over the manifest's own items, for speech -> image and
speech -> text recall. Prints one JSON object and writes it to --out.

    .venv/bin/python bench/speech_views.py --manifest data/train/eval_heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.decoders import load_audio, load_image  # noqa: E402
from retrieval.encoders import create_model  # noqa: E402
from retrieval.encoders.base import l2_normalize  # noqa: E402
from retrieval.metrics import summarize  # noqa: E402


def _score(queries: np.ndarray, q_labels: list[str], gallery: np.ndarray, g_labels: list[str]) -> dict:
    order = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    g = np.array(g_labels)
    ranked = [list(g[row] == label) for row, label in zip(order, q_labels)]
    return summarize(ranked, [int((g == label).sum()) for label in q_labels])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--model", default=None, help="a bundled model with a fused speech tower (default: the default model)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    root = args.manifest.parent
    model = create_model(args.model)
    tower = model.tower("audio")
    if not hasattr(tower, "head"):
        raise SystemExit(f"{args.model or 'the default model'} has no fused speech tower (head + cascade) to compare")
    clips = [r for r in rows if r["modality"] == "audio"]
    images = [r for r in rows if r["modality"] == "image"]
    texts = [r for r in rows if r["modality"] == "text"]
    t0 = time.perf_counter()
    audio = [load_audio(root / r["path"]) for r in clips]
    head = tower.head.encode(audio)
    cascade = tower.cascade.encode_with_notes(audio)
    fused = l2_normalize(tower.fuse(head, cascade.vectors, cascade.notes))
    seconds = time.perf_counter() - t0
    gallery = {}
    if images:
        gallery["image"] = (model.encode("image", [load_image(root / r["path"]) for r in images]), [r["label"] for r in images])
    if texts:
        gallery["text"] = (model.encode("text", [r["text"] for r in texts]), [r["label"] for r in texts])
    labels = [r["label"] for r in clips]
    result = {"manifest": str(args.manifest), "clips": len(clips), "default_view": tower.mode,
              "gate": {"a": tower.a, "b": tower.b}, "seconds_all_views": round(seconds, 1), "views": {}}
    for view, vectors in (("cascade", cascade.vectors), ("head", head), ("fused", fused)):
        result["views"][view] = {f"speech->{m}": _score(vectors, labels, g, gl) for m, (g, gl) in gallery.items()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
