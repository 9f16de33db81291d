"""Video as media (issue 12): decoding by content, keyframes, limits, indexing, moment search on SQLite and Postgres.

The videos are made at test time (tests/fixtures/make_videos.py) from demo pictures and the committed
speech fixtures; see that module for what each one shows and says.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, run_json

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_videos import make_videos, write_video  # noqa: E402

from retrieval import decoders  # noqa: E402
from retrieval.moments import fuse_views  # noqa: E402
from retrieval.video import KEYFRAME_MAX_S, KEYFRAME_MIN_S, load_video  # noqa: E402

DOG_SCENE = 4.0  # dog_park.mp4: the dog is shown and named from 4 s


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def indexed(videos, tmp_path_factory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("video_data")
    summary = run_json("indexer", "add", str(videos["dog_park.mp4"].parent), "--data-dir", str(data))
    return data, summary


def search(data: Path, *query: str, target: str = "video", env: dict | None = None) -> list[dict]:
    return run_json("retrieval", "search", *query, "--target", target, "--data-dir", str(data), env=env)["hits"]


# ---------------------------------------------------------------- decoding
def test_content_decides_not_the_name(videos, tmp_path):
    renamed = tmp_path / "holiday.dat"
    shutil.copy(videos["dog_shown.webm"], renamed)
    assert decoders.sniff(renamed) == "video"  # EBML header
    assert decoders.sniff(videos["fruit.avi"]) == "video"  # RIFF....AVI
    assert decoders.sniff(videos["truncated.mp4"]) == "video"  # unreadable: the decoder says why
    assert decoders.sniff(REPO / "tests/fixtures/formats/dog_park.m4a") == "audio"
    photo_named_mp4 = tmp_path / "x.mp4"
    shutil.copy(REPO / "tests/fixtures/formats/sample.png", photo_named_mp4)
    assert decoders.sniff(photo_named_mp4) == "image"


def test_keyframes_at_scene_changes_with_speech_windows(videos):
    v = load_video(videos["dog_park.mp4"])
    assert [k.start for k in v.keyframes] == [0.0, DOG_SCENE]
    assert v.keyframes[-1].end == pytest.approx(12.0, abs=0.2)
    assert all(k.jpeg[:3] == b"\xff\xd8\xff" and max(k.image.size) <= 320 for k in v.keyframes)
    assert v.has_audio and v.speech and v.speech[0].samples.dtype == np.float32
    silent = load_video(videos["silent_cat.mp4"])
    assert not silent.has_audio and silent.speech == [] and [k.start for k in silent.keyframes] == [0.0, 5.0]


def test_keyframe_floor_and_ceiling(tmp_path):
    still = write_video(tmp_path / "still.mp4", {"video": "libx264"}, [("sun", 25)], [])
    assert [k.start for k in load_video(still).keyframes] == [0.0, KEYFRAME_MAX_S, 2 * KEYFRAME_MAX_S]
    flicker = write_video(tmp_path / "flicker.mkv", {"video": "libx264"},
                          [("dog-face", 1), ("pizza", 1)] * 4, [])
    starts = [k.start for k in load_video(flicker).keyframes]
    assert len(starts) >= 3 and all(b - a >= KEYFRAME_MIN_S for a, b in zip(starts, starts[1:]))


def test_limits_are_refused_with_the_fix(videos):
    path = videos["dog_park.mp4"]
    with pytest.raises(decoders.DecodeError, match="longer than|h limit"):
        load_video(path, max_seconds=5)
    with pytest.raises(decoders.DecodeError, match="pixels, over the"):
        load_video(path, max_pixels=10_000)
    with pytest.raises(decoders.DecodeError, match="GiB limit"):
        load_video(path, max_bytes=1000)
    with pytest.raises(decoders.DecodeError, match="truncated or damaged"):
        load_video(videos["truncated.mp4"])


# ---------------------------------------------------------------- indexing
def test_index_records_broken_video_and_goes_on(indexed):
    data, summary = indexed
    assert {k: summary[k] for k in ("added", "updated", "unchanged", "removed", "errors")} == \
        {"added": 5, "updated": 0, "unchanged": 0, "removed": 0, "errors": 1}
    errors = run_cli("indexer", "errors", "--data-dir", str(data)).stdout
    assert "truncated.mp4" in errors and "truncated or damaged" in errors
    assert {p.name for p in (data / "index").iterdir()} == {"video-frame", "video-speech"}
    with sqlite3.connect(data / "catalog.sqlite3") as db:
        rows = dict(db.execute("SELECT view, count(*) FROM items WHERE modality = 'video' GROUP BY view"))
        thumbs = db.execute("SELECT count(*) FROM thumbnails").fetchone()[0]
        silent = db.execute("SELECT count(*) FROM items JOIN files ON files.id = items.file_id "
                            "WHERE files.path LIKE '%silent_cat.mp4' AND items.view = 'speech'").fetchone()[0]
    assert rows["frame"] == thumbs >= 10 and rows["speech"] >= 4 and silent == 0


def test_rerun_is_unchanged(indexed, videos):
    data, _ = indexed
    again = run_json("indexer", "add", str(videos["dog_park.mp4"].parent), "--data-dir", str(data))
    assert (again["added"], again["updated"], again["unchanged"], again["errors"]) == (0, 0, 6, 0)  # 6: the broken one too
    assert again["known_errors"] == 1


# ---------------------------------------------------------------- search
def test_typed_query_finds_the_video_and_the_second(indexed):
    hits = search(indexed[0], "--text", "a dog")
    top = hits[0]
    assert top["name"] == "dog_park.mp4" and top["modality"] == "video" and top["view"] == "both"
    assert abs(top["start"] - DOG_SCENE) <= 1.0 and top["end"] > top["start"]
    assert "dog" in top["text"].lower()
    assert all(0.0 <= h["score"] <= 1.0 for h in hits)


def test_both_views_outrank_one_view(indexed):
    hits = {h["name"]: h for h in search(indexed[0], "--text", "a dog")}
    both = hits["dog_park.mp4"]["score"]
    assert hits["dog_shown.webm"]["score"] < both  # the dog is shown, the narration is about stocks
    assert hits["dog_said.mkv"]["score"] < both  # the dog is named over a house and a rocket


def test_spoken_query_finds_the_video_and_the_second(indexed):
    top = search(indexed[0], "--audio", str(REPO / "demo/speech/a-dog.wav"))[0]
    assert top["name"] == "dog_park.mp4" and abs(top["start"] - DOG_SCENE) <= 1.0


def test_audio_less_video_is_found_by_its_pictures(indexed):
    top = search(indexed[0], "--text", "a red apple")[0]
    assert top["name"] == "fruit.avi" and top["start"] == 0.0
    assert any(h["name"] == "silent_cat.mp4" for h in search(indexed[0], "--text", "a cat"))


def test_all_target_merges_video_moments(indexed):
    hits = search(indexed[0], "--text", "a dog", target="all")
    assert hits[0]["name"] == "dog_park.mp4" and "start" in hits[0]


def test_fusion_never_below_the_better_view():
    f, s = np.array([0.9, 0.9, 0.1]), np.array([0.8, 0.05, 0.9])
    fused = fuse_views(f, s)
    assert np.all(fused >= np.maximum(f, s)) and np.all(fused <= 1.0)
    assert fused[0] > fused[1] and fused[0] > fused[2]  # both views beat one view at the same best score
    assert np.allclose(fuse_views(f, s, weight=0.0), np.maximum(f, s))


def test_postgres_catalog(videos, pg_url, tmp_path):
    env = {"DATABASE_URL": pg_url}
    summary = run_json("indexer", "add", str(videos["dog_park.mp4"].parent), "--data-dir", str(tmp_path), env=env)
    assert (summary["added"], summary["errors"]) == (5, 1)
    top = search(tmp_path, "--text", "a dog", env=env)[0]
    assert top["name"] == "dog_park.mp4" and abs(top["start"] - DOG_SCENE) <= 1.0


# ---------------------------------------------------------------- web API and pages
@pytest.fixture(scope="module")
def client(indexed, tmp_path_factory):
    from webui import create_app

    app = create_app({"DATA_DIR": str(indexed[0]), "TESTING": True,
                      "THUMBNAIL_DIR": str(tmp_path_factory.mktemp("thumbs"))})
    return app.test_client()


def test_api_video_target_and_range_requests(client):
    r = client.post("/api/search", json={"text": "a dog", "target": "video"})
    assert r.status_code == 200, r.get_json()
    top = r.get_json()["hits"][0]
    assert top["name"] == "dog_park.mp4" and top["view"] == "both" and abs(top["start"] - DOG_SCENE) <= 1.0
    thumb = client.get(f"/api/items/{top['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg" and thumb.data[:3] == b"\xff\xd8\xff"
    whole = client.get(f"/api/items/{top['id']}/media")
    assert whole.status_code == 200 and whole.mimetype == "video/mp4" and whole.headers["Accept-Ranges"] == "bytes"
    part = client.get(f"/api/items/{top['id']}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and len(part.data) == 100 and part.data == whole.data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole.data)}"


def test_api_refuses_a_replaced_video(client, indexed, videos, tmp_path):
    hit = client.post("/api/search", json={"text": "a red apple", "target": "video"}).get_json()["hits"][0]
    path = Path(hit["path"])
    saved = tmp_path / "saved.avi"
    shutil.copy2(path, saved)
    try:
        path.unlink()
        path.symlink_to("/etc/hostname")  # same name, another file (issue 13): never served
        assert client.get(f"/api/items/{hit['id']}/media").status_code == 404
    finally:
        path.unlink()
        shutil.copy2(saved, path)


def test_item_page_has_keyframe_strip_and_transcript(client):
    top = client.post("/api/search", json={"text": "a dog", "target": "video"}).get_json()["hits"][0]
    item = client.get(f"/api/items/{top['id']}").get_json()
    assert [k["start"] for k in item["keyframes"]] == [0.0, DOG_SCENE]
    assert item["segments"] and "dog" in item["segments"][0]["text"].lower()
    assert abs(item["segments"][0]["start"] - 4.5) < 1.0
    words = item["segments"][0]["words"]  # word times, on the video's clock (the window's offset added)
    dog = next(w for w in words if "dog" in w["word"].lower())
    assert item["segments"][0]["start"] - 0.05 <= words[0]["start"] <= dog["start"] < dog["end"]
    assert dog["end"] <= item["segments"][0]["end"] + 1.0 and dog["start"] > 4.0
    page = client.get(f"/items/{top['id']}").get_data(as_text=True)
    assert '<video id="player"' in page and 'class="keyframes"' in page and 'class="seek" data-t="4.0"' in page


def test_eval_gains_video_rows(videos, tmp_path):
    import json

    rows = [{"id": "q-dog", "modality": "text", "text": "a dog", "label": "dog", "role": "query"},
            {"id": "q-apple", "modality": "text", "text": "a red apple", "label": "apple", "role": "query"},
            {"id": "v-pizza", "modality": "video", "path": str(videos["dog_park.mp4"]), "start": 0, "end": 4,
             "label": "pizza"},
            {"id": "v-dog", "modality": "video", "path": str(videos["dog_park.mp4"]), "start": 4, "end": 12,
             "label": "dog"},
            {"id": "v-apple", "modality": "video", "path": str(videos["fruit.avi"]), "start": 0, "end": 6,
             "label": "apple"},
            {"id": "v-rocket", "modality": "video", "path": str(videos["dog_said.mkv"]), "label": "rocket"}]
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_json("retrieval", "eval", "--manifest", str(manifest), "--no-rerank")
    assert out["text->video"]["n"] == 2 and out["text->video"]["R@1"] == 1.0, out
