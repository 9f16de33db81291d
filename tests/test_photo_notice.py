"""The bundled model says once what it is for when an archive holds photographs."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from conftest import REPO, run_cli, run_json
from retrieval.model_fit import looks_photographic, photo_notice

DEMO_IMAGES = REPO / "demo" / "images"


def _photo(path, seed: int, size=(640, 480)) -> None:
    """Photograph-like pixels: smooth shapes of light plus sensor noise, opaque, many colours."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(base, np.float32) + rng.normal(0, 12, (size[1], size[0], 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def test_photographs_are_told_apart_from_pictograms(tmp_path):
    _photo(tmp_path / "p.jpg", 0)
    with Image.open(tmp_path / "p.jpg") as im:
        assert looks_photographic(im)
    for png in sorted(DEMO_IMAGES.glob("*.png"))[:8]:  # transparent emoji
        with Image.open(png) as im:
            assert not looks_photographic(im), png
    flat = Image.new("RGB", (512, 512), "white")  # a large opaque drawing with few colours
    flat.paste((200, 30, 30), (100, 100, 400, 400))
    assert not looks_photographic(flat)
    assert not looks_photographic(Image.open(tmp_path / "p.jpg").resize((120, 90)))  # small: a thumbnail or icon


def test_notice_names_the_fix_only_for_the_pictogram_model():
    text = photo_notice("triad-mini", 3)
    assert text and "3 indexed picture(s)" in text and "pictograms" in text and "--model openclip:" in text
    assert photo_notice("triad-mini", 0) is None
    assert photo_notice("openclip:ViT-B-32/laion2b_s34b_b79k", 3) is None


def test_indexer_status_and_search_say_it_once(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for png in sorted(DEMO_IMAGES.glob("*.png"))[:4]:
        shutil.copyfile(png, pictures / png.name)
    data = tmp_path / "data"
    first = run_json("indexer", "add", str(pictures), "--data-dir", str(data))
    assert "notices" not in first  # pictograms only: nothing to say
    assert "notices" not in run_json("retrieval", "search", "--text", "dog", "--data-dir", str(data))

    _photo(pictures / "holiday.jpg", 1)
    _photo(pictures / "street.jpg", 2)
    summary = run_json("indexer", "add", str(pictures), "--data-dir", str(data))
    assert summary["added"] == 2 and len(summary["notices"]) == 1 and "2 indexed picture(s)" in summary["notices"][0]
    status = json.loads(run_cli("indexer", "status", "--json", "--data-dir", str(data)).stdout)
    assert status["notices"] == summary["notices"]
    result = run_json("retrieval", "search", "--text", "dog", "--data-dir", str(data))
    assert result["notices"] == summary["notices"]  # once per result, not per hit
    assert all("notice" not in json.dumps(h) for h in result["hits"])
    assert "notices" not in run_json("retrieval", "search", "--text", "dog", "--target", "text",
                                     "--data-dir", str(data))  # no pictures asked for: nothing to say
    plain = run_cli("indexer", "add", str(pictures), "--data-dir", str(data))
    assert plain.stderr.count("look like photographs") == 1
