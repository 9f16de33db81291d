"""Iconify drawing sets for training (``retrieval/training/iconify_data.py``, ``style_sets.py``) and the
vendor-style augmentations: parsing, captions, concept mapping, held-out sets, licences. No network:
the Iconify packages are tiny ones written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retrieval.training import iconify_data as ic
from retrieval.training.augment import STYLE_P, augment, vendor_style
from retrieval.training.style_sets import assign, write_style_manifests

CAT = '<path fill="currentColor" d="M2 2h20v20H2z"/>'
UMBRELLA = '<path fill="#36c" d="M2 12a10 10 0 0 1 20 0z"/><path fill="#333" d="M11 12h2v8h-2z"/>'


def _package(root: Path, prefix: str, icons: dict[str, str], licence: str = "MIT", chars: dict | None = None,
             size: int = 24, aliases: dict | None = None) -> Path:
    pkg = root / prefix / "package"
    pkg.mkdir(parents=True)
    data = {"prefix": prefix, "width": size, "height": size, "icons": {n: {"body": b} for n, b in icons.items()},
            "aliases": aliases or {}}
    (pkg / "icons.json").write_text(json.dumps(data))
    (pkg / "info.json").write_text(json.dumps({"prefix": prefix, "name": prefix.title(), "version": "1",
                                                "author": {"name": "Someone", "url": "https://example.org"},
                                                "license": {"spdx": licence, "url": "https://example.org/l"}}))
    (pkg / "chars.json").write_text(json.dumps(chars or {}))
    (pkg / "metadata.json").write_text(json.dumps({"categories": {"Animals": ["cat"]}}))
    return pkg


def _emoji_rows() -> list[dict]:
    def row(key: str, label: str, split: str = "train") -> dict:
        return {"key": key, "label": label, "tags": [], "name": label, "group": "", "split": split,
                "captions": [label], "spoken": [label], "images": {"twitter": [f"images/twitter/{key}.png"]}}
    return [row("1f408", "cat"), row("2602", "umbrella"), row("1f436", "dog face", "heldout")]


def test_parse_set_reads_icons_aliases_chars_and_categories(tmp_path):
    s = ic.parse_set(_package(tmp_path, "mini", {"cat": CAT, "umbrella": UMBRELLA}, chars={"1f408": "cat"},
                              aliases={"kitty": {"parent": "cat"}, "rot": {"parent": "cat", "rotate": 1}}))
    assert set(s.icons) == {"cat", "umbrella"} and s.icons["cat"]["width"] == 24
    assert s.aliases == {"kitty": "cat"}  # transformed aliases are not plain names
    assert s.codepoint_of["cat"] == "1f408" and s.categories == {"Animals": ["cat"]} and s.licence == "MIT"
    assert 'viewBox="0 0 24 24"' in ic.svg_document(s.icons["cat"])


def test_render_one_icon_to_transparent_rgba(tmp_path):
    pytest.importorskip("cairosvg")
    from PIL import Image

    s = ic.parse_set(_package(tmp_path, "mini", {"umbrella": UMBRELLA}))
    ic.render_png(s.icons["umbrella"], tmp_path / "u.png")
    im = Image.open(tmp_path / "u.png")
    assert im.mode == "RGBA" and im.size == (ic.SIZE, ic.SIZE)
    assert im.getpixel((0, ic.SIZE - 1))[3] == 0  # transparent corner
    assert im.getpixel((ic.SIZE // 2, ic.SIZE // 3))[:3] == (0x33, 0x66, 0xcc)  # the canopy's colour


@pytest.mark.parametrize("name,prefix,caption,style", [
    ("arrow-left-bold", "mdi", "arrow left bold", ""), ("cat-outline", "mdi", "cat", "outline"),
    ("heart-filled", "tabler", "heart", "filled"), ("star-bold", "ph", "star", "bold"),
    ("house-duotone", "ph", "house", "duotone"), ("umbrella-2", "tabler", "umbrella", "2"),
    ("folder-sharp-rounded", "x", "folder", "sharp-rounded"), ("outline", "x", "outline", ""),
])
def test_caption_normalisation_drops_style_suffixes(name, prefix, caption, style):
    assert ic.split_name(name, prefix) == (caption, style)


def test_emoji_sets_map_by_codepoint_then_name_and_icons_merge_across_sets(tmp_path):
    emoji = ic.parse_set(_package(tmp_path, "emojione", {"smiling-cat": CAT, "umbrella": UMBRELLA},
                                  licence="CC-BY-4.0", chars={"1f408-fe0f": "smiling-cat"}))
    a = ic.parse_set(_package(tmp_path, "mdi", {"cat-outline": CAT, "rocket-launch": CAT, "umbrella": UMBRELLA}))
    b = ic.parse_set(_package(tmp_path, "tabler", {"rocket-launch": CAT, "rocket-launch-filled": CAT, "123": CAT}))
    rows, jobs = assign(_emoji_rows(), [emoji, a, b], held_out=0.0, seed=0)
    by = {r["key"]: r for r in rows}
    assert by["1f408"]["images"]["emojione"] == ["images/emojione/smiling-cat.png"]  # codepoint, FE0F dropped
    assert by["2602"]["images"]["emojione"] == ["images/emojione/umbrella.png"]  # by name
    assert "mdi" in by["1f408"]["images"] and "mdi" in by["2602"]["images"]  # icon named like an emoji joins it
    rocket = by["icon:rocket-launch"]  # one concept drawn by two icon sets
    assert set(rocket["images"]) == {"mdi", "tabler"} and len(rocket["images"]["tabler"]) == 2
    assert rocket["label"] == "rocket launch" and "an icon of a rocket launch" in rocket["captions"]
    assert not any(k.startswith("icon:123") for k in by)  # no words, no concept
    assert len(jobs) == sum(len(p) for r in rows for v, p in r["images"].items() if v != "twitter")


def test_held_out_sets_and_reserved_sets_never_reach_training(tmp_path, monkeypatch):
    train = ic.parse_set(_package(tmp_path, "mdi", {"cat": CAT, "umbrella": UMBRELLA, "anchor": CAT}))
    held = ic.parse_set(_package(tmp_path, "fxemoji", {"cat": CAT, "umbrella": UMBRELLA, "only-here": CAT},
                                 licence="Apache-2.0"))
    monkeypatch.setattr("retrieval.training.style_sets.HELD_OUT_SETS", ("fxemoji",))
    monkeypatch.setitem(ic.EMOJI_SETS, "fxemoji", "1")
    rows, _ = assign(_emoji_rows(), [train, held], held_out=0.5, seed=0)
    for r in rows:
        assert "fxemoji" not in r["images"] and not any("fxemoji" in p for v in r["images"].values() for p in v)
    assert rows[[r["key"] for r in rows].index("2602")]["heldout_styles"]["fxemoji"] == ["images/fxemoji/umbrella.png"]
    assert "icon:only-here" not in {r["key"] for r in rows}  # a concept only the held-out set draws
    assert {r["split"] for r in rows if r["key"].startswith("icon:")} <= {"train", "heldout"}
    paths = write_style_manifests(tmp_path, rows)
    manifest = [json.loads(x) for x in paths[0].read_text().splitlines()]
    gallery = [m for m in manifest if m.get("role") == "gallery"]
    assert gallery and all("fxemoji" in m["path"] for m in gallery)
    assert all("fxemoji" not in m.get("path", "") for m in manifest if m["role"] == "query")
    for name in ("openmoji", "fluent-emoji", "fluent-emoji-flat", "fluent", "fluent-emoji-high-contrast"):
        assert ic.is_reserved(name)
        with pytest.raises(ValueError):
            ic.fetch_sets(tmp_path / "cache", {name: "1.0.0"})
        with pytest.raises(ValueError):
            ic.parse_set(_package(tmp_path / name, name, {"cat": CAT}))
    assert not any(ic.is_reserved(p) for p in {**ic.EMOJI_SETS, **ic.ICON_SETS})
    assert set(ic.HELD_OUT_SETS) <= set(ic.EMOJI_SETS) | set(ic.ICON_SETS)


def test_licence_filter_keeps_permissive_licences_only():
    for ok in ("MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-3.0", "CC0-1.0", "OFL-1.1", "ISC", "BSD-3-Clause"):
        assert ic.licence_ok(ok)
    for bad in ("CC-BY-SA-4.0", "CC-BY-NC-4.0", "GPL-3.0", "", "proprietary"):
        assert not ic.licence_ok(bad)


def _batch(n: int = 8, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, 4, size, size, generator=g) * 255).to(torch.uint8)
    x[:, 3, : size // 4] = 0  # a transparent band
    return x


@pytest.mark.parametrize("size", [64, 96, 128])
def test_vendor_styles_shapes_ranges_and_determinism(size):
    x = _batch(size=size).float() / 255
    all_on = {k: 1.0 for k in STYLE_P}
    for p in (None, all_on, *({k: float(k == name) for k in STYLE_P} for name in STYLE_P)):
        a = vendor_style(x, torch.Generator().manual_seed(3), p)
        b = vendor_style(x, torch.Generator().manual_seed(3), p)
        assert a.shape == x.shape and a.dtype == torch.float32
        assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    none = vendor_style(x, torch.Generator().manual_seed(3), {k: 0.0 for k in STYLE_P})
    assert torch.equal(none, x)
    sil = vendor_style(x, torch.Generator().manual_seed(3), {k: float(k == "silhouette") for k in STYLE_P})
    assert torch.equal(sil[:, 3], x[:, 3]) and sil[:, :3].amax() <= 0.3  # same shape, dark ink


def test_augment_with_styles_is_deterministic_and_in_range():
    x = _batch()
    a = augment(x, x, torch.Generator().manual_seed(0), styles=True)
    b = augment(x, x, torch.Generator().manual_seed(0), styles=True)
    assert a.shape == (8, 3, 64, 64) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(augment(x, x, torch.Generator().manual_seed(0)),  # default unchanged: old trainer runs as before
                       augment(x, x, torch.Generator().manual_seed(0), styles=False))


def test_trainer_reads_a_dataset_with_style_sets_and_speechless_icon_concepts(tmp_path):
    """The current trainer's Dataset and batch sampler on the new concepts.json shape (sets as vendors,
    ``heldout_styles`` never loaded, icon concepts without clips)."""
    import random

    import numpy as np
    from PIL import Image

    from retrieval.training.trainer import Dataset, _step_batch

    rows = _emoji_rows()
    rows.append({"key": "icon:rocket-launch", "label": "rocket launch", "tags": [], "name": "", "group": "icon",
                 "split": "train", "captions": ["rocket launch", "a rocket launch"], "spoken": ["rocket launch"],
                 "images": {"mdi": ["images/mdi/rocket-launch.png"], "tabler": ["images/tabler/rocket-launch.png"]}})
    rows[1]["images"]["mdi"] = ["images/mdi/umbrella.png"]
    rows[1]["heldout_styles"] = {"fxemoji": ["images/fxemoji/missing-on-purpose.png"]}
    for r in rows:
        for paths in r["images"].values():
            for p in paths:
                (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGBA", (128, 128), (200, 10, 10, 255)).save(tmp_path / p)
    (tmp_path / "concepts.json").write_text(json.dumps(rows))
    (tmp_path / "clips.jsonl").write_text(json.dumps({"id": "c0", "concept": "1f408", "split": "train",
                                                      "path": "train/c0.wav", "text": "cat", "voice": "x"}) + "\n")
    np.save(tmp_path / "frames.npy", np.zeros((5, 384), np.float16))
    (tmp_path / "frames.json").write_text(json.dumps({"ids": ["c0"], "offsets": [[0, 5]]}))
    ds = Dataset(tmp_path, lambda texts: np.random.default_rng(0).standard_normal((len(texts), 384)).astype(np.float32))
    assert ds.pixels.shape == (6, 4, 64, 64)  # 3 twitter + mdi umbrella + 2 rocket; the held-out set not loaded
    b = _step_batch(ds, random.Random(0), 3)
    assert len(b["v1"]) == 3 and sum(c is not None for c in b["clips"]) <= 1
    rocket = ds.index["icon:rocket-launch"]
    assert set(ds.images[rocket]) == {"mdi", "tabler"}


def test_spoken_queries_for_held_out_styles_pair_the_unheard_voice_with_the_set(tmp_path):
    """build-data writes eval_style_<set>_speech.jsonl: held-out-voice clips -> the held-out set's gallery only
    (never the query-role pictures of other sets), for the concepts both cover."""
    from retrieval.training.build import _write_style_speech_manifests

    rows = [{"id": "a-fx", "modality": "image", "role": "gallery", "path": "images/fxemoji/a.png", "label": "a"},
            {"id": "b-fx", "modality": "image", "role": "gallery", "path": "images/fxemoji/b.png", "label": "b"},
            {"id": "a-other", "modality": "image", "role": "query", "path": "images/emojione/a.png", "label": "a"},
            {"id": "a-text", "modality": "text", "role": "query", "text": "a", "label": "a"}]
    (tmp_path / "eval_style_fxemoji.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write_style_speech_manifests(tmp_path, {"a": {"path": "heldout-voice/a.wav"}, "z": {"path": "heldout-voice/z.wav"}})
    out = [json.loads(line) for line in (tmp_path / "eval_style_fxemoji_speech.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a-fx", "b-fx", "a-speech"]
    assert out[-1] == {"id": "a-speech", "modality": "audio", "role": "query", "path": "speech/heldout-voice/a.wav",
                       "label": "a"}
    _write_style_speech_manifests(tmp_path, {})  # a rerun never reads its own output as a style manifest
    assert not (tmp_path / "eval_style_fxemoji_speech_speech.jsonl").exists()
