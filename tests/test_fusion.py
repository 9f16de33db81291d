"""Multi-input queries: attention fusion of weighted inputs, "not this", through the library, CLI and API.

Unit tests pin the scoring formula (one input = cosine, AND behaviour, the
negative penalty, weights). End-to-end tests index the demo emoji plus a few
recoloured (green) copies with the bundled model through the real pipeline and
FAISS index, then check that an image plus a colour word prefers the item that
has both, that "not this" demotes what resembles it, and that the CLI flags and
the API fields do what they say.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import REPO, run_cli, run_json

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

FUSION_MODEL = "triad-mini"  # the first generation (see the gallery fixture)

from retrieval.fusion import DEFAULT_TAU, attention_fuse_scores, fuse  # noqa: E402
from retrieval.index import VectorIndex  # noqa: E402

DEMO_IMAGES = REPO / "demo" / "images"
GREEN = (40, 170, 40)
RECOLOURED = ("red-apple", "fish", "umbrella", "automobile", "violin")


def _unit(*rows: list[float]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- the formula
def test_one_input_scores_are_plain_cosine():
    rng = np.random.default_rng(1)
    q = _unit(*rng.standard_normal((1, 16)))
    c = _unit(*rng.standard_normal((50, 16)))
    for weight in (1.0, 0.3, 2.0):
        assert np.array_equal(attention_fuse_scores(q, [weight], c), (c @ q.T)[:, 0])


def test_an_item_matching_both_inputs_beats_items_matching_one_strongly():
    """"image AND word": the plain mean prefers the item that matches one input perfectly, attention the one with both."""
    q = _unit([1, 0, 0, 0], [0, 1, 0, 0])
    both = [0.45, 0.45, 0.77, 0]  # matches each input moderately
    only_first, only_second = [1, 0, 0, 0], [0, 1, 0, 0]
    fillers = [[0.1, -0.1, 0.3, 1], [-0.2, 0.1, 1, 0.2], [0.1, 0.1, -0.5, 1], [-0.3, -0.2, 0.2, -1], [0.2, -0.3, -1, 0.1]]
    c = _unit(both, only_first, only_second, *fillers)
    plain = c @ fuse(q)
    assert plain[1] > plain[0] and plain[2] > plain[0]  # the mean ranks the one-sided items first
    att = attention_fuse_scores(q, [1, 1], c)
    assert int(np.argmax(att)) == 0 and att[0] > att[1] + 0.05 and att[0] > att[2] + 0.05
    # weights tilt it: an input weighted up makes the items that match it count more
    tilted = attention_fuse_scores(q, [1, 2], c)
    assert tilted[2] - tilted[1] > att[2] - att[1]
    # the temperature: tau -> infinity is the weighted mean of calibrated similarities, no AND any more
    soft = attention_fuse_scores(q, [1, 1], c, tau=1e9)
    assert soft[0] - soft[1] < att[0] - att[1]


def test_a_negative_input_lowers_only_the_items_that_resemble_it():
    rng = np.random.default_rng(2)
    q = _unit(*rng.standard_normal((1, 16)))[0]
    unwanted = _unit(*rng.standard_normal((1, 16)))[0]
    c = _unit(*rng.standard_normal((40, 16)))
    c[0] = _unit(0.6 * q + 0.8 * unwanted)[0]  # like the query, and like the "not this" input
    base = attention_fuse_scores(q[None], [1], c)
    with_not = attention_fuse_scores(np.stack([q, unwanted]), [1, -1], c)
    assert with_not[0] < base[0] - 0.1
    assert int(np.argsort(-with_not).tolist().index(0)) > int(np.argsort(-base).tolist().index(0))
    unlike = (c @ unwanted) <= (c @ unwanted).mean()  # no more like the negative than the average item
    assert np.allclose(with_not[unlike], base[unlike], atol=1e-6)
    stronger = attention_fuse_scores(np.stack([q, unwanted]), [1, -2], c)
    assert stronger[0] < with_not[0]


def test_scores_ignore_input_order_and_the_scale_of_the_weights():
    rng = np.random.default_rng(3)
    q = _unit(*rng.standard_normal((3, 16)))
    c = _unit(*rng.standard_normal((30, 16)))
    a = attention_fuse_scores(q, [1, 0.5, -1], c)
    assert np.allclose(a, attention_fuse_scores(q[::-1], [-1, 0.5, 1], c), atol=1e-6)
    assert np.allclose(a, attention_fuse_scores(q, [2, 1, -2], c), atol=1e-6)
    assert np.array_equal(a, attention_fuse_scores(q, [1, 0.5, -1], c))  # deterministic


def test_bad_arguments_are_refused():
    q, c = _unit([1, 0], [0, 1]), _unit([1, 1])
    with pytest.raises(ValueError, match="at least one input with a positive weight"):
        attention_fuse_scores(q, [-1, -1], c)
    with pytest.raises(ValueError, match="at least one input with a positive weight"):
        fuse(q, [-1, -0.5])
    with pytest.raises(ValueError, match="2 weights for 3"):
        fuse(_unit([1, 0], [0, 1], [1, 1]), [1, 1])
    with pytest.raises(ValueError, match="tau"):
        attention_fuse_scores(q, [1, 1], c, tau=0)
    with pytest.raises(ValueError, match="finite"):
        attention_fuse_scores(q, [1, float("nan")], c)


# ---------------------------------------------------------------- the index
@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW16", "PQ8x4fs,RFlat"])
def test_index_returns_stored_vectors_by_id(factory):
    rng = np.random.default_rng(4)
    x = _unit(*rng.standard_normal((600, 16)))
    ids = np.arange(600, dtype=np.int64) * 3 + 11
    index = VectorIndex.build(ids, x, model="m", checksums={}, dim=16, factory=factory)
    assert np.allclose(index.vectors(ids[[5, 0, 599]]), x[[5, 0, 599]], atol=1e-6)
    assert index.reference_sample(100).shape == (100, 16)
    assert np.allclose(index.reference_sample(), x, atol=1e-6)  # a small index: every vector
    with pytest.raises(KeyError, match="12"):
        index.vectors(np.array([12]))


def test_ivf_index_removes_ids_by_tombstones():
    """IVF removal through IDMap2 returned other items' ids afterwards; IVF keeps tombstones instead of calling
    remove_ids (retrieval.tombstones): the other items keep their ids and the removed ones are never returned."""
    rng = np.random.default_rng(5)
    x = _unit(*rng.standard_normal((600, 16)))
    ids = np.arange(600, dtype=np.int64) * 7 + 5
    index = VectorIndex.build(ids, x, model="m", checksums={}, dim=16, factory="IVF8,Flat")
    assert index.supports_remove and not index.removes_in_place
    assert index.remove(ids[:3]) == 3
    assert index.count == 597 and np.array_equal(index.tombstones, ids[:3])
    _, got = index.search(x[[300]], 1)
    assert got[0, 0] == ids[300]
    _, got = index.search(x[:3], 10)
    assert not np.isin(got, ids[:3]).any()


# ---------------------------------------------------------------- a real archive
def _recolour(path: Path, rgb: tuple[int, int, int]) -> Image.Image:
    img = Image.open(path).convert("RGBA")
    grey = ImageOps.grayscale(img.convert("RGB"))
    out = ImageOps.colorize(grey, black=(0, 0, 0), white=(255, 255, 255), mid=rgb).convert("RGBA")
    out.putalpha(img.getchannel("A"))
    return out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """The 32 demo emoji plus green copies of five of them, indexed with the first-generation bundled model
    (``FUSION_MODEL``: these tests check the fusion arithmetic against rankings of a known embedding geometry,
    where the plain mean visibly lets the picture swamp the word); returns the data dir."""
    root = tmp_path_factory.mktemp("fusion_gallery")
    archive = root / "archive"
    archive.mkdir()
    for path in sorted(DEMO_IMAGES.glob("*.png")):
        (archive / path.name).write_bytes(path.read_bytes())
    for name in RECOLOURED:
        _recolour(DEMO_IMAGES / f"{name}-twitter.png", GREEN).save(archive / f"green-{name}.png")
    summary = wt.index_folder(archive, root / "data", model=FUSION_MODEL)
    assert summary["added"] == 32 + len(RECOLOURED) and summary["errors"] == 0, summary
    return root / "data"


def _names(data: Path, *args: str) -> list[str]:
    hits = run_json("retrieval", "search", *args, "--target", "image", "-k", "37", "--data-dir", str(data))["hits"]
    return [Path(h["path"]).stem for h in hits]


def _searcher(data: Path):
    from indexer.catalog import Catalog
    from retrieval.search import Searcher

    catalog = Catalog(data)
    return catalog, Searcher(catalog.fresh_indices())


def test_image_plus_colour_word_prefers_the_item_with_both(gallery):
    """An apple image + "green" ranks the green apple above the red apples and above the other green things."""
    apple = str(DEMO_IMAGES / "red-apple-google.png")
    names = _names(gallery, "--image", apple, "--text", "green")
    assert names[0] == "green-red-apple", names[:6]
    others = [n for n in names if n.startswith("green-") and n != "green-red-apple"] + ["deciduous-tree-google",
                                                                                          "deciduous-tree-twitter"]
    assert all(names.index("green-red-apple") < names.index(n) for n in ["red-apple-google", "red-apple-twitter", *others])
    # the old plain mean of the two vectors ranked both red apples first: the image swamped the word
    from indexer import repository as repo
    from retrieval.search import QueryInput

    catalog, searcher = _searcher(gallery)
    try:
        vectors = searcher.encode_inputs([QueryInput("image", apple), QueryInput("text", "green")])
        mean = searcher.search_vector(fuse(vectors), "image", 3)
        attention = searcher.search_inputs(vectors, [1, 1], "image", 3)
        with catalog.session() as s:
            meta = repo.item_hits(s, [h.id for h in mean + attention])
    finally:
        catalog.close()
    stem = {i: Path(m["path"]).stem for i, m in meta.items()}
    assert [stem[h.id] for h in mean[:2]] == ["red-apple-google", "red-apple-twitter"]
    assert stem[attention[0].id] == "green-red-apple"


def test_single_input_search_is_unchanged(gallery):
    catalog, searcher = _searcher(gallery)
    try:
        from retrieval.search import QueryInput

        vector = searcher.encode_inputs([QueryInput("text", "a red apple")])
        old = searcher.search_vector(vector[0], "all", 10)
        assert searcher.search_inputs(vector, [0.5], "all", 10) == old
        assert searcher.search([QueryInput("text", "a red apple")], "all", 10) == old
        with pytest.raises(ValueError, match="positive weight"):
            searcher.search_inputs(vector, [-1], "all", 10)
    finally:
        catalog.close()


def test_weight_and_not_flags_on_the_command_line(gallery):
    apple, banana = str(DEMO_IMAGES / "red-apple-google.png"), str(DEMO_IMAGES / "banana-google.png")
    # a light weight on the word: the image counts most again
    assert _names(gallery, "--image", apple, "--text", "green", "--weight", "0.25")[0] == "red-apple-google"
    # "not this": bananas drop from the top of "fruit" to the bottom; unrelated items keep their place
    plain = _names(gallery, "--text", "fruit", "--no-rerank")  # multi-input queries are not re-ranked
    pushed = _names(gallery, "--text", "fruit", "--not-image", banana)
    assert plain.index("banana-google") < 5 and plain.index("banana-twitter") < 5
    assert pushed.index("banana-google") > 25 and pushed.index("banana-twitter") > 25
    assert pushed[:3] == plain[:3]
    # --weight after a plain input with a negative value is the same as --not-*
    assert _names(gallery, "--text", "fruit", "--image", banana, "--weight", "-1") == pushed


@pytest.mark.parametrize("args, message", [
    (["--text", "a", "--weight", "abc"], "'abc' is not a number"),
    (["--text", "a", "--weight", "0"], "non-zero number between -2 and 2"),
    (["--text", "a", "--weight", "5"], "non-zero number between -2 and 2"),
    (["--weight", "1", "--text", "a"], "comes after the input it weighs"),
    (["--not-text", "a", "--weight", "-1"], "must be positive"),
    (["--not-text", "red"], "at least one input to look for"),
])
def test_bad_weights_and_negative_only_queries_fail_clearly(gallery, args, message):
    proc = run_cli("retrieval", "search", *args, "--data-dir", str(gallery), check=False)
    assert proc.returncode == 2, proc
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_help_documents_negatives_and_weights():
    out = run_cli("retrieval", "search", "--help").stdout
    for flag in ("--not-text", "--not-image", "--not-audio", "--weight W"):
        assert flag in out


# ---------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def client(gallery, tmp_path_factory):
    from webui import create_app

    app = create_app({"DATA_DIR": str(gallery), "TESTING": True,
                      "THUMBNAIL_DIR": str(tmp_path_factory.mktemp("fusion_thumbs"))})
    return app.test_client()


def _api(client, status: int = 200, **body) -> dict:
    resp = client.post("/api/search", json=body)
    assert resp.status_code == status, resp.get_json()
    return resp.get_json()


def _upload(client, files: dict[str, list[Path]], **fields) -> dict:
    data = dict(fields)
    for field, paths in files.items():
        data[field] = [(io.BytesIO(p.read_bytes()), p.name) for p in paths]
    resp = client.post("/api/search", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _id(client, name: str) -> int:
    return next(h["id"] for h in _api(client, text="emoji", target="image", k=100)["hits"] if h["name"] == name)


def test_api_image_upload_plus_word(client):
    data = _upload(client, {"file": [DEMO_IMAGES / "red-apple-google.png"]}, text="green", target="image", k="5")
    assert data["hits"][0]["name"] == "green-red-apple.png", [h["name"] for h in data["hits"]]
    assert sorted((i["kind"], i["weight"]) for i in data["query"]["inputs"]) == [("image", 1.0), ("text", 1.0)]
    # the same with a weighted input list and the indexed apple instead of an upload (left out of the results)
    apple = _id(client, "red-apple-google.png")
    data = _api(client, inputs=[{"item": apple}, {"text": "green", "weight": 1}], target="image", k=5)
    assert data["hits"][0]["name"] == "green-red-apple.png" and apple not in [h["id"] for h in data["hits"]]
    # less weight on the word: the other red apple climbs, green things that are not apples fall
    ranks, lead = {}, {}
    for weight in (0.25, 1, 2):
        hits = _api(client, inputs=[{"item": apple}, {"text": "green", "weight": weight}], target="image", k=36)["hits"]
        ranks[weight] = [h["name"] for h in hits]
        score = {h["name"]: h["score"] for h in hits}
        lead[weight] = score["green-red-apple.png"] - score["red-apple-twitter.png"]
    assert 0 < lead[0.25] < lead[1] < lead[2], lead
    leaf = "deciduous-tree-google.png"
    assert ranks[0.25].index(leaf) > ranks[1].index(leaf) > ranks[2].index(leaf), ranks


def test_api_not_this_in_json_and_multipart(client):
    def names(data: dict) -> list[str]:
        return [h["name"] for h in data["hits"]]

    plain = names(_api(client, text="fruit", target="image", k=37))
    assert plain.index("banana-twitter.png") < 5
    banana = _id(client, "banana-google.png")
    for body in ({"not_items": [banana]}, {"inputs": [{"item": banana, "weight": -1}]}):
        data = _api(client, text="fruit", target="image", k=37, **body)
        assert names(data).index("banana-twitter.png") > 25 and banana not in [h["id"] for h in data["hits"]]
        assert [i["weight"] for i in data["query"]["inputs"]] == [1.0, -1.0]
    data = _api(client, text="fruit", not_text="yellow", target="image", k=5)
    assert data["query"]["words"] == ["fruit"]  # "not this" words are not marked in snippets
    for form, files in ((dict(text="fruit"), {"not_file": [DEMO_IMAGES / "banana-google.png"]}),
                        (dict(text="fruit", inputs=json.dumps([{"file": 0, "weight": -1}])),
                         {"file": [DEMO_IMAGES / "banana-google.png"]})):
        got = names(_upload(client, files, target="image", k="37", **form))
        assert got.index("banana-google.png") > 25 and got.index("banana-twitter.png") > 25, got[:8]


@pytest.mark.parametrize("body, code, message", [
    ({"text": "a", "inputs": [{"text": "b", "weight": 0}]}, "bad_parameter", "'inputs[0].weight' must be a non-zero"),
    ({"text": "a", "inputs": [{"text": "b", "weight": "x"}]}, "bad_parameter", "non-zero number between -2 and 2"),
    ({"text": "a", "inputs": [{"text": "b", "weight": True}]}, "bad_parameter", "non-zero number"),
    ({"text": "a", "inputs": [{"text": "b", "weight": 2.5}]}, "bad_parameter", "between -2 and 2"),
    ({"text": "a", "inputs": [{"text": "b", "item": 3}]}, "bad_parameter", "one of text, item"),
    ({"text": "a", "inputs": [{"file": 0}]}, "bad_parameter", "multipart"),
    ({"text": "a", "inputs": {"text": "b"}}, "bad_parameter", "'inputs' must be a list"),
    ({"not_text": "red"}, "no_positive_input", "add at least one input to look for"),
    ({"inputs": [{"text": "red", "weight": -0.5}]}, "no_positive_input", "not this"),
    ({"text": "a", "not_text": 3}, "bad_parameter", "'not_text' must be a string"),
])
def test_api_refuses_bad_weights(client, body, code, message):
    resp = client.post("/api/search", json=body)
    assert resp.status_code == 400, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == code and message in err["message"], err


def test_api_refuses_a_bad_multipart_inputs_field(client):
    png = (DEMO_IMAGES / "fish-google.png").read_bytes()
    for inputs, message in (("[{", "not valid JSON"), ('[{"file": 1}]', "'inputs[0].file' must be between 0 and 0"),
                            ('[{"file": 0}, {"file": 0, "weight": -1}]', "second time")):
        resp = client.post("/api/search", data={"text": "x", "inputs": inputs, "file": [(io.BytesIO(png), "f.png")]},
                           content_type="multipart/form-data")
        assert resp.status_code == 400 and message in resp.get_json()["error"]["message"], resp.get_json()


def test_weighted_requests_and_responses_match_the_openapi_document(client):
    from test_webui_api import _validate

    doc = client.get("/api/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    body = {"text": "fruit", "not_text": ["yellow"], "not_items": [_id(client, "banana-google.png")],
            "inputs": [{"text": "red", "weight": 0.5}], "target": "image", "k": 3}
    _validate(body, schemas["SearchRequest"], doc)
    with pytest.raises(AssertionError):
        _validate({"inputs": [{"text": "red", "colour": 1}]}, schemas["SearchRequest"], doc)
    _validate(_api(client, **body), schemas["SearchResponse"], doc)
    assert set(schemas["SearchForm"]["properties"]) >= {"not_text", "not_item", "not_file", "inputs"}
