"""Re-ranking: token features in the index, the committed re-ranker, --no-rerank."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, run_json

DEMO = REPO / "demo"


@dataclass(frozen=True)
class _Hit:
    id: int
    modality: str
    score: float


RERANK_MODEL = "triad-mini"  # the committed first generation, with its trained re-ranker (the default has none)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("rerank") / "data"
    src = data.parent / "demo"
    shutil.copytree(DEMO, src)
    run_json("indexer", "add", str(src), "--data-dir", str(data), "--model", RERANK_MODEL)
    return data


def _catalog_ids(data: Path) -> dict[str, list[int]]:
    from indexer import repository as repo
    from indexer.catalog import Catalog

    cat = Catalog(data)
    try:
        with cat.session() as s:
            return {path: [i[0] for i in items] for path, _, items in repo.items_by_file(s)}
    finally:
        cat.close()


def test_indexer_stores_token_views_per_item(demo_data):
    from retrieval.tokens import TokenStore

    store = TokenStore(demo_data / "tokens")
    ids = _catalog_ids(demo_data)
    assert json.loads((store.root / "manifest.json").read_text())["model"] == RERANK_MODEL
    views = store.get_many([i for item_ids in ids.values() for i in item_ids])
    assert set(views) == {i for item_ids in ids.values() for i in item_ids}  # every item has tokens
    by_name = {Path(p).name: views[i[0]] for p, i in ids.items()}
    apple = by_name["red-apple-twitter.png"]
    assert set(apple) == {"pixels", "name"} and apple["pixels"].shape == (17, 384)
    assert np.allclose(np.linalg.norm(apple["pixels"], axis=1), 1.0, atol=1e-2)  # unit tokens, stored as int8 with a scale per row
    clip = by_name["a-red-apple.wav"]
    assert set(clip) == {"sound", "transcript"} and 2 <= len(clip["sound"]) <= 33
    note = next(v for n, v in by_name.items() if n.endswith(".txt"))
    assert set(note) == {"text"}


def test_removed_files_lose_their_tokens_and_rebuild_restores_missing_ones(tmp_path):
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    for name in ("red-apple-twitter.png", "dog-face-google.png", "cat-face-google.png"):
        shutil.copy(DEMO / "images" / name, src / name)
    run_json("indexer", "add", str(src), "--data-dir", str(data), "--model", RERANK_MODEL)
    ids = _catalog_ids(data)
    store_files = lambda: sorted(p.name for p in (data / "tokens").glob("*/*.tok"))  # noqa: E731
    assert len(store_files()) == 3

    dog = ids[str((src / "dog-face-google.png").resolve())][0]
    (src / "dog-face-google.png").unlink()
    assert run_json("indexer", "add", str(src), "--data-dir", str(data))["removed"] == 1
    assert f"{dog}.tok" not in store_files() and len(store_files()) == 2

    for f in (data / "tokens").glob("*/*.tok"):  # lost token files (a killed run, a deleted folder)
        f.unlink()
    out = run_json("indexer", "rebuild", "--data-dir", str(data))
    assert out["tokens"] == {"written": 2, "skipped": 0, "failed": 0}
    assert len(store_files()) == 2
    again = run_json("indexer", "rebuild", "--data-dir", str(data))
    assert again["tokens"]["written"] == 0 and again["tokens"]["skipped"] == 2
    forced = run_json("indexer", "rebuild", "--data-dir", str(data), "--tokens")
    assert forced["tokens"]["written"] == 2


def test_rerank_keeps_order_outside_k_and_scores_of_untrained_pairs():
    from retrieval.rerank import create_reranker

    reranker = create_reranker(RERANK_MODEL)
    from retrieval.rerank import RerankOptions, rerank_hits

    rng = np.random.default_rng(0)

    def views(kind: str, n: int) -> dict:
        t = rng.normal(size=(n, 384)).astype(np.float32)
        return {kind: t / np.linalg.norm(t, axis=1, keepdims=True)}

    hits = [_Hit(i, "image", 0.9 - 0.01 * i) for i in range(8)]
    tokens = {h.id: views("pixels", 17) for h in hits[:6]}  # ids 6, 7 have no tokens
    query = [("text", views("text", 4), 1.0)]
    out = rerank_hits(hits, query, reranker, tokens, RerankOptions(k=4, weight=1.0))
    assert sorted(h.id for h in out[:4]) == [0, 1, 2, 3]  # only the top K moves
    assert [h.id for h in out[4:]] == [4, 5, 6, 7]
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    # a pair the re-ranker was not trained on (text -> text) keeps the first-stage list
    text_hits = [_Hit(i, "text", 0.9 - 0.01 * i) for i in range(4)]
    same = rerank_hits(text_hits, query, reranker, {h.id: views("text", 5) for h in text_hits}, RerankOptions())
    assert same == text_hits
    assert rerank_hits(hits, query, reranker, tokens, RerankOptions(weight=0.0)) == hits


def _search(data: Path, text: str, *extra: str) -> list[str]:
    hits = run_json("retrieval", "search", "--text", text, "--target", "image", "-k", "4", "--data-dir", str(data), *extra)["hits"]
    return [Path(h["path"]).name for h in hits]


def test_committed_reranker_moves_the_right_images_up(demo_data):
    # "weather": the first stage has no idea (instruments and a rocket first); the re-ranker, reading the
    # images' file-name views ("sun", "umbrella") against the query's words, brings sun and umbrella up
    first = _search(demo_data, "weather", "--no-rerank")
    reranked = _search(demo_data, "weather")
    wanted = ("sun-", "umbrella-")
    assert not first[0].startswith(wanted)
    assert reranked[0].startswith(wanted) and sum(n.startswith(wanted) for n in reranked) >= 3
    # both dog images first for "a pet" (the first stage put a cat between them)
    assert _search(demo_data, "a pet")[:2] == ["dog-face-twitter.png", "dog-face-google.png"]
    assert _search(demo_data, "weather", "--rerank-weight", "0") == first  # weight 0 = first stage


def test_rerank_options_are_checked():
    bad = run_cli("retrieval", "search", "--text", "x", "--rerank-k", "0", check=False)
    assert bad.returncode == 2 and "--rerank-k" in bad.stderr


def test_api_reranks_by_default_and_can_be_switched_off(demo_data):
    from webui import create_app

    client = create_app({"DATA_DIR": str(demo_data), "TESTING": True}).test_client()
    on = client.post("/api/search", json={"text": "weather", "target": "image", "k": 4})
    off = client.post("/api/search", json={"text": "weather", "target": "image", "k": 4, "rerank": False})
    assert on.status_code == off.status_code == 200
    assert on.json["rerank"] == {"applied": True, "k": 100} and off.json["rerank"] == {"applied": False, "k": 0}
    assert on.json["hits"][0]["name"].startswith(("sun-", "umbrella-"))
    assert [h["id"] for h in off.json["hits"]] != [h["id"] for h in on.json["hits"]]
    bad = client.post("/api/search", json={"text": "weather", "rerank": "yes please"})
    assert bad.status_code == 400 and "rerank" in bad.json["error"]["message"]


def test_the_second_generation_has_no_reranker_yet_and_searches_say_so(tmp_path):
    """The first generation's re-ranker reads features of towers ``triad-mini-2`` does not have; until one is
    retrained on the new towers, it searches without one and its results say so."""
    from retrieval.rerank import create_reranker

    assert create_reranker("triad-mini-2") is None and create_reranker(RERANK_MODEL) is not None
    src = tmp_path / "demo"
    shutil.copytree(DEMO / "images", src)
    run_json("indexer", "add", str(src), "--data-dir", str(tmp_path / "data"), "--model", "triad-mini-2")
    out = run_json("retrieval", "search", "--text", "weather", "--data-dir", str(tmp_path / "data"))
    assert out["rerank"] == {"applied": False, "k": 0} and out["hits"]


def test_a_reranked_typed_query_runs_the_text_tower_once_with_the_same_result(demo_data):
    """The query's vector and its re-ranking tokens come from one MiniLM pass (they took two), and the hits
    and scores are those of the two-call path (tokens from ``encode_tokens``)."""
    from retrieval.query import Input, Query
    from webui import create_app

    app = create_app({"DATA_DIR": str(demo_data), "TESTING": True})
    service = app.extensions["webui.engine"].service()
    tower = service.model.tower("text")
    passes: list[int] = []
    hook = tower.model.register_forward_hook(lambda *_: passes.append(1))
    try:
        query = Query((Input("text", "weather"),), target="image", k=4)
        one_pass = service.search(query)
        assert one_pass.rerank["applied"] and len(passes) == 1, passes
        passes.clear()
        service.search(Query((Input("text", "weather"),), target="image", k=4, rerank=False))
        assert len(passes) == 1  # not re-ranked: no tokens, still one pass
    finally:
        hook.remove()
    two_calls = service.resources.query_tokens("text", "weather")["text"]
    tokens = service.resources.encode(Input("text", "weather"), lambda: "weather", True)[2]
    assert np.allclose(tokens, two_calls, atol=2e-5)
    assert [h.id for h in one_pass.hits] == [h.id for h in service.search(query).hits]
