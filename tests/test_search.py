"""Search through the real pipeline: text->audio, audio->text, image->image, fused queries, segments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import FIXTURES, run_json

CAPTIONS = json.loads((FIXTURES / "speech" / "captions.json").read_text())


@pytest.fixture(scope="module")
def speech_archive(tmp_path_factory) -> Path:
    """Spoken clips, text notes and a long recording, indexed once with the default model."""
    root = tmp_path_factory.mktemp("speech_archive")
    shutil.copytree(FIXTURES / "speech", root / "archive" / "speech", ignore=shutil.ignore_patterns("*.json"))
    shutil.copytree(FIXTURES / "notes", root / "archive" / "notes")
    shutil.copytree(FIXTURES / "long", root / "archive" / "long", ignore=shutil.ignore_patterns("*.json"))
    summary = run_json("indexer", "add", str(root / "archive"), "--data-dir", str(root / "data"))
    assert summary["errors"] == 0
    return root / "data"


def _search(data: Path, *args: str) -> list[dict]:
    return run_json("retrieval", "search", *args, "--data-dir", str(data))["hits"]


def test_text_finds_the_spoken_clip(speech_archive):
    for name, sentence in CAPTIONS.items():
        hits = _search(speech_archive, "--text", sentence, "--target", "audio", "-k", "3")
        assert Path(hits[0]["path"]).name == name, (sentence, hits)
        assert hits[0]["modality"] == "audio" and hits[0]["score"] > hits[1]["score"]


def test_paraphrased_text_finds_the_clip(speech_archive):
    hits = _search(speech_archive, "--text", "a puppy running around a park", "--target", "audio", "-k", "3")
    assert Path(hits[0]["path"]).name == "dog_park.wav"


def test_spoken_query_finds_the_matching_note(speech_archive):
    hits = _search(speech_archive, "--audio", str(FIXTURES / "speech" / "stock_market.wav"), "--target", "text", "-k", "3")
    assert hits[0]["modality"] == "text"
    assert Path(hits[0]["path"]).name == "finance.txt"  # about shares sliding on Wall Street


def test_hit_in_long_recording_says_where(speech_archive):
    meta = json.loads((FIXTURES / "long" / "meeting.json").read_text())
    target = next(s for s in meta["sentences"] if "violin" in s["text"])
    hits = _search(speech_archive, "--text", "when does the violin concert start", "--target", "audio", "-k", "3")
    top = hits[0]
    assert Path(top["path"]).name == "meeting.flac"
    assert top["window"][0] <= target["start"] and top["window"][1] >= target["end"]  # the 30 s item
    assert abs(top["start"] - target["start"]) < 1.0 and abs(top["end"] - target["end"]) < 1.0  # the sentence
    assert "violin" in top["text"].lower()


def test_fused_text_and_audio_query(speech_archive):
    """A typed phrase plus a spoken clip is one query whose results cover both."""
    hits = _search(speech_archive, "--text", "baking a chocolate cake", "--audio",
                   str(FIXTURES / "speech" / "heavy_rain.wav"), "--target", "text", "-k", "2")
    assert {Path(h["path"]).name for h in hits} == {"baking.txt", "weather.md"}


def test_target_all_merges_modalities(speech_archive):
    hits = _search(speech_archive, "--text", "astronauts on the moon", "-k", "6")
    assert {"audio", "text"} <= {h["modality"] for h in hits}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def _shape_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    colours = ["red", "green", "blue", "orange", "purple", "black", "yellow", "cyan"]
    for i, colour in enumerate(colours):
        img = Image.new("RGB", (96, 96), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle((8 + 4 * i, 8, 60 + 3 * i, 50 + 5 * i), fill=colour)
        draw.ellipse((50 - 4 * i, 40, 90, 90 - 3 * i), fill=colours[(i + 3) % len(colours)])
        path = folder / f"shape_{i}.png"
        img.save(path)
        paths.append(path)
    return paths


def test_image_finds_same_and_near_duplicate_first(tmp_path, tiny_openclip):
    paths = _shape_images(tmp_path / "photos")
    query = paths[3]
    near = tmp_path / "photos" / "shape_3_small.jpg"
    Image.open(query).resize((80, 80)).save(near, quality=85)  # recompressed, resized copy
    data = tmp_path / "data"
    run_json("indexer", "add", str(tmp_path / "photos"), "--data-dir", str(data), "--model", f"openclip:{tiny_openclip}")
    hits = _search(data, "--image", str(query), "--target", "image", "-k", "3")
    assert Path(hits[0]["path"]) == query and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert Path(hits[1]["path"]) == near


def test_words_deep_inside_a_long_note_are_found(tmp_path):
    """A note longer than the text encoder's window is indexed as passages; the last one matches."""
    filler = " ".join(["The committee discussed the quarterly budget and office logistics at length."] * 40)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "minutes.txt").write_text(filler + " Finally, the lighthouse keeper fed the seagulls fresh sardines.")
    (tmp_path / "notes" / "other.txt").write_text("A recipe for tomato soup with basil and garlic.")
    data = tmp_path / "data"
    run_json("indexer", "add", str(tmp_path / "notes"), "--data-dir", str(data))
    hits = _search(data, "--text", "lighthouse keeper feeding seagulls", "--target", "text", "-k", "2")
    assert Path(hits[0]["path"]).name == "minutes.txt" and "seagulls" in hits[0]["text"]
