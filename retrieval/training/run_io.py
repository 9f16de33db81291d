"""What a joint training run reads from and writes to the model registry.

``warm_start`` starts a run from a registered model's towers, ``fold_concepts`` picks a
cross-fitting fold, and ``export_towers`` writes the committed weight files. An
image-only run (``speech_from``) ships another registered model's speech head, its
architecture entry and its fusion gate unchanged, so the new image tower pairs with a
speech tower already measured (both land in the locked text tower's space).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import torch

from .common import HEAD_ARCH, IMAGE_ARCH

log = logging.getLogger(__name__)


def _trained_dir(name: str, tower: str) -> Path:
    from ..encoders.registry import _locate, model_config

    spec = model_config(name)["towers"][tower]
    return _locate(spec["trained"] if tower == "audio" else spec)


def warm_start(model: torch.nn.Module, name: str) -> None:
    """Start from a registered model's trained towers (the speech head's new frame layers start as identity)."""
    from ..encoders.image_cnn import load_state

    model.image.load_state_dict(load_state(_trained_dir(name, "image") / "image_cnn.safetensors"))
    missing, unexpected = model.speech.load_state_dict(
        load_state(_trained_dir(name, "audio") / "speech_head.safetensors"), strict=False)
    if unexpected or any(not k.startswith("frame_block.") for k in missing):
        raise ValueError(f"{name}'s speech head does not fit this architecture (missing {missing}, "
                         f"unexpected {unexpected})")
    log.warning("warm start from %s (image tower and speech head)", name)


def fold_concepts(data: Path, fraction: float, seed: int) -> frozenset[str]:
    """A seeded fraction of the training concepts (the demo's excepted), for cross-fitting the re-ranker."""
    from .build import DEMO_CONCEPTS

    keys = sorted(c["key"] for c in json.loads((data / "concepts.json").read_text())
                  if c["split"] == "train" and c["key"] not in DEMO_CONCEPTS)
    return frozenset(random.Random(seed + 7).sample(keys, int(len(keys) * fraction)))


def export_towers(image: torch.nn.Module, speech: torch.nn.Module, out: Path, speech_from: str | None = None) -> None:
    """Write ``image_cnn.safetensors``, ``speech_head.safetensors`` and ``arch.json`` (+ the gate when kept)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = image.cpu().eval().state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items() if v.is_floating_point()}
              | {k: v.contiguous() for k, v in state.items() if not v.is_floating_point()},
              str(out / "image_cnn.safetensors"))
    if speech_from is None:
        save_file({k: v.half().contiguous() for k, v in speech.cpu().eval().state_dict().items()},
                  str(out / "speech_head.safetensors"))
        head_arch = HEAD_ARCH
    else:
        src = _trained_dir(speech_from, "audio")
        shutil.copyfile(src / "speech_head.safetensors", out / "speech_head.safetensors")
        shutil.copyfile(src / "speech_fusion.json", out / "speech_fusion.json")
        head_arch = json.loads((src / "arch.json").read_text())["speech_head"]
    (out / "arch.json").write_text(json.dumps({"image": IMAGE_ARCH, "speech_head": head_arch}, indent=1))
