"""Build the committed demo archive (``demo/``) from the training data folder.

Images of a few seen concepts from both training vendors (with attribution), spoken
queries in the held-out voice (never heard in training) and a few text notes.
Run: ``python -m retrieval.training.demo --data data/train --out demo``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from .build import DEMO_CONCEPTS
from .emoji_data import LICENCES, label_text
from .speech_data import HELD_OUT_VOICE, Clip, synthesise

SPOKEN = ["a red apple", "a dog", "show me a guitar", "a birthday cake", "a rocket", "a bicycle"]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def build_demo(data: Path, out: Path, notes: Path) -> None:
    concepts = {c["key"]: c for c in json.loads((data / "concepts.json").read_text())}
    (out / "images").mkdir(parents=True, exist_ok=True)
    credits = []
    for key in DEMO_CONCEPTS:
        c = concepts[key]
        for vendor, paths in sorted(c["images"].items()):
            name = f"{slug(label_text(c['label']))}-{vendor}.png"
            shutil.copyfile(data / paths[0], out / "images" / name)
            credits.append(f"- `images/{name}`: {c['label']} (U+{key.upper()}), {vendor}")
    for i, text in enumerate(SPOKEN):
        clip = Clip(f"demo-{i}", "", text, HELD_OUT_VOICE, f"{slug(text)}.wav", "demo")
        if synthesise((clip, str(out / "speech"), 1000 + i, False)) is None:
            raise RuntimeError(f"could not synthesise '{text}' with {HELD_OUT_VOICE}")
    (out / "notes").mkdir(exist_ok=True)
    for name in ("dogs.md", "baking.txt", "travel.txt", "space.txt"):
        shutil.copyfile(notes / name, out / "notes" / name)
    # no .md/.txt suffix, so the indexer does not take the licences for a note of the archive
    (out / "ATTRIBUTION").write_text(
        "# Demo archive: sources and licences\n\n"
        "Built by `python -m retrieval.training.demo` from the training data (`python -m retrieval build-data`).\n\n"
        "## Images\n\n"
        f"- twitter: {LICENCES['twitter']}\n- google: {LICENCES['google']}\n\n"
        "Files are unmodified 64x64 PNGs from the npm packages emoji-datasource-twitter@16.0.0 and "
        "emoji-datasource-google@16.0.0 (`img/<vendor>/64/<codepoint>.png`), renamed to their label.\n\n"
        + "\n".join(credits)
        + "\n\n## Speech\n\nSynthesised with flite's `slt` voice (the voice held out from training): "
        + ", ".join(f"`speech/{slug(t)}.wav` (\"{t}\")" for t in SPOKEN)
        + ". flite is free software (BSD-style licence); the recordings are ours, CC0.\n\n"
        "## Notes\n\nShort texts written for this project (CC0), shared with `tests/fixtures/notes`.\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="data/train")
    p.add_argument("--out", default="demo")
    p.add_argument("--notes", default="tests/fixtures/notes")
    a = p.parse_args()
    build_demo(Path(a.data), Path(a.out), Path(a.notes))


if __name__ == "__main__":
    main()
