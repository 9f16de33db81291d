"""The one query API: the CLI, the web API and eval rank alike; scores mean the same across modalities.

All on the committed demo archive indexed by the real indexer with the bundled model.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, run_json

DEMO = REPO / "demo"
SPOKEN = DEMO / "speech"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("query-api") / "data"
    src = data.parent / "demo"
    shutil.copytree(DEMO, src)
    # the first generation: it has a trained re-ranker, so the re-ranked path is compared across front ends too
    run_json("indexer", "add", str(src), "--data-dir", str(data), "--model", "triad-mini")
    return data


@pytest.fixture(scope="module")
def client(demo_data):
    from webui import create_app

    return create_app({"DATA_DIR": str(demo_data), "TESTING": True, "WARMUP": False}).test_client()


def _api(client, body: dict | None = None, files: dict | None = None) -> dict:
    if files:
        data = {**{k: str(v) for k, v in (body or {}).items()}, **{f: (open(p, "rb"), Path(p).name) for f, p in files.items()}}
        resp = client.post("/api/search", data=data, content_type="multipart/form-data")
    else:
        resp = client.post("/api/search", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _ids_scores(hits: list[dict]) -> list[tuple[int, float]]:
    return [(h["id"], h["score"]) for h in hits]


CASES = [  # (CLI flags, JSON body, uploads)
    (["--text", "a dog"], {"text": "a dog"}, None),
    (["--text", "fruit", "--target", "image"], {"text": "fruit", "target": "image"}, None),
    (["--image", str(DEMO / "images" / "pizza-google.png")], {}, {"file": DEMO / "images" / "pizza-google.png"}),
    (["--audio", str(SPOKEN / "a-rocket.wav")], {}, {"file": SPOKEN / "a-rocket.wav"}),
    (["--audio", str(SPOKEN / "a-red-apple.wav"), "--text", "green"], {"text": "green"},
     {"file": SPOKEN / "a-red-apple.wav"}),
    (["--text", "astronauts", "--hybrid"], {"text": "astronauts", "hybrid": True}, None),
    (["--text", "fruit", "--not-text", "banana", "--target", "image"],
     {"text": "fruit", "not_text": "banana", "target": "image"}, None),
]


@pytest.mark.parametrize("flags,body,files", CASES, ids=[" ".join(c[0][:2]) + (" +" if len(c[0]) > 2 else "")
                                                         for c in CASES])
def test_cli_and_api_return_the_same_hits_in_the_same_order(demo_data, client, flags, body, files):
    k = 15
    cli = run_json("retrieval", "search", *flags, "-k", str(k), "--data-dir", str(demo_data))["hits"]
    api = _api(client, {**body, "k": k}, files)["hits"]
    assert cli and _ids_scores(cli) == _ids_scores(api)
    for a, b in zip(cli, api):  # the same excerpt and times too
        assert (a.get("start"), a.get("end"), a.get("text")) == (b.get("start"), b.get("end"), b.get("text"))


def test_all_tab_interleaves_modalities_by_calibrated_relevance(client):
    data = _api(client, {"text": "a dog", "k": 40})
    hits = data["hits"]
    assert data["calibrated"] is True
    assert all(0.0 <= h["score"] <= 1.0 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    names = [h["name"] for h in hits]
    assert {"dogs.md", "a-dog.wav"} & set(names[:5]), names[:8]
    pictures = [h["name"] for h in hits if h["modality"] == "image"]
    assert set(pictures[:2]) == {"dog-face-google.png", "dog-face-twitter.png"}, pictures[:4]


def test_a_spoken_and_a_typed_query_give_scores_on_one_scale(client):
    """The same words typed or spoken: the matching picture's relevance is alike, the others' low."""
    typed = _api(client, {"text": "a rocket", "target": "image", "k": 32})["hits"]
    spoken = _api(client, {"target": "image", "k": 32}, {"file": SPOKEN / "a-rocket.wav"})["hits"]
    for hits in (typed, spoken):
        assert hits[0]["name"].startswith("rocket-")
        assert hits[0]["score"] > 0.5 > hits[-1]["score"]


def test_raw_vector_queries_rank_like_the_input_they_came_from(demo_data, client, tmp_path):
    from retrieval.encoders import create_model

    vector = create_model(None).encode("text", ["a red apple"])[0]
    (tmp_path / "q.json").write_text(json.dumps(vector.tolist()))
    by_text = run_json("retrieval", "search", "--text", "a red apple", "--no-rerank", "--data-dir", str(demo_data))
    by_vector = run_json("retrieval", "search", "--vector-file", str(tmp_path / "q.json"), "--data-dir", str(demo_data))
    assert [h["id"] for h in by_vector["hits"]] == [h["id"] for h in by_text["hits"]]
    (tmp_path / "bad.json").write_text(json.dumps([1.0, 2.0]))
    proc = run_cli("retrieval", "search", "--vector-file", str(tmp_path / "bad.json"), "--data-dir", str(demo_data),
                   check=False)
    assert proc.returncode == 2 and "uses 384" in proc.stderr


def test_api_takes_raw_vectors_as_json_form_and_weighted_inputs(demo_data, client, tmp_path):
    from retrieval.encoders import create_model

    vector = create_model(None).encode("text", ["a red apple"])[0]
    np.save(tmp_path / "q.npy", vector)
    cli = run_json("retrieval", "search", "--vector-file", str(tmp_path / "q.npy"), "-k", "8",
                   "--data-dir", str(demo_data))["hits"]
    by_text = _api(client, {"text": "a red apple", "k": 8, "rerank": False})["hits"]
    out = _api(client, {"vector": (vector * 3).tolist(), "k": 8})  # any length: normalised
    assert out["query"]["inputs"][0]["kind"] == "vector" and out["rerank"]["applied"] is False
    assert _ids_scores(out["hits"]) == _ids_scores(cli)
    assert [h["id"] for h in out["hits"]] == [h["id"] for h in by_text]
    form = client.post("/api/search", data={"vector": json.dumps(vector.tolist()), "k": "8"},
                       content_type="multipart/form-data")
    assert form.status_code == 200 and _ids_scores(form.get_json()["hits"]) == _ids_scores(cli)
    weighted = _api(client, {"inputs": [{"vector": vector.tolist(), "modality": "text", "weight": 1},
                                        {"text": "green", "weight": -1}], "target": "image", "k": 5})
    assert [i["kind"] for i in weighted["query"]["inputs"]] == ["text", "vector"]


@pytest.mark.parametrize("body, code, fragment", [
    ({"vector": [0.1, 0.2]}, "bad_vector", "uses 384"),
    ({"vector": "0.1, 0.2"}, "bad_vector", "list of numbers"),
    ({"vector": []}, "bad_vector", "non-empty list"),
    ({"vector": [0.1, "x"]}, "bad_vector", "only numbers"),
    ({"vector": [True] * 384}, "bad_vector", "only numbers"),
    ({"vector": [1e300] * 384}, "bad_vector", "finite"),
    ({"vector": [0.0] * 384}, "bad_vector", "not all zeros"),
    ({"vector": [0.1] * 5000}, "bad_vector", "at most 4096"),
    ({"vector": [0.1] * 384, "vector_modality": "smell"}, "bad_parameter", "one of image, audio, text"),
    ({"inputs": [{"vector": [0.1] * 384, "modality": "x"}]}, "bad_parameter", "one of image, audio, text"),
    ({"inputs": [{"text": "a", "modality": "image"}]}, "bad_parameter", "must be an object with one of"),
])
def test_bad_query_vectors_are_400_saying_what_is_wrong(client, body, code, fragment):
    resp = client.post("/api/search", json=body)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["code"] == code and fragment in resp.get_json()["error"]["message"]
    nan = client.post("/api/search", data='{"vector": [NaN, 1.0]}', content_type="application/json")
    assert nan.status_code == 400 and "finite" in nan.get_json()["error"]["message"]


def test_queries_the_reranker_cannot_take_pay_nothing_for_it(client, monkeypatch):
    """Checked before anything is widened or tokenised: a text -> text query (no trained re-ranker for the
    pair) or a raw vector neither encodes query tokens, nor reads token files, nor widens the FAISS k.
    The real calls run; the spies only count them."""
    service = client.application.extensions["webui.engine"].service()
    calls: dict[str, list] = {"query_tokens": [], "encode": [], "tokens": [], "k": []}

    def spy(obj, name, record):
        real = getattr(obj, name)

        def wrapper(*args, **kwargs):
            calls[name if name != "search_inputs" else "k"].append(record(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapper)

    spy(service.resources, "query_tokens", lambda *a, **kw: a[0])
    spy(service.resources, "encode", lambda q, payload, with_tokens=False: with_tokens)  # tokens asked for?
    spy(service.port, "tokens", lambda ids: len(ids))
    spy(service.searcher, "search_inputs", lambda *a, **kw: kw["k"])
    vector = service.model.encode("text", ["a red apple"])[0].tolist()
    for body in ({"text": "a dog", "target": "text", "k": 5}, {"vector": vector, "target": "image", "k": 5}):
        for key in calls:
            calls[key].clear()
        out = _api(client, body)
        assert out["rerank"] == {"applied": False, "k": 0}
        assert calls == {"query_tokens": [], "encode": [False] if "text" in body else [], "tokens": [], "k": [6]}, (
            body.get("text", "vector"), calls)
    _api(client, {"text": "a dog", "target": "image", "k": 5})  # the trained pair: re-ranked (the spies see it)
    # its tokens come from the encoding pass (one MiniLM run), not from a second query_tokens call
    assert calls["encode"][-1] is True and calls["query_tokens"] == []
    assert calls["k"][-1] == 100 and calls["tokens"]


def test_eval_ranks_exactly_as_search_does(demo_data, tmp_path):
    images = sorted((DEMO / "images").glob("*.png"))
    rows = [{"id": p.stem, "modality": "image", "path": str(p), "label": p.stem.rsplit("-", 1)[0], "role": "gallery"}
            for p in images]
    rows += [{"id": "q-dog", "modality": "text", "text": "a dog", "label": "dog-face", "role": "query"},
             {"id": "q-bike", "modality": "text", "text": "bicycle", "label": "bicycle", "role": "query"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rankings = tmp_path / "rankings.jsonl"
    run_json("retrieval", "eval", "--manifest", str(manifest), "--rankings", str(rankings),
             "--keep-data-dir", str(tmp_path / "work"))
    ranked = {r["query"]: r for r in map(json.loads, rankings.read_text().splitlines())}
    for qid, text in (("q-dog", "a dog"), ("q-bike", "bicycle")):
        hits = run_json("retrieval", "search", "--text", text, "--target", "image", "-k", str(len(images)),
                        "--data-dir", str(tmp_path / "work" / "data"))["hits"]
        assert [Path(h["path"]).stem for h in hits] == ranked[qid]["ranked"]
        assert [h["score"] for h in hits] == pytest.approx(ranked[qid]["scores"], abs=2e-3)


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports (at any depth of the file, lazy imports included)."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([target] if target else []))
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n == package or n.startswith(package + ".")}
    return out


def test_no_import_loops_in_the_library_and_the_registry_knows_no_search():
    files = {p: None for p in (REPO / "retrieval").rglob("*.py")}
    modules = {}
    for p in files:
        name = ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = p
    graph = {m: {i for i in _imports(p, "retrieval") if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a loop of the submodules
    for m in graph:
        graph[m] = {i for i in graph[m] if not (modules[i].name == "__init__.py" and m.startswith(i + "."))}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import loop: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not {i for i in graph["retrieval.encoders.registry"] if "rerank" in i or "service" in i}


def test_the_query_api_imports_no_sql_and_no_web_framework():
    code = ("import sys, retrieval.service, retrieval.query, retrieval.present; "
            "bad = [m for m in ('sqlalchemy', 'flask', 'indexer', 'webui') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
