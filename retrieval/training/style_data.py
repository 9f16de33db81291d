"""A drawing style the image tower never saw: monochrome Symbola glyphs.

Renders seen concepts with Debian's ``fonts-symbola`` (George Douros' Symbola,
free for any use in the Debian-packaged 2.60 release) as black line drawings on
white, and writes ``eval_style.jsonl`` (images + labels) for ``python -m retrieval
eval``. Evaluation only: nothing here is used for training.
Run: ``python -m retrieval.training.style_data --data data/train``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from .emoji_data import label_text

FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")


def render(out: Path, data: Path, n: int = 300, seed: int = 0) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    if not FONT.is_file():
        raise FileNotFoundError(f"{FONT} is missing; apt-get install fonts-symbola")
    font = ImageFont.truetype(str(FONT), 52)
    concepts = [c for c in json.loads((data / "concepts.json").read_text()) if c["split"] == "train"
                and "-" not in c["key"] and not c["key"].startswith("icon:") and not c["label"].startswith("flag")]
    random.Random(seed).shuffle(concepts)
    (out / "style").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in concepts:
        if len(rows) >= 2 * n:
            break
        ch = chr(int(c["key"], 16))
        if font.getmask(ch).getbbox() is None:
            continue  # no glyph in Symbola
        im = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(im)
        box = draw.textbbox((0, 0), ch, font=font)
        w, h = box[2] - box[0], box[3] - box[1]
        if w < 8 or h < 8:
            continue
        draw.text(((64 - w) / 2 - box[0], (64 - h) / 2 - box[1]), ch, font=font, fill="black")
        path = out / "style" / f"{c['key']}.png"
        im.save(path)
        rows.append({"id": f"{c['key']}-symbola", "modality": "image", "path": f"style/{c['key']}.png", "label": c["key"]})
        rows.append({"id": f"{c['key']}-text", "modality": "text", "text": label_text(c["label"]), "label": c["key"],
                     "role": "query"})
    with open(out / "eval_style.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return out / "eval_style.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="data/train")
    p.add_argument("--out", default=None, help="default: the --data folder")
    a = p.parse_args()
    print(render(Path(a.out or a.data), Path(a.data)))


if __name__ == "__main__":
    main()
