"""The clip-retrieval compatible routes (/indices-list, /knn-service, /metadata): clip back's JSON in and out,
answered by the one query API (same hits as /api/search), bad input a clear 400.

On the demo pictures and notes indexed by the real indexer with the bundled model. The peer's own front
end and client against a real server: tests/browser/test_clip_front.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

# what clip-retrieval 2.45.0's front end sends for a typed query (front/src/clip-front.js callClip)
FRONT_END_BODY = {"text": "a dog", "image": None, "image_url": None, "embedding_input": None, "modality": "image",
                  "num_images": 40, "indice_name": "data", "num_result_ids": 3000, "use_mclip": False,
                  "deduplicate": True, "use_safety_model": True, "use_violence_detector": True,
                  "aesthetic_score": "", "aesthetic_weight": "0.5"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from webui import create_app

    root = tmp_path_factory.mktemp("clip_compat")
    for name in ("images", "notes"):
        shutil.copytree(wt.DEMO / name, root / "archive" / name)
    shutil.copy(wt.DEMO / "images" / "dog-face-google.png", root / "archive" / "images" / "zz-dog-copy.png")
    summary = wt.index_folder(root / "archive", root / "data")
    assert summary["errors"] == 0 and summary["added"] == 37, summary
    return create_app({"DATA_DIR": str(root / "data"), "TESTING": True, "WARMUP": False,
                       "THUMBNAIL_DIR": str(root / "thumbs")})


@pytest.fixture()
def client(app):
    return app.test_client()


def knn(client, status: int = 200, content_type: str = "text/plain;charset=UTF-8", **body):
    resp = client.post("/knn-service", data=json.dumps(body), content_type=content_type)
    assert resp.status_code == status, resp.get_json()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    return resp.get_json()


def test_indices_list_names_the_one_index(client):
    resp = client.get("/indices-list")
    assert resp.get_json() == ["data"] and resp.headers["Access-Control-Allow-Origin"] == "*"


def test_the_front_ends_own_request_gets_clip_backs_answer(client):
    hits = knn(client, **FRONT_END_BODY)
    # every picture (3000 asked) but near-duplicates (deduplicate: the copy, twins drawn alike); all carry metadata
    captions = [h["caption"] for h in hits]
    assert 28 <= len(hits) < 33 and len({"dog-face-google.png", "zz-dog-copy.png"} & set(captions)) == 1
    assert all(set(h) >= {"id", "similarity", "caption", "url", "modality"} for h in hits)
    # the two dog pictures first (the Google one may be shown as its identical copy: their scores tie)
    assert {hits[0]["caption"], hits[1]["caption"]} - {"zz-dog-copy.png"} <= {"dog-face-google.png", "dog-face-twitter.png"}
    assert "dog-face-twitter.png" in {hits[0]["caption"], hits[1]["caption"]}
    assert all(h["modality"] == "image" and h["url"].startswith("http://localhost/api/items/") for h in hits)
    thumb = client.get(hits[0]["url"].removeprefix("http://localhost"))
    assert thumb.status_code == 200 and thumb.mimetype == "image/webp"


def test_deduplicate_shows_a_near_duplicate_once(client):
    body = {"text": "a dog", "modality": "image", "num_images": 40, "num_result_ids": 40}
    twins = {"dog-face-google.png", "zz-dog-copy.png"}  # the same picture twice
    both = [h["caption"] for h in knn(client, **body, deduplicate=False)]
    once = [h["caption"] for h in knn(client, **body, deduplicate=True)]
    assert twins <= set(both) and len(both) == 33
    first = min(twins, key=both.index)
    assert twins & set(once) == {first}  # the better-ranked one is kept (identical pictures: whichever ranks first)
    assert [c for c in both if c in once] == once and len(once) < 33


def test_same_hits_as_the_json_api(client):
    for body, api in (({"text": "a red apple", "modality": "image"}, {"text": "a red apple", "target": "image"}),
                      ({"text": "rockets and space", "modality": "text"}, {"text": "rockets and space", "target": "text"})):
        clip = knn(client, **body, num_images=3, num_result_ids=10, indice_name="data")
        ours = client.post("/api/search", json={**api, "k": 10}).get_json()["hits"]
        assert [h["id"] for h in clip] == [h["id"] for h in ours]
        assert [h["similarity"] for h in clip] == pytest.approx([h["similarity"] for h in ours], abs=1e-4)
        assert all("caption" in h for h in clip[:3]) and not any("caption" in h for h in clip[3:])
    note = knn(client, text="rockets and space", modality="text", num_images=1)[0]
    assert "url" not in note and note["media"].endswith(f"/api/items/{note['id']}/media") and note["caption"]


def test_image_embedding_and_result_url_queries(client):
    picture = wt.DEMO / "images" / "pizza-google.png"
    by_image = knn(client, image=base64.b64encode(picture.read_bytes()).decode(), modality="image", num_images=5)
    assert by_image[0]["caption"] == "pizza-google.png"
    vector = client.application.extensions["webui.engine"].service().model.encode("text", ["a bicycle"])[0]
    by_vector = knn(client, embedding_input=vector.tolist(), modality="image", num_images=4)
    ours = client.post("/api/search", json={"vector": vector.tolist(), "target": "image", "k": 4}).get_json()["hits"]
    assert [h["id"] for h in by_vector] == [h["id"] for h in ours] and "bicycle" in by_vector[0]["caption"]
    similar = knn(client, image_url=by_image[0]["url"], modality="image", num_images=5)  # the front's "search similar"
    assert by_image[0]["id"] not in [h["id"] for h in similar] and "pizza" in similar[0]["caption"]


def test_metadata_of_ids_in_one_call(client):
    hits = knn(client, text="a cat", modality="image", num_images=0, num_result_ids=5)
    assert all(set(h) == {"id", "similarity"} for h in hits)
    ids = [h["id"] for h in hits] + [987654]
    resp = client.post("/metadata", data=json.dumps({"ids": ids, "indice_name": "data"}), content_type="text/plain")
    out = resp.get_json()
    assert [r["id"] for r in out] == ids and out[-1]["metadata"] is None
    assert out[0]["metadata"]["caption"].startswith("cat-face") and out[0]["metadata"]["url"].endswith("/thumbnail")
    assert client.post("/metadata", json={"ids": [], "indice_name": "data"}).get_json() == []


def test_cross_origin_preflight_and_token_free_reads(app):
    resp = app.test_client().options("/knn-service", headers={"Origin": "http://elsewhere",
                                                               "Access-Control-Request-Method": "POST"})
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    app.config["TOKEN"] = "secret"
    try:  # searching only reads: no token needed, as for /api/search
        assert knn(app.test_client(), text="a dog", num_images=1, modality="image")
    finally:
        app.config["TOKEN"] = None


@pytest.mark.parametrize("body, status, fragment", [
    ({"text": "a dog", "modality": "image"}, 400, "'num_images' must be a whole number"),
    ({"text": "a dog", "modality": "image", "num_images": "ten"}, 400, "'num_images' must be a whole number"),
    ({"text": "a dog", "modality": "image", "num_images": 5, "num_result_ids": 0}, 400, "'num_result_ids'"),
    ({"text": "a dog", "modality": "video", "num_images": 5}, 400, "'modality' must be one of"),
    ({"text": "a dog", "num_images": 5, "indice_name": "laion5B"}, 400, "unknown index 'laion5B'"),
    ({"text": "a dog", "num_images": 5, "colour": "red"}, 400, "unknown field(s) colour"),
    ({"text": "", "num_images": 5}, 400, "the query is empty"),
    ({"text": 7, "num_images": 5}, 400, "'text' must be a string"),
    ({"image": "%%%not base64", "num_images": 5}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"just some bytes").decode(), "num_images": 5}, 415, "neither an image"),
    ({"image_url": "http://example.com/cat.jpg", "num_images": 5}, 400, "not fetched"),
    ({"embedding_input": [0.5, 0.5], "num_images": 5}, 400, "uses 384"),
    ({"text": "a dog", "num_images": 5, "deduplicate": "yes"}, 400, "'deduplicate' must be true or false"),
    ({"text": "a dog", "num_images": 5, "use_mclip": 1}, 400, "'use_mclip' must be true or false"),
    ({"text": "a dog", "num_images": 5, "aesthetic_score": "high"}, 400, "'aesthetic_score' must be a number"),
])
def test_bad_knn_requests_say_what_to_fix(client, body, status, fragment):
    resp = client.post("/knn-service", data=json.dumps(body), content_type="text/plain")
    assert resp.status_code == status, resp.get_json()
    assert fragment in resp.get_json()["error"]["message"]


def test_bad_bodies_and_metadata_requests_are_400(client):
    for route in ("/knn-service", "/metadata"):
        for data in ("", "{not json", "[1, 2]"):
            resp = client.post(route, data=data, content_type="text/plain")
            assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_json", (route, data)
    for ids in ("12", [1.5], [True], [-1], list(range(1, 1002))):
        resp = client.post("/metadata", json={"ids": ids, "indice_name": "data"})
        assert resp.status_code == 400 and "'ids' must be a list" in resp.get_json()["error"]["message"]
