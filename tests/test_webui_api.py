"""The JSON API and pages through Flask's test client, on archives indexed by the real pipeline.

Covers every route, good and bad input (empty query, wrong type, oversized
uploads, unknown ids, path traversal), pagination, fused queries, thumbnails,
Postgres, the OpenAPI document (checked against the routes and against real
responses) and concurrent use of one app from many threads.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import struct
import sys
import threading
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from retrieval.encoders.registry import DEFAULT_MODEL
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402  (shared with the browser tests: one index per session)

from retrieval import decoders  # noqa: E402
from webui import create_app  # noqa: E402
from webui.engine import mark_words  # noqa: E402

FIXTURES = wt.FIXTURES
CAPTIONS = json.loads((FIXTURES / "speech" / "captions.json").read_text())


@pytest.fixture(scope="module")
def speech_data(tmp_path_factory) -> Path:
    return wt.speech_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def app(speech_data, tmp_path_factory):
    return create_app({"DATA_DIR": str(speech_data), "TESTING": True,
                       "THUMBNAIL_DIR": str(tmp_path_factory.mktemp("thumbs"))})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def image_data(tmp_path_factory, tiny_openclip) -> Path:
    return wt.image_archive(tmp_path_factory, tiny_openclip)


@pytest.fixture(scope="module")
def image_app(image_data, tmp_path_factory):
    return create_app({"DATA_DIR": str(image_data), "TESTING": True,
                       "THUMBNAIL_DIR": str(tmp_path_factory.mktemp("image_thumbs"))})


def search(client, status: int = 200, **body) -> dict:
    resp = client.post("/api/search", json=body)
    assert resp.status_code == status, resp.get_json()
    return resp.get_json()


def error_of(resp, status: int, code: str | None = None) -> str:
    """Check an error response: JSON with status, code and message, no traceback."""
    assert resp.status_code == status, (resp.status_code, resp.data[:500])
    assert resp.mimetype == "application/json", resp.data[:300]
    err = resp.get_json()["error"]
    assert err["status"] == status and err["message"]
    if code:
        assert err["code"] == code, err
    body = resp.data.decode()
    assert "Traceback" not in body and 'File "' not in body and "webui-upload-" not in body
    return err["message"]


def upload(client, *files: tuple[str, bytes], **fields) -> object:
    data = {k: v for k, v in fields.items()}
    data["file"] = [(io.BytesIO(content), name) for name, content in files]
    return client.post("/api/search", data=data, content_type="multipart/form-data")


def item_id_of(client, name: str, target: str = "all") -> int:
    hits = search(client, text=name.split(".")[0].replace("_", " "), target=target, k=50)["hits"]
    return next(h["id"] for h in hits if h["name"] == name)


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(b"\x80" * int(seconds * rate))
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (no pixel data): the limit must not need a decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- search
def test_typed_words_find_each_spoken_clip(client):
    for name, sentence in CAPTIONS.items():
        data = search(client, text=sentence, target="audio", k=3)
        top = data["hits"][0]
        assert top["name"] == name, (sentence, data["hits"])
        assert top["modality"] == "audio" and top["rank"] == 0 and top["score"] > data["hits"][1]["score"]
        assert top["start"] == 0.0 and 1.5 < top["end"] < 3.0 and top["text"]


def test_hit_in_long_recording_is_the_sentence_with_marked_words(client):
    meta = json.loads((FIXTURES / "long" / "meeting.json").read_text())
    sentence = next(s for s in meta["sentences"] if "violin" in s["text"])
    top = search(client, text="when does the violin concert start", target="audio", k=3)["hits"][0]
    assert top["name"] == "meeting.flac"
    assert top["window"][0] <= sentence["start"] and top["window"][1] >= sentence["end"]
    # narrowed from the 30 s window to the ASR segment holding the sentence (Whisper's times are approximate)
    assert top["end"] - top["start"] < 8 and top["start"] < sentence["end"] and top["end"] > sentence["start"]
    assert "violin" in top["text"].lower()
    marked = {top["text"][a:b].lower() for a, b in top["marks"]}
    assert {"violin", "concert"} <= marked and "the" not in marked


def test_note_snippet_holds_and_marks_the_query_words(client):
    top = search(client, text="Apollo lunar module", target="text", k=2)["hits"][0]
    assert top["name"] == "space.txt" and top["modality"] == "text"
    assert {top["text"][a:b] for a, b in top["marks"]} >= {"Apollo", "lunar", "module"}


def test_targets_filter_and_all_merges_by_score(client):
    for target in ("audio", "text"):
        hits = search(client, text="astronauts on the moon", target=target, k=20)["hits"]
        assert hits and {h["modality"] for h in hits} == {target}
    hits = search(client, text="astronauts on the moon", k=20)["hits"]
    assert {"audio", "text"} <= {h["modality"] for h in hits}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert search(client, text="astronauts", target="image")["hits"] == []


def test_pages_continue_where_the_last_one_stopped(client):
    whole = search(client, text="a rainy morning", k=9)
    first = search(client, text="a rainy morning", k=4)
    second = search(client, text="a rainy morning", k=4, offset=4)
    assert first["has_more"] and first["next_offset"] == 4
    assert [h["id"] for h in first["hits"] + second["hits"]] == [h["id"] for h in whole["hits"][:8]]
    assert [h["rank"] for h in second["hits"]] == [4, 5, 6, 7]
    last = search(client, text="a rainy morning", k=10, offset=10)  # 17 items in all
    assert len(last["hits"]) == 7 and last["has_more"] is False and last["next_offset"] is None
    assert search(client, text="a rainy morning", k=5, offset=40)["hits"] == []


def test_text_and_uploaded_audio_fuse_into_one_query(client):
    rain = (FIXTURES / "speech" / "heavy_rain.wav").read_bytes()
    resp = upload(client, ("heavy_rain.wav", rain), text="baking a chocolate cake", target="text", k="2")
    data = resp.get_json()
    assert resp.status_code == 200, data
    assert {h["name"] for h in data["hits"]} == {"baking.txt", "weather.md"}
    kinds = {i["kind"]: i for i in data["query"]["inputs"]}
    assert set(kinds) == {"text", "audio"} and "rain" in kinds["audio"]["transcript"].lower()


def test_upload_is_typed_by_content_not_by_name(client):
    clip = (FIXTURES / "speech" / "dog_park.wav").read_bytes()
    resp = client.post("/api/search", data={"target": "audio", "file": (io.BytesIO(clip), "holiday.jpg", "image/jpeg")},
                       content_type="multipart/form-data")
    data = resp.get_json()
    assert resp.status_code == 200, data
    assert data["query"]["inputs"][0]["kind"] == "audio" and data["query"]["inputs"][0]["label"] == "holiday.jpg"
    assert data["hits"][0]["name"] == "dog_park.wav" and data["hits"][0]["score"] > 0.9


def test_compressed_and_browser_recorded_formats_are_accepted(client):
    """FLAC/MP3/Opus uploads and a WebM/Opus clip like Chromium's MediaRecorder makes."""
    import av

    for name in ("dog_park.flac", "dog_park.mp3", "dog_park.ogg"):
        data = upload(client, (name, (FIXTURES / "formats" / name).read_bytes()), target="audio").get_json()
        assert data["hits"][0]["name"] == "dog_park.wav", (name, data)
    samples = decoders.load_audio(FIXTURES / "speech" / "dog_park.wav", sample_rate=48_000)
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
        frame.rate = 48_000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    webm = buf.getvalue()
    assert webm[:4] == b"\x1a\x45\xdf\xa3"
    data = upload(client, ("blob", webm), target="audio").get_json()
    assert data["query"]["inputs"][0]["kind"] == "audio" and data["hits"][0]["name"] == "dog_park.wav", data


def test_more_like_this_uses_the_stored_item_and_leaves_it_out(client):
    dog = item_id_of(client, "dog_park.wav", "audio")
    data = search(client, items=[dog], k=20)
    assert dog not in [h["id"] for h in data["hits"]]
    assert data["query"]["inputs"] == [{"kind": "item", "label": f"item {dog}", "weight": 1.0}]
    notes = search(client, items=[dog], target="text", k=1)["hits"]
    assert notes[0]["name"] == "dogs.md"
    form = client.post("/api/search", data={"item": str(dog), "target": "text", "k": "1"},
                       content_type="multipart/form-data").get_json()
    assert form["hits"][0]["id"] == notes[0]["id"]


# ---------------------------------------------------------------- bad search input
def test_empty_query_is_refused_with_what_to_do(client):
    for body in ({}, {"text": ""}, {"text": "   "}, {"text": [], "items": []}, {"target": "audio"}):
        msg = error_of(client.post("/api/search", json=body), 400, "empty_query")
        assert "type some words" in msg
    error_of(client.post("/api/search", data={"text": " "}, content_type="multipart/form-data"), 400, "empty_query")


@pytest.mark.parametrize("body, fragment", [
    ({"text": "dog", "target": "smell"}, "unknown target"),
    ({"text": "dog", "k": 0}, "'k' must be between 1 and 100"),
    ({"text": "dog", "k": 101}, "'k' must be between"),
    ({"text": "dog", "k": "ten"}, "'k' must be a whole number"),
    ({"text": "dog", "k": True}, "'k' must be a whole number"),
    ({"text": "dog", "offset": -1}, "'offset' must be between"),
    ({"text": "dog", "offset": 990, "k": 20}, "offset + k"),
    ({"text": "dog", "colour": "red"}, "unknown field(s) colour"),
    ({"text": 42}, "'text' must be a string"),
    ({"items": ["../../etc/passwd"]}, "'items' must be a whole number"),
    ({"text": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}, "at most 8 inputs"),
])
def test_bad_parameters_are_400_with_a_message(client, body, fragment):
    assert fragment in error_of(client.post("/api/search", json=body), 400)


def test_malformed_json_and_wrong_content_type(client):
    error_of(client.post("/api/search", data="{not json", content_type="application/json"), 400, "bad_json")
    error_of(client.post("/api/search", data="[1, 2]", content_type="application/json"), 400, "bad_json")
    error_of(client.post("/api/search", data="dog", content_type="text/plain"), 415, "unsupported_type")


def test_text_over_the_limit_is_413(client):
    error_of(client.post("/api/search", json={"text": "word " * 300}), 413, "too_large")


def test_unknown_item_in_a_query_is_404(client):
    assert "item 987654 does not exist" in error_of(client.post("/api/search", json={"items": [987654]}), 404,
                                                    "unknown_item")


def test_uploads_of_the_wrong_type_are_refused_by_content(client):
    for name, content in [("noise.wav", (FIXTURES / "corrupt" / "random.mp3").read_bytes()),
                          ("note.png", b"just some words, not an image"),
                          ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'),
                          ("../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n")]:
        msg = error_of(upload(client, (name, content)), 415, "unsupported_type")
        assert "neither an image" in msg and "/" not in msg.split(" is ")[0], msg
    error_of(upload(client, ("empty.wav", b"")), 400, "empty_file")
    error_of(client.post("/api/search", data={"photo": (io.BytesIO(b"x"), "a.png")},
                         content_type="multipart/form-data"), 400, "bad_parameter")


def test_corrupt_upload_is_422_naming_the_upload_not_a_temp_path(client):
    msg = error_of(upload(client, ("holiday.png", (FIXTURES / "corrupt" / "truncated.png").read_bytes())), 422,
                   "undecodable")
    assert msg.startswith("holiday.png: not a readable image") and "/tmp" not in msg


def test_oversized_request_is_413_json(client, app):
    big = b"\x00" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    assert "25 MB limit" in error_of(upload(client, ("big.wav", big)), 413, "too_large")


def test_image_over_the_pixel_limit_is_413_without_decoding(client):
    msg = error_of(upload(client, ("huge.png", png_header_only(8_000, 7_000))), 413, "too_large")
    assert msg.startswith("huge.png is 8000x7000 = 56.0 Mpx, over the 50 Mpx limit")
    msg = error_of(upload(client, ("bomb.png", png_header_only(40_000, 40_000))), 413, "too_large")  # Pillow's guard
    assert msg.startswith("bomb.png is over the 50 Mpx limit")


def test_audio_over_the_duration_limit_is_413(client, app):
    limit = app.config["MAX_AUDIO_SECONDS"]
    for seconds in (limit + 10, limit * 3):  # checked after decoding / decoder stopped early
        msg = error_of(upload(client, ("long.wav", silent_wav(seconds))), 413, "too_large")
        assert f"{limit:g} s limit" in msg


def test_a_model_without_the_query_modality_is_422(image_app):
    """A query input the catalog's model cannot encode (say an image for a text-only model) is a 422."""
    from retrieval.encoders import Model
    from retrieval.query import Input
    from retrieval.service import QueryResources

    textonly = Model("text-only", 32, {"text": lambda: None}, {})
    image = Input("image", Image.new("RGB", (8, 8)), key="k")
    with image_app.app_context(), pytest.raises(Exception) as info:
        QueryResources(textonly).encode(image, lambda: image.value)
    assert getattr(info.value, "status", None) == 422 and "no image encoder" in str(info.value)


def test_get_on_search_is_405_json(client):
    resp = client.get("/api/search")
    error_of(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


# ---------------------------------------------------------------- items, media, thumbnails
def test_item_of_a_long_recording_has_segments_and_its_sibling_windows(client):
    top = search(client, text="when does the violin concert start", target="audio", k=1)["hits"][0]
    item = client.get(f"/api/items/{top['id']}").get_json()
    assert item["name"] == "meeting.flac" and item["modality"] == "audio"
    assert item["start"] == top["window"][0] and item["end"] == top["window"][1]
    assert len(item["parts"]) == 3 and top["id"] in [p["id"] for p in item["parts"]]
    assert any("violin" in s["text"].lower() for s in item["segments"])
    assert all(re.search(r"\w", s["text"]) for s in item["segments"])
    assert item["file"]["exists"] and len(item["file"]["sha256"]) == 64
    assert item["urls"] == {"page": f"/items/{top['id']}", "api": f"/api/items/{top['id']}",
                            "media": f"/api/items/{top['id']}/media"}


def test_unknown_and_malformed_item_ids_are_404_json(client):
    for url in ("/api/items/987654", "/api/items/987654/media", "/api/items/987654/thumbnail", "/api/items/0",
                "/api/items/-1", "/api/items/abc", "/api/items/1.5/media", "/api/nothing-here"):
        error_of(client.get(url), 404)
    assert client.get("/items/987654").status_code == 404
    assert "does not exist" in client.get("/items/987654").data.decode()


def test_path_traversal_never_reaches_a_file(client):
    clip = item_id_of(client, "dog_park.wav", "audio")
    attempts = ["/api/items/../../../../etc/passwd", "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/media",
                "/api/items/..%2f..%2fetc%2fpasswd", "/static/../../../../etc/passwd", "/static/%2e%2e/__init__.py",
                "/api/items//etc/passwd/media", "/static/..%2f__init__.py"]
    for url in attempts:
        resp = client.get(url)
        assert resp.status_code == 404, url
        assert b"root:" not in resp.data and b"create_app" not in resp.data
    resp = client.get(f"/api/items/{clip}/media?path=/etc/passwd&file=../../etc/passwd")
    assert resp.status_code == 200 and resp.data == (FIXTURES / "speech" / "dog_park.wav").read_bytes()


def test_media_serves_the_file_by_id_with_ranges(client):
    clip = item_id_of(client, "dog_park.wav", "audio")
    original = (FIXTURES / "speech" / "dog_park.wav").read_bytes()
    resp = client.get(f"/api/items/{clip}/media")
    assert resp.status_code == 200 and resp.mimetype == "audio/wav" and resp.data == original
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Accept-Ranges"] == "bytes"
    part = client.get(f"/api/items/{clip}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == original[100:200]
    flac = search(client, text="violin concert", target="audio", k=1)["hits"][0]
    assert client.get(f"/api/items/{flac['id']}/media").mimetype == "audio/flac"


def test_media_of_a_note_is_utf8_text(client):
    note = search(client, text="Apollo lunar module", target="text", k=1)["hits"][0]
    resp = client.get(f"/api/items/{note['id']}/media")
    assert resp.status_code == 200 and resp.content_type == "text/plain; charset=utf-8"
    assert resp.data.decode("utf-8") == decoders.load_text(FIXTURES / "notes" / "space.txt")


def test_thumbnail_is_refused_for_audio_and_bad_sizes(client):
    clip = item_id_of(client, "dog_park.wav", "audio")
    assert "images only" in error_of(client.get(f"/api/items/{clip}/thumbnail"), 404, "no_thumbnail")
    error_of(client.get(f"/api/items/{clip}/thumbnail?size=4096"), 400, "bad_parameter")


def test_thumbnails_are_made_once_and_cached_by_content(image_app, image_data):
    client = image_app.test_client()
    hits = search(client, text="shapes", target="image", k=8)["hits"]
    hit = next(h for h in hits if h["name"] == "shape_3.png")
    assert hit["width"] == 96 and hit["height"] == 96
    url = f"/api/items/{hit['id']}/thumbnail"
    resp = client.get(url + "?size=128")
    assert resp.status_code == 200 and resp.mimetype == "image/webp"
    thumb = Image.open(io.BytesIO(resp.data))
    assert thumb.format == "WEBP" and thumb.size == (96, 96)  # never upscaled
    sha = client.get(f"/api/items/{hit['id']}").get_json()["file"]["sha256"]
    cached = Path(image_app.config["THUMBNAIL_DIR"]) / sha[:2] / f"{sha}-128.webp"
    assert cached.read_bytes() == resp.data
    cached.write_bytes(b"RIFF-marker")  # served from the cache from now on
    assert client.get(url + "?size=128").data == b"RIFF-marker"
    cached.unlink()
    etag = resp.headers["ETag"]
    assert client.get(url + "?size=128", headers={"If-None-Match": etag}).status_code == 304
    media = client.get(f"/api/items/{hit['id']}/media")
    assert media.mimetype == "image/png" and media.data == Path(hit["path"]).read_bytes()
    page = client.get(f"/items/{hit['id']}").data.decode()
    assert f'<img class="full" src="/api/items/{hit["id"]}/media"' in page and "96 × 96 px" in page


def test_uploaded_image_finds_itself_first(image_app):
    client = image_app.test_client()
    query = Path(search(client, text="shapes", target="image", k=8)["hits"][0]["path"])
    resp = upload(client, ("query", query.read_bytes()), target="image", k="3")
    data = resp.get_json()
    assert resp.status_code == 200, data
    assert data["hits"][0]["path"] == str(query) and data["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert data["query"]["inputs"][0]["kind"] == "image"


def test_missing_file_is_404_not_a_crash(tmp_path, tiny_openclip):
    folder = tmp_path / "photos"
    paths = wt.shape_images(folder, 2)
    wt.index_folder(folder, tmp_path / "data", model=f"openclip:{tiny_openclip}")
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    client = app.test_client()
    hit = next(h for h in search(client, items=[1], k=5)["hits"])
    Path(hit["path"]).unlink()
    assert "no longer at" in error_of(client.get(f"/api/items/{hit['id']}/media"), 404, "file_missing")
    error_of(client.get(f"/api/items/{hit['id']}/thumbnail"), 404, "file_missing")
    assert client.get(f"/api/items/{hit['id']}").get_json()["file"]["exists"] is False
    assert "no longer at" in client.get(f"/items/{hit['id']}").data.decode()
    assert len(paths) == 2


# ---------------------------------------------------------------- status, health, pages
def test_stats_count_items_and_list_errors(client, speech_data):
    stats = client.get("/api/stats").get_json()
    assert stats["indexed"] and stats["model"] == DEFAULT_MODEL and stats["revision"] >= 1
    assert stats["items"] == {"image": 0, "audio": 11, "text": 6}
    assert stats["files"]["ok"] == 15 and stats["files"]["error"] == 1
    assert stats["errors"]["total"] == 1 and stats["errors"]["shown"][0]["path"].endswith("broken.png")
    assert stats["errors"]["shown"][0]["error"]
    assert stats["last_run"]["summary"]["added"] == 15 and stats["last_run"]["finished_at"]
    assert stats["indices"]["audio"]["count"] == 11 and stats["indices"]["text"]["dim"] == 384
    assert stats["data_dir"] == str(speech_data)


def test_stats_keep_catalog_counts_per_revision(tmp_path):
    """Counting the whole catalog took 660 ms at 1M items: /api/stats counts once per catalog revision."""
    from sqlalchemy import event

    notes = tmp_path / "notes"
    shutil.copytree(FIXTURES / "notes", notes)
    wt.index_folder(notes, tmp_path / "data")
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True, "RELOAD_CHECK_SECONDS": 0})
    client = app.test_client()
    first = client.get("/api/stats").get_json()
    statements: list[str] = []
    sql = app.extensions["webui.engine"].catalog().engine
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(sql, "before_cursor_execute", listener)
    try:
        again = client.get("/api/stats").get_json()
    finally:
        event.remove(sql, "before_cursor_execute", listener)
    assert again == first
    assert not [q for q in statements if "count(" in q.lower() or "group by" in q.lower()], statements
    (notes / "extra.txt").write_text("One more note about lighthouses.")
    wt.index_folder(notes, tmp_path / "data")  # a new revision: counted again
    after = client.get("/api/stats").get_json()
    assert after["items"]["text"] == first["items"]["text"] + 1 and after["revision"] > first["revision"]
    assert after["files"]["ok"] == first["files"]["ok"] + 1


def test_health(client):
    data = client.get("/api/health").get_json()
    assert data == {"status": "ok", "indexed": True, "model": DEFAULT_MODEL, "revision": data["revision"], "items": 17}


def test_pages_render_without_inline_scripts(client):
    home = client.get("/")
    assert home.status_code == 200 and home.mimetype == "text/html"
    html = home.data.decode()
    assert 'id="q"' in html and 'role="tablist"' in html and "/static/app.js" in html
    assert "script-src 'self'" in home.headers["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline scripts would be blocked by the CSP"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "no external resources"
    status = client.get("/status").data.decode()
    assert "broken.png" in status and DEFAULT_MODEL in status and ">11<" in status
    for asset in ("/static/app.js", "/static/style.css", "/static/item.js", "/static/favicon.svg"):
        assert client.get(asset).status_code == 200, asset


def test_item_page_shows_player_transcript_and_path(client):
    clip = item_id_of(client, "red_apple.wav", "audio")
    html = client.get(f"/items/{clip}").data.decode()
    assert f'src="/api/items/{clip}/media"' in html and "<audio" in html
    words = re.sub(r"<[^>]+>", "", html)  # the transcript's words are each a seek target (a span)
    assert "red apple" in words.lower() and "red_apple.wav" in html and f'href="/?like={clip}"' in html
    assert 'class="word" data-t="' in html
    note = search(client, text="Apollo lunar module", target="text", k=1)["hits"][0]
    assert "Neil" in client.get(f"/items/{note['id']}").data.decode()


def test_unknown_page_is_an_html_404(client):
    resp = client.get("/no/such/page")
    assert resp.status_code == 404 and resp.mimetype == "text/html" and "Not found" in resp.data.decode()


def test_empty_data_dir_says_how_to_index(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path / "nothing-yet"), "TESTING": True})
    client = app.test_client()
    assert client.get("/api/health").get_json() == {"status": "ok", "indexed": False, "model": None,
                                                    "revision": 0, "items": 0}
    assert "python -m indexer add" in error_of(client.post("/api/search", json={"text": "dog"}), 503, "not_indexed")
    stats = client.get("/api/stats").get_json()
    assert stats["indexed"] is False and "python -m indexer add" in stats["hint"]
    assert "Nothing is indexed yet" in client.get("/status").data.decode()
    error_of(client.get("/api/items/1"), 503, "not_indexed")
    assert not (tmp_path / "nothing-yet").exists(), "the web app must not create the data directory"


def test_unreachable_database_is_503_json(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path), "TESTING": True,
                      "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2"})
    client = app.test_client()
    msg = error_of(client.get("/api/health"), 503, "database_unavailable")
    assert "DATABASE_URL" in msg and "127.0.0.1:1" not in msg
    error_of(client.post("/api/search", json={"text": "dog"}), 503, "database_unavailable")
    page = client.get("/status")
    assert page.status_code == 503 and "Traceback" not in page.data.decode()


@pytest.fixture()
def own_pg_url():
    """A fresh database of its own on the real Postgres server (the session's is shared with other tests)."""
    from conftest import new_pg_database

    url, drop = new_pg_database("webui_test")
    yield url
    drop()


def test_catalog_on_postgres(tmp_path, own_pg_url):
    notes = tmp_path / "notes"
    shutil.copytree(FIXTURES / "notes", notes)
    wt.index_folder(notes, tmp_path / "data", database_url=own_pg_url)
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": own_pg_url, "TESTING": True})
    client = app.test_client()
    top = search(client, text="Apollo lunar module", k=1)["hits"][0]
    assert top["name"] == "space.txt"
    assert client.get(f"/api/items/{top['id']}").get_json()["path"] == str(notes / "space.txt")
    assert client.get("/api/stats").get_json()["items"]["text"] == 6


def test_catalog_on_postgres_named_only_by_the_environment(tmp_path, own_pg_url, monkeypatch):
    """``DATABASE_URL`` in the environment, as the README says and the indexer reads it: the data directory then
    holds no SQLite file, and the app must not answer "nothing is indexed yet"."""
    notes = tmp_path / "notes"
    shutil.copytree(FIXTURES / "notes", notes)
    monkeypatch.setenv("DATABASE_URL", own_pg_url)
    wt.index_folder(notes, tmp_path / "data")
    assert not list((tmp_path / "data").glob("*.sqlite3"))
    client = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True}).test_client()
    assert search(client, text="Apollo lunar module", k=1)["hits"][0]["name"] == "space.txt"
    assert client.get("/api/stats").get_json()["items"]["text"] == 6


# ---------------------------------------------------------------- index changes under a running app
def test_new_indexer_run_is_picked_up_and_stale_index_is_rebuilt_in_memory(tmp_path):
    notes = tmp_path / "notes"
    shutil.copytree(FIXTURES / "notes", notes)
    data = tmp_path / "data"
    wt.index_folder(notes, data)
    app = create_app({"DATA_DIR": str(data), "TESTING": True, "RELOAD_CHECK_SECONDS": 0})
    client = app.test_client()
    assert search(client, text="lighthouse keeper feeding seagulls", k=1)["hits"][0]["name"] != "lighthouse.txt"
    (notes / "lighthouse.txt").write_text("The lighthouse keeper fed the seagulls fresh sardines every evening.")
    wt.index_folder(notes, data)
    assert search(client, text="lighthouse keeper feeding seagulls", k=1)["hits"][0]["name"] == "lighthouse.txt"

    index_file = data / "index" / "text" / "index.faiss"
    manifest = json.loads((data / "index" / "text" / "manifest.json").read_text())
    manifest["revision"] -= 1  # as if an indexer run died between its database commit and its index save
    (data / "index" / "text" / "manifest.json").write_text(json.dumps(manifest))
    before = index_file.stat().st_mtime_ns
    fresh = create_app({"DATA_DIR": str(data), "TESTING": True}).test_client()
    assert search(fresh, text="lighthouse keeper feeding seagulls", k=1)["hits"][0]["name"] == "lighthouse.txt"
    assert index_file.stat().st_mtime_ns == before, "the web app must not write the index"
    assert json.loads((data / "index" / "text" / "manifest.json").read_text())["revision"] == manifest["revision"]


def test_one_app_serves_many_threads_at_once(app):
    queries = list(CAPTIONS.values()) + ["when does the violin concert start", "Apollo lunar module"]
    expected = {}
    with app.test_client() as c:
        for q in queries:
            expected[q] = [h["id"] for h in search(c, text=q, k=5)["hits"]]
    failures: list[str] = []

    def worker(offset: int) -> None:
        c = app.test_client()
        for i in range(len(queries)):
            q = queries[(i + offset) % len(queries)]
            resp = c.post("/api/search", json={"text": q, "k": 5})
            got = [h["id"] for h in resp.get_json()["hits"]] if resp.status_code == 200 else resp.status_code
            if got != expected[q]:
                failures.append(f"{q}: {got} != {expected[q]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


# ---------------------------------------------------------------- OpenAPI
def _rules(app) -> set[tuple[str, str]]:
    from webui import clip_compat

    out = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule in clip_compat.ROUTES:
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_openapi_documents_exactly_the_routes(client, app):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _rules(app)
    for path, ops in doc["paths"].items():
        for params in re.findall(r"{(\w+)}", path):
            for op in ops.values():
                assert params in [p["name"] for p in op.get("parameters", [])], (path, params)


def _validate(value, schema: dict, doc: dict, where: str = "$") -> None:
    """A small JSON-Schema subset (type, enum, required, properties, items, oneOf, $ref, additionalProperties)."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                _validate(value, option, doc, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no option: {errors}")
    types = schema.get("type")
    if types:
        types = [types] if isinstance(types, str) else types
        py = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
              "integer": int, "number": (int, float)}
        ok = any(isinstance(value, py[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        assert ok, f"{where}: {value!r} is not {types}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{where}: undocumented {set(value) - set(props)}"
        for key, sub in props.items():
            if key in value:
                _validate(value[key], sub, doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _validate(v, schema["items"], doc, f"{where}[{i}]")


def _response_schema(doc, path, method, status):
    content = doc["paths"][path][method]["responses"][str(status)].get("content", {})
    return content.get("application/json", {}).get("schema")


def test_real_responses_match_the_openapi_schemas(client):
    doc = client.get("/api/openapi.json").get_json()
    long_hit = search(client, text="violin concert", k=1)["hits"][0]
    calls = [
        ("/api/search", "post", client.post("/api/search", json={"text": "violin concert", "k": 5})),
        ("/api/search", "post", client.post("/api/search", json={"text": "Apollo", "target": "text", "k": 2})),
        ("/api/search", "post", client.post("/api/search", json={"text": "dog", "target": "video"})),
        ("/api/search", "post", client.post("/api/search", json={})),
        ("/api/search", "post", client.post("/api/search", json={"items": [987654]})),
        ("/api/search", "post", upload(client, ("x.bin", b"\x00\x01garbage"))),
        ("/api/search", "post", upload(client, ("a.png", png_header_only(20_000, 20_000)))),
        ("/api/items/{item_id}", "get", client.get(f"/api/items/{long_hit['id']}")),
        ("/api/items/{item_id}", "get", client.get("/api/items/987654")),
        ("/api/items/{item_id}/media", "get", client.get("/api/items/987654/media")),
        ("/api/items/{item_id}/thumbnail", "get", client.get(f"/api/items/{long_hit['id']}/thumbnail?size=3")),
        ("/api/stats", "get", client.get("/api/stats")),
        ("/api/health", "get", client.get("/api/health")),
    ]
    for path, method, resp in calls:
        responses = doc["paths"][path][method]["responses"]
        assert str(resp.status_code) in responses, (path, resp.status_code)
        schema = _response_schema(doc, path, method, resp.status_code)
        if schema is not None:
            _validate(resp.get_json(), schema, doc, f"{method.upper()} {path} {resp.status_code}")
    _validate({"text": "dog", "items": [1], "target": "all", "k": 3, "offset": 0},
              doc["components"]["schemas"]["SearchRequest"], doc)
    with pytest.raises(AssertionError):
        _validate({"text": "dog", "colour": 1}, doc["components"]["schemas"]["SearchRequest"], doc)
    with pytest.raises(AssertionError):  # the validator itself can fail
        _validate({"hits": "none"}, doc["components"]["schemas"]["SearchResponse"], doc)


# ---------------------------------------------------------------- helpers
def test_mark_words_marks_words_and_their_plurals_but_not_stopwords_or_longer_words():
    text = "The dogs and the dog-walker walked; a dogma is not a dog."
    marked = [text[a:b] for a, b in mark_words(text, ["the", "dog", "walk"])]
    assert marked == ["dogs", "dog", "walker", "walked", "dog"]
    assert mark_words(text, ["a", "an"]) == []


def test_the_orjson_provider_writes_and_reads_what_flasks_own_does(tmp_path):
    """webui/fast_json.py: the same documents as Flask's standard-library provider (dates as Flask writes
    them, int keys as strings, non-ASCII text), and bodies orjson refuses still read as the stdlib reads them."""
    import datetime

    from flask.json.provider import DefaultJSONProvider

    from webui import fast_json

    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    doc = {"hits": [{"id": 3, "score": 0.25, "name": "café.png"}], 7: "seven", "when": datetime.date(2026, 12, 6),
           "at": datetime.datetime(2026, 12, 6, 23, 5, tzinfo=datetime.timezone.utc)}
    with app.app_context():
        ours = app.json.response(doc).get_data()
        own = DefaultJSONProvider(app)
        own.sort_keys = False  # as the app had it before (mixed int and str keys cannot be sorted)
        flask_own = own.response(doc).get_data()
        assert json.loads(ours) == json.loads(flask_own)
        assert list(json.loads(ours)) == ["hits", "7", "when", "at"]  # built order, not sorted
    assert fast_json.loads(b'{"v": [1, 2.5]}') == {"v": [1, 2.5]}
    nan = fast_json.loads('{"v": [NaN, Infinity]}')  # orjson refuses these; json reads them (then 400 "finite")
    assert math.isnan(nan["v"][0]) and nan["v"][1] == math.inf
