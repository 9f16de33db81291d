"""The committed, trained default model on the committed demo archive: real rankings.

The demo archive (``demo/``) holds emoji of 16 concepts drawn by two vendors, spoken
queries in a voice the model never heard in training, and a few notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_json
from retrieval.encoders.registry import DEFAULT_MODEL

DEMO = REPO / "demo"


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    summary = run_json("indexer", "add", str(DEMO), "--data-dir", str(data))
    assert summary["errors"] == 0, summary
    # every image, clip and note (demo/ATTRIBUTION has no note suffix, so it is not indexed)
    assert summary["added"] == len([p for p in DEMO.rglob("*") if p.suffix in (".png", ".wav", ".md", ".txt")])
    return data


def _names(data: Path, *args: str) -> list[str]:
    hits = run_json("retrieval", "search", *args, "--data-dir", str(data))["hits"]
    return [Path(h["path"]).name for h in hits]


def test_spoken_red_apple_ranks_an_apple_image_in_the_top_5(demo_index):
    names = _names(demo_index, "--audio", str(DEMO / "speech" / "a-red-apple.wav"), "--target", "image", "-k", "5")
    assert any(n.startswith("red-apple") for n in names), names


def test_dog_ranks_a_dog_above_a_cat(demo_index):
    names = _names(demo_index, "--text", "dog", "--target", "image", "-k", "32")
    first_dog = min(i for i, n in enumerate(names) if n.startswith("dog-face"))
    first_cat = min(i for i, n in enumerate(names) if n.startswith("cat-face"))
    assert first_dog < first_cat, names
    assert names[0].startswith("dog-face"), names


@pytest.mark.parametrize("query,prefix", [("a guitar", "guitar"), ("pizza", "pizza"), ("a space rocket", "rocket"),
                                          ("a bike", "bicycle"), ("birthday cake with candles", "birthday-cake")])
def test_typed_words_find_their_image_first(demo_index, query, prefix):
    names = _names(demo_index, "--text", query, "--target", "image", "-k", "3")
    assert names[0].startswith(prefix), (query, names)


@pytest.mark.parametrize("clip,prefix", [("a-dog.wav", "dog-face"), ("show-me-a-guitar.wav", "guitar"),
                                         ("a-rocket.wav", "rocket"), ("a-bicycle.wav", "bicycle")])
def test_spoken_queries_in_an_unheard_voice_find_their_image(demo_index, clip, prefix):
    names = _names(demo_index, "--audio", str(DEMO / "speech" / clip), "--target", "image", "-k", "3")
    assert any(n.startswith(prefix) for n in names), (clip, names)


def test_an_image_finds_the_same_concept_drawn_by_the_other_vendor(demo_index):
    names = _names(demo_index, "--image", str(DEMO / "images" / "banana-twitter.png"), "--target", "image", "-k", "3")
    assert names[0] == "banana-twitter.png" and "banana-google.png" in names[1:], names


def test_typed_words_find_the_clip_that_says_them(demo_index):
    names = _names(demo_index, "--text", "birthday cake", "--target", "audio", "-k", "2")
    assert names[0] == "a-birthday-cake.wav", names


def test_registry_entry_verifies_every_trained_file():
    from retrieval.encoders.registry import _locate, create_model, model_config

    cfg = model_config(DEFAULT_MODEL)
    assert cfg["towers"]["image"]["type"] == "cnn_image" and cfg["towers"]["audio"]["type"] == "speech_fused"
    model = create_model(DEFAULT_MODEL)
    for name in ("image/image_cnn.safetensors", "audio/speech_head.safetensors", "audio/speech_fusion.json"):
        assert len(model.checksums[name]) == 64
    total = sum(p.stat().st_size for p in _locate(cfg["towers"]["image"]).iterdir())
    assert total < 20 * 2**20


def test_fused_speech_keeps_the_transcript_and_mixes_both_views():
    from retrieval.decoders import load_audio
    from retrieval.encoders.registry import create_model

    tower = create_model(DEFAULT_MODEL).tower("audio")
    audio = load_audio(DEMO / "speech" / "a-red-apple.wav")
    out = tower.encode_with_notes([audio])
    assert "apple" in out.notes[0]["transcript"].lower()
    head = tower.head.encode([audio])[0]
    cascade = tower.cascade.encode([audio])[0]
    fused = out.vectors[0]
    assert abs(float(np.linalg.norm(fused)) - 1) < 1e-4
    if tower.mode == "fused":  # a mix of both views: closer to each than they are to each other
        assert float(fused @ head) > float(head @ cascade) and float(fused @ cascade) > float(head @ cascade)


def test_model_card_states_the_recipe_and_figures():
    from retrieval.encoders.registry import _locate, model_config

    towers = model_config(DEFAULT_MODEL)["towers"]
    card = (_locate(towers["image"]) / "MODEL_CARD.md").read_text()
    for needle in ("python -m retrieval build-data", "python -m retrieval train", "openclip:", "CC-BY 4.0", "R@10"):
        assert needle in card, needle
    fusion = json.loads((_locate(towers["audio"]["trained"]) / "speech_fusion.json").read_text())
    assert fusion["mode"] in ("fused", "head", "cascade")
