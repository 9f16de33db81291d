"""`python -m retrieval train` end to end on a tiny dataset made from the demo archive:
real images, real Whisper frames, checkpoints that resume, exported weights that load.
(The bundled model itself is never trained in CI.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli

DEMO = REPO / "demo"
CONCEPTS = {  # key: (label, tags, demo image stem, clip, clip split, concept split)
    "1f34e": ("red apple", ["fruit", "apple"], "red-apple", "a-red-apple.wav", "train", "train"),
    "1f436": ("dog face", ["dog", "pet"], "dog-face", "a-dog.wav", "train", "train"),
    "1f3b8": ("guitar", ["instrument", "music"], "guitar", "show-me-a-guitar.wav", "train", "train"),
    "1f382": ("birthday cake", ["cake", "party"], "birthday-cake", "a-birthday-cake.wav", "train", "train"),
    "1f680": ("rocket", ["space"], "rocket", "a-rocket.wav", "val", "train"),
    "1f431": ("cat face", ["cat", "pet"], "cat-face", None, None, "train"),
    "1f6b2": ("bicycle", ["bike"], "bicycle", "a-bicycle.wav", "heldout-concept", "heldout"),
    "1f355": ("pizza", ["food"], "pizza", None, None, "heldout"),
}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from retrieval.training.build import _build_frames
    from retrieval.training.emoji_data import captions_for, spoken_captions

    root = tmp_path_factory.mktemp("tiny_train")
    concepts, clips = [], []
    for key, (label, tags, stem, clip, clip_split, split) in CONCEPTS.items():
        images = {}
        for vendor in ("twitter", "google"):
            (root / "images" / vendor).mkdir(parents=True, exist_ok=True)
            shutil.copy(DEMO / "images" / f"{stem}-{vendor}.png", root / "images" / vendor / f"{key}.png")
            images[vendor] = [f"images/{vendor}/{key}.png"]
        concepts.append({"key": key, "label": label, "tags": tags, "name": label, "group": "", "split": split,
                         "captions": captions_for(label, tags, label), "spoken": spoken_captions(label, tags),
                         "images": images})
        if clip:
            (root / "speech" / clip_split).mkdir(parents=True, exist_ok=True)
            shutil.copy(DEMO / "speech" / clip, root / "speech" / clip_split / clip)
            clips.append({"id": key, "concept": key, "text": label, "voice": "flite:slt",
                          "path": f"{clip_split}/{clip}", "split": clip_split})
    (root / "concepts.json").write_text(json.dumps(concepts))
    (root / "clips.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clips))
    _build_frames(root)
    return root


def test_train_runs_checkpoints_resumes_and_exports(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--out", str(run), "--batch", "4", "--steps-per-epoch", "2",
            "--soft-targets", "1"]  # the optional loss term runs too
    first = json.loads(run_cli("retrieval", *args, "--epochs", "1").stdout.strip().splitlines()[-1])
    assert first["epochs"] == 1 and first["steps"] == 2
    assert (run / "checkpoint.pt").is_file()
    second = run_cli("retrieval", *args, "--epochs", "2")
    assert "resumed" in second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["steps"] == 4
    final = summary["final"]
    for key in ("text->image R@10 heldout", "text->image R@10 seen", "speech->label R@1 val", "speech->label R@1 heldout"):
        assert 0.0 <= final[key] <= 1.0
    assert summary["speech"]["mode"] in ("fused", "head", "cascade") and summary["speech"]["clips"] == 2
    export = run / "export"
    for name in ("image_cnn.safetensors", "speech_head.safetensors", "arch.json", "speech_fusion.json",
                 "training_summary.json"):
        assert (export / name).is_file(), name
    assert len(json.loads((export / "training_summary.json").read_text())["history"]) == 2  # one row per epoch

    # the exported image tower loads through the runtime class and embeds a real image
    from retrieval.decoders import load_image
    from retrieval.encoders.image_cnn import CnnImage

    arch = json.loads((export / "arch.json").read_text())["image"]
    tower = CnnImage(export / "image_cnn.safetensors", 384, arch)
    v = tower.encode([load_image(DEMO / "images" / "pizza-google.png")])
    assert v.shape == (1, 384) and abs(float((v**2).sum()) - 1) < 1e-4


def test_image_only_run_ships_the_speech_tower_it_was_given(tiny_dataset, tmp_path):
    """--speech-from: the image tower trains (from --init), the speech head, its arch entry and gate are copied."""
    from retrieval.encoders.registry import _locate, model_config
    from retrieval.encoders.weights import sha256_file

    run = tmp_path / "run"
    proc = run_cli("retrieval", "train", "--data", str(tiny_dataset), "--out", str(run), "--batch", "4",
                   "--steps-per-epoch", "2", "--epochs", "1", "--init", "triad-mini-2", "--speech-from", "triad-mini-v1")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and "unchanged" in summary["speech"]["kept"]
    assert "speech->label R@1 val" not in summary["final"]  # no speech frames were loaded
    src = _locate(model_config("triad-mini-v1")["towers"]["audio"]["trained"])
    export = run / "export"
    for name in ("speech_head.safetensors", "speech_fusion.json"):
        assert sha256_file(export / name) == sha256_file(src / name), name
    arch = json.loads((export / "arch.json").read_text())
    assert arch["speech_head"] == json.loads((src / "arch.json").read_text())["speech_head"]
    init = _locate(model_config("triad-mini-2")["towers"]["image"]) / "image_cnn.safetensors"
    assert sha256_file(export / "image_cnn.safetensors") != sha256_file(init)  # the image tower did train


def test_train_without_data_says_how_to_build_it(tmp_path):
    proc = run_cli("retrieval", "train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "build-data" in proc.stderr


def test_train_reranker_runs_and_exports_a_loadable_reranker(tiny_dataset, tmp_path):
    from retrieval.rerank import Reranker

    run = tmp_path / "rerank"
    args = ["train", "--stage", "rerank", "--data", str(tiny_dataset), "--out", str(run), "--batch", "4",
            "--steps-per-epoch", "2", "--epochs", "1"]
    summary = json.loads(run_cli("retrieval", *args).stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["steps"] == 2
    assert set(summary["weights"]) == {"text->image", "audio->image"}
    reranker = Reranker.load(run / "export")
    assert len(reranker.net.memory) == 6  # the six training concepts of the tiny set
    assert set(reranker.pairs) <= {"text->image", "audio->image"}
    again = json.loads(run_cli("retrieval", *args).stdout.strip().splitlines()[-1])  # resumes: nothing to train
    assert again["steps"] == 2
