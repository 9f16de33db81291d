"""Encoder throughput per modality (items/s) and single-item latency; prints JSON.

    python bench/encoders.py [--model triad-mini] [--openclip-arch ViT-B-32] [--n 256]

Text and speech use the named model (default: the bundled one). Images use an
OpenCLIP architecture with random weights saved to a temporary local folder:
the compute is that of the real model, and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.encoders import create_model  # noqa: E402


def _rate(fn, items, batch: int) -> dict:
    fn(items[:2])  # warm up
    t = time.perf_counter()
    for i in range(0, len(items), batch):
        fn(items[i:i + batch])
    total = time.perf_counter() - t
    singles = []
    for item in items[:10]:
        t1 = time.perf_counter()
        fn([item])
        singles.append(time.perf_counter() - t1)
    return {"items": len(items), "batch": batch, "items_per_s": round(len(items) / total, 2),
            "single_item_ms_p50": round(1000 * float(np.median(singles)), 2)}


def _speech_items(n: int) -> list[np.ndarray]:
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "speech"
    from retrieval.decoders import load_audio

    clips = [load_audio(p) for p in sorted(fixtures.glob("*.wav"))]
    if not clips:
        raise SystemExit(f"no speech fixtures in {fixtures}")
    return [clips[i % len(clips)] for i in range(n)]


def _openclip_dir(arch: str, folder: Path) -> Path:
    import open_clip
    from safetensors.torch import save_file

    cfg = open_clip.get_model_config(arch)
    model = open_clip.create_model(arch)  # random weights: real compute, no download
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--openclip-arch", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-audio", type=int, default=16)
    args = ap.parse_args()
    import torch
    from PIL import Image

    out: dict = {"env": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "cuda": torch.cuda.is_available()}}
    t = time.perf_counter()
    model = create_model(args.model)
    model.tower("text")
    out["model"] = model.name
    out["text_model_load_s"] = round(time.perf_counter() - t, 2)
    sentences = [f"a photo of item number {i} with a red apple and a dog in the park" for i in range(args.n)]
    out["text"] = _rate(lambda b: model.encode("text", b), sentences, 64)
    t = time.perf_counter()
    model.tower("audio")
    out["audio_model_load_s"] = round(time.perf_counter() - t, 2)
    clips = _speech_items(args.n_audio)
    out["audio"] = _rate(lambda b: model.encode("audio", b), clips, 8)
    out["audio"]["mean_clip_s"] = round(float(np.mean([len(c) / 16000 for c in clips])), 2)
    with tempfile.TemporaryDirectory() as tmp:
        oc = create_model(f"openclip:{_openclip_dir(args.openclip_arch, Path(tmp))}")
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(min(args.n, 128))]
        out["image_openclip"] = {"arch": args.openclip_arch, **_rate(lambda b: oc.encode("image", b), images, 32)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
