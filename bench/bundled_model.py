"""The bundled model's load time and throughput on this machine; prints JSON.

    python bench/bundled_model.py [--images 512] [--model NAME]  (default: the default model)

- load: seconds from nothing to a ready model (registry, SHA-256 checks, towers
  built), measured in a fresh subprocess so no cache helps;
- image tower: images/s at batch 256 and latency of one image (demo images,
  decoded once, repeated);
- speech: seconds per demo clip for the learned head alone, the ASR cascade alone
  and the fused tower (which runs both), as ratios in one run.
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

LOAD = """
import time
t = time.perf_counter()
from retrieval.encoders import create_model
m = create_model(MODEL)
for name in ("text", "image", "audio"):
    m.tower(name)
print(time.perf_counter() - t)
"""
LOAD_IMAGE = """
import time
t = time.perf_counter()
from retrieval.encoders import create_model
create_model(MODEL).tower("image")
print(time.perf_counter() - t)
"""


def _fresh(code: str, model: str) -> float:
    code = f"MODEL = {model!r}\n" + code
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _per_item(fn, items, repeat: int = 3) -> float:
    fn(items[:1])
    t = time.perf_counter()
    for _ in range(repeat):
        fn(items)
    return (time.perf_counter() - t) / (repeat * len(items))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--model", default=None, help="a bundled model (default: the default model)")
    args = p.parse_args()

    from retrieval.decoders import load_audio, load_image
    from retrieval.encoders import create_model
    from retrieval.encoders.registry import canonical_name

    name = canonical_name(args.model)
    result = {"model": name, "load_s_image_tower": round(min(_fresh(LOAD_IMAGE, name) for _ in range(3)), 3),
              "load_s_all_towers": round(min(_fresh(LOAD, name) for _ in range(2)), 3)}
    model = create_model(name)
    demo = sorted((REPO / "demo" / "images").glob("*.png"))
    images = [load_image(p) for p in demo]
    batch = (images * (args.images // len(images) + 1))[: args.images]
    image = model.tower("image")
    image.encode(batch[:8])
    t = time.perf_counter()
    for i in range(0, len(batch), 256):
        image.encode(batch[i:i + 256])
    result["images_per_s_batch256"] = round(len(batch) / (time.perf_counter() - t), 1)
    t = time.perf_counter()
    for im in images[:20]:
        image.encode([im])
    result["ms_one_image"] = round((time.perf_counter() - t) / 20 * 1000, 2)

    speech = model.tower("audio")
    clips = [load_audio(p) for p in sorted((REPO / "demo" / "speech").glob("*.wav"))]
    head = _per_item(speech.head.encode, clips)
    cascade = _per_item(speech.cascade.encode, clips)
    fused = _per_item(speech.encode, clips)
    result.update(speech_mode=speech.mode, ms_per_clip_head=round(head * 1000, 1), ms_per_clip_cascade=round(cascade * 1000, 1),
                  ms_per_clip_fused=round(fused * 1000, 1), head_vs_cascade_ratio=round(head / cascade, 3),
                  clip_seconds_mean=round(sum(len(c) for c in clips) / len(clips) / 16000, 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
