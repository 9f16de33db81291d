"""Hybrid search: keyword (full-text) hits fused with vector hits by reciprocal rank fusion.

On SQLite (FTS5) and on the real Postgres (tsvector + GIN): the migration and its
triggers (backfill, insert, update, rename, delete, downgrade), query text that
is FTS syntax, the incremental indexer removing a file from keyword results, and
the target: a keyword said in one clip only brings that clip to rank 1 through
``python -m retrieval search --hybrid`` and ``POST /api/search {"hybrid": true}``.
The archive is indexed once per database by the real pipeline and model.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from conftest import FIXTURES, new_pg_database, run_json
from indexer import repository as repo
from indexer.db import MIGRATIONS_DIR, make_engine, upgrade_to_head
from retrieval.rank_fusion import ranks, rrf

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402  (in-process indexing: the model stays loaded)

from test_webui_api import _validate  # noqa: E402  (the OpenAPI checker of the API tests)
from webui import create_app  # noqa: E402

NASTY = ['"foo', "a OR NOT", "*", "NEAR(a b)", "body:zebra", "zebra*", "^zebra", "-zebra", "'; DROP TABLE items; --",
         "(", ")", "AND", '""', "\\", "%_", "a & b | !c", "<->", "ünïcödé", "x" * 2000, " ".join(["w"] * 200), ""]


# ---------------------------------------------------------------- databases
@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """A fresh, empty database of each kind (a Postgres database of its own: the session's is shared)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
        return
    url, drop = new_pg_database("hybrid_test")
    yield url
    drop()


def _alembic(conn, action: str, revision: str) -> None:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    getattr(command, action)(cfg, revision)


def _rows(conn, sql: str, **params) -> list:
    return conn.execute(text(sql), params).all()


# ---------------------------------------------------------------- reciprocal rank fusion
def test_rrf_is_reciprocal_rank_fusion():
    fused = rrf([["a", "b", "c"], ["c", "d"]])
    assert [d for d, _ in fused] == ["c", "a", "b", "d"]  # c is in both lists
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61) and fused[1][1] == pytest.approx(1 / 61)
    assert dict(rrf([["a", "b"], ["b"]], k=0))["b"] == pytest.approx(1 / 2 + 1)
    assert [d for d, _ in rrf([["a", "b"], ["b", "a"]], weights=[2, 1])] == ["a", "b"]
    assert [d for d, _ in rrf([["a", "a", "b"]])] == ["a", "b"]  # a repeat counts once
    norm = rrf([["a", "b"], ["a"]], normalize=True)
    assert norm[0] == ("a", pytest.approx(1.0)) and 0 < norm[1][1] < 1
    assert rrf([["a", "b"], []], normalize=True)[0][1] == pytest.approx(1.0)  # an empty list does not halve scores
    assert rrf([[], []]) == []
    # a tie goes to the better single rank, then to the earlier list
    assert [d for d, _ in rrf([["x", "y"], ["z", "x2"]])][:2] == ["x", "z"]
    assert ranks([["a", "b"], ["b"]]) == {"a": [1, None], "b": [2, 1]}
    for bad in ({"k": -1}, {"k": float("nan")}, {"weights": [1]}, {"weights": [1, -1]}):
        with pytest.raises(ValueError):
            rrf([["a"], ["b"]], **bad)


def test_rank_fusion_is_pure():
    source = (Path(__file__).parent.parent / "retrieval" / "rank_fusion.py").read_text()
    assert "sqlalchemy" not in source.lower() and "flask" not in source.lower()


# ---------------------------------------------------------------- migration and triggers
def test_migration_backfills_syncs_and_downgrades(db_url):
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            _alembic(conn, "upgrade", "0001")
            conn.execute(text(
                "INSERT INTO files (id, path, modality, size, mtime_ns, status, indexed_at) VALUES "
                "(1, '/arch/photos/red-apple_2.png', 'image', 1, 1, 'ok', '2026-01-01'), "
                "(2, '/arch/notes/zoo.v2.txt', 'text', 1, 1, 'ok', '2026-01-01'), "
                "(3, '/arch/talk.wav', 'audio', 1, 1, 'ok', '2026-01-01')"))
            conn.execute(text(
                "INSERT INTO items (id, file_id, modality, content) VALUES (1, 1, 'image', NULL), "
                "(2, 2, 'text', 'The zebras were grazing near the river.'), (3, 3, 'audio', 'a talk about otters')"))
        upgrade_to_head(engine)  # backfills rows written before keyword search existed
        with Session(engine) as s:
            assert [i for i, _ in repo.keyword_search(s, "zebra")] == [2]  # stemmed: zebras
            assert [i for i, _ in repo.keyword_search(s, "apple")] == [1]  # file-name words
            assert [i for i, _ in repo.keyword_search(s, "red 2")] == [1]
            assert repo.keyword_search(s, "png") == [] and repo.keyword_search(s, "arch photos") == []  # no ext/dirs
            assert [i for i, _ in repo.keyword_search(s, "zoo")] == [2]
            assert repo.keyword_search(s, "zebra", modality="audio") == []
            assert repo.keyword_matches(s, [1, 2, 3], "red zebras otter") == {1: ["red"], 2: ["zebras"], 3: ["otter"]}
        with engine.begin() as conn:  # the triggers keep it in sync with every kind of write
            conn.execute(text("INSERT INTO items (id, file_id, modality, content) "
                              "VALUES (4, 3, 'audio', 'the narwhal surfaced')"))
            conn.execute(text("UPDATE items SET content = 'a talk about beavers' WHERE id = 3"))
            conn.execute(text("UPDATE files SET path = '/arch/photos/blue_banana.png' WHERE id = 1"))
            conn.execute(text("DELETE FROM files WHERE id = 2"))  # cascades to its item
        with Session(engine) as s:
            assert [i for i, _ in repo.keyword_search(s, "narwhal")] == [4]
            assert repo.keyword_search(s, "otters") == [] and [i for i, _ in repo.keyword_search(s, "beaver")] == [3]
            assert repo.keyword_search(s, "apple") == [] and [i for i, _ in repo.keyword_search(s, "banana")] == [1]
            assert repo.keyword_search(s, "zebra") == []
            # rare terms beat common ones; more matched terms beat fewer
            assert [i for i, _ in repo.keyword_search(s, "the narwhal")][0] == 4
            for query in NASTY:  # FTS syntax is never parsed: no SQL error, at worst no hits
                hits = repo.keyword_search(s, query)
                assert all(isinstance(i, int) and isinstance(sc, float) for i, sc in hits), query
            assert [i for i, _ in repo.keyword_search(s, 'narwhal" OR "*')] == [4]
            assert [i for i, _ in repo.keyword_search(s, "NOT narwhal")] == [4]  # NOT is a word, not an operator
        with engine.begin() as conn:
            _alembic(conn, "downgrade", "0001")
        assert "items_fts" not in inspect(engine).get_table_names()
        upgrade_to_head(engine)
        with Session(engine) as s:
            assert [i for i, _ in repo.keyword_search(s, "narwhal")] == [4]
    finally:
        engine.dispose()


def _notes(conn, bodies: dict[int, str]) -> None:
    """One text file holding items ``{id: content}`` (raw SQL: the keyword index is kept by the triggers)."""
    conn.execute(text("INSERT INTO files (id, path, modality, size, mtime_ns, status, indexed_at) "
                      "VALUES (1, '/n.txt', 'text', 1, 1, 'ok', '2026-01-01')"))
    for i, body in bodies.items():
        conn.execute(text("INSERT INTO items (id, file_id, modality, content) VALUES (:i, 1, 'text', :b)"),
                     {"i": i, "b": body})


def test_keyword_work_is_bounded_rare_words_first(db_url, monkeypatch):
    """Common words (more rows than the scan budget) are left to the vector side when rarer words are typed;
    a query of common words only ranks items holding all of them, among a bounded number of rows."""
    engine = make_engine(db_url)
    try:
        upgrade_to_head(engine)
        with engine.begin() as conn:
            _notes(conn, {i: "common words everywhere " + ("walrus " if i == 7 else "") + ("kelp" if i % 2 else "")
                          for i in range(1, 21)})
        with Session(engine) as s:
            before = [i for i, _ in repo.keyword_search(s, "walrus common")]
            assert before[0] == 7 and len(before) == 20  # within the budget: every term scored, as always
            monkeypatch.setattr(repo, "KEYWORD_SCAN_ROWS", 12)
            assert repo.selective_terms(s, ["common", "kelp", "walrus", "absent"]) == ["walrus", "kelp"]
            assert [i for i, _ in repo.keyword_search(s, "walrus common")] == [7]  # "common" (20 rows) dropped
            assert sorted(i for i, _ in repo.keyword_search(s, "kelp common")) == list(range(1, 21, 2))
            only_common = [i for i, _ in repo.keyword_search(s, "common everywhere", limit=100)]
            assert len(only_common) == 12 and set(only_common) <= set(range(1, 21))  # bounded, all words held
            assert repo.keyword_search(s, "common absent") == []  # no item holds both
            monkeypatch.setattr(repo, "KEYWORD_SCAN_ROWS", 5)
            assert repo.selective_terms(s, ["kelp", "walrus"]) == ["walrus"]  # kelp's 10 rows exceed what is left
    finally:
        engine.dispose()


def test_a_kept_item_count_scores_as_counting_does(db_url):
    """The query port passes the item count it keeps per revision (Postgres's idf counted 1M items on every
    hybrid query); the scores are the same as counting them."""
    engine = make_engine(db_url)
    try:
        upgrade_to_head(engine)
        with engine.begin() as conn:
            _notes(conn, {i: " ".join(w for w, every in (("heron", 3), ("marsh", 4), ("reed", 5)) if i % every == 0)
                          or "mud" for i in range(1, 31)})
        with Session(engine) as s:
            assert repo.item_total(s) == 30
            counted = repo.keyword_search(s, "heron marsh reed")
            kept = repo.keyword_search(s, "heron marsh reed", total_items=repo.item_total(s))
            assert counted == kept and len(counted) == 18  # 10 + 7 + 6 holders, 5 of them of two words
            assert {i for i, _ in counted[:5]} == {12, 15, 20, 24, 30}  # two words beat one
    finally:
        engine.dispose()


def test_the_query_port_keeps_term_counts_per_revision(db_url, tmp_path, monkeypatch):
    """A word's bounded document count is read once per catalog revision, not on every hybrid query (a common
    word's cost ~65 ms on Postgres at 1M items); a write (new revision) counts again, so results never go stale."""
    from indexer.catalog import Catalog
    from indexer.query_port import CatalogPort

    catalog = Catalog(tmp_path / "data", database_url=db_url)
    try:
        with catalog.engine.begin() as conn:
            _notes(conn, {1: "otter river", 2: "otter", 3: "river delta"})
        port = CatalogPort(catalog)
        counted: list[list[str]] = []
        real = repo.term_counts
        monkeypatch.setattr(repo, "term_counts", lambda s, terms: counted.append(list(terms)) or real(s, terms))
        first = port.keyword_search("otter river", None, 10)
        assert sorted(i for i, _ in first) == [1, 2, 3] and counted == [["otter", "river"]]
        assert port.keyword_search("river otter", None, 10) == first and counted == [["otter", "river"]]
        port.keyword_search("otter delta", None, 10)
        assert counted[-1] == ["delta"]  # only the new word
        with catalog.session() as s:
            s.execute(text("INSERT INTO items (id, file_id, modality, content) VALUES (4, 1, 'text', 'otter')"))
            repo.bump_revision(s)
            s.commit()
        assert 4 in [i for i, _ in port.keyword_search("otter", None, 10)] and counted[-1] == ["otter"]
    finally:
        catalog.close()


def test_the_indexer_refreshes_postgres_planner_statistics_after_a_large_write():
    """``analyze_if_stale``: Postgres re-analyses once the planner's item count is off by > 10% (and 1,000 rows);
    without it a hybrid query at 1M items hashed every item (0.7 s) until autovacuum came by."""
    from indexer.db import analyze_if_stale

    url, drop = new_pg_database("analyze_test")
    engine = make_engine(url)
    try:
        upgrade_to_head(engine)
        believed = "SELECT reltuples FROM pg_class WHERE oid = 'items'::regclass"
        assert analyze_if_stale(engine) is False  # empty: nothing worth analysing
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO files (id, path, modality, size, mtime_ns, status, indexed_at) "
                              "VALUES (1, '/n.txt', 'text', 1, 1, 'ok', '2026-01-01')"))
            conn.execute(text("INSERT INTO items (file_id, modality, content) "
                              "SELECT 1, 'text', 'note ' || g FROM generate_series(1, 3000) AS g"))
        assert analyze_if_stale(engine) is True
        with engine.connect() as conn:
            assert conn.execute(text(believed)).scalar_one() == 3000
        assert analyze_if_stale(engine) is False  # fresh: no second analyse
        with engine.begin() as conn:  # +200 rows (< 1,000): still close enough
            conn.execute(text("INSERT INTO items (file_id, modality, content) "
                              "SELECT 1, 'text', 'more ' || g FROM generate_series(1, 200) AS g"))
        assert analyze_if_stale(engine) is False
    finally:
        engine.dispose()
        drop()
    sqlite = make_engine("sqlite://")
    assert analyze_if_stale(sqlite) is False  # SQLite keeps its forced join orders


# ---------------------------------------------------------------- incremental indexer
def test_indexer_changes_reach_keyword_results(db_url, tmp_path):
    notes, data = tmp_path / "notes", tmp_path / "data"
    notes.mkdir()
    (notes / "music.txt").write_text("The orchestra tuned up before the xylophone solo.")
    (notes / "garden.txt").write_text("Tomatoes and basil grow in the garden.")
    (notes / "kitchen.txt").write_text("Knead the dough and let it rest for an hour.")
    assert wt.index_folder(notes, data, database_url=db_url)["added"] == 3
    engine = make_engine(db_url)
    try:
        def found(word: str) -> list[str]:
            with Session(engine) as s:
                hits = repo.keyword_search(s, word)
                return [Path(repo.item_hits(s, [i])[i]["path"]).name for i, _ in hits]

        assert found("xylophone") == ["music.txt"]
        (notes / "music.txt").unlink()
        (notes / "garden.txt").write_text("Courgettes and mint grow in the garden.")
        summary = wt.index_folder(notes, data, database_url=db_url)
        assert (summary["removed"], summary["updated"]) == (1, 1)
        assert found("xylophone") == [] and found("music") == []
        assert found("tomatoes") == [] and found("courgettes") == ["garden.txt"]
        assert found("dough") == ["kitchen.txt"]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the target, end to end
def _archive(root: Path) -> Path:
    """Spoken clips, notes, the long meeting recording and images, one named with words."""
    archive = root / "archive"
    for name in ("speech", "notes", "long"):
        shutil.copytree(FIXTURES / name, archive / name, ignore=shutil.ignore_patterns("*.json"))
    (archive / "images").mkdir()
    shutil.copy(FIXTURES / "formats" / "sample.png", archive / "images" / "zebra-crossing_2.png")
    shutil.copy(FIXTURES / "formats" / "sample.webp", archive / "images" / "sample.webp")
    shutil.copy(FIXTURES / "formats" / "sample.gif", archive / "images" / "sample.gif")
    return archive


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def indexed(request, tmp_path_factory):
    """(data dir, DATABASE_URL or None, app) for the archive indexed once on each database."""
    root = tmp_path_factory.mktemp(f"hybrid_{request.param}")
    url, drop = (None, None) if request.param == "sqlite" else new_pg_database("hybrid_archive")
    summary = wt.index_folder(_archive(root), root / "data", database_url=url)
    assert summary["added"] == 18 and summary["errors"] == 0, summary
    app = create_app({"DATA_DIR": str(root / "data"), "DATABASE_URL": url, "TESTING": True,
                      "THUMBNAIL_DIR": str(root / "thumbs")})
    yield root / "data", url, app
    if drop:
        app.extensions["webui.engine"].catalog().close()
        drop()


def _cli(indexed, *args: str) -> list[dict]:
    data, url, _ = indexed
    env = {"DATABASE_URL": url} if url else None
    return run_json("retrieval", "search", *args, "--data-dir", str(data), env=env)["hits"]


def _rank(hits: list[dict], name: str) -> int | None:
    names = [Path(h["path"]).name for h in hits]
    return names.index(name) + 1 if name in names else None


def test_cli_hybrid_brings_the_clip_that_says_the_keyword_to_rank_1(indexed):
    # "noon" is said only in train_boston.wav. Vector search alone ranks the meeting's lunch
    # sentence ("half past 12") close to it; hybrid must put the clip first.
    vector = _cli(indexed, "--text", "noon", "--target", "audio", "-k", "20")
    hybrid = _cli(indexed, "--text", "noon", "--target", "audio", "-k", "20", "--hybrid")
    vector_rank = _rank(vector, "train_boston.wav")
    print(f"'noon' -> train_boston.wav: vector rank {vector_rank}, hybrid rank {_rank(hybrid, 'train_boston.wav')}")
    top = hybrid[0]
    assert Path(top["path"]).name == "train_boston.wav" and top["modality"] == "audio"
    assert set(top) >= {"id", "path", "modality", "score"}  # the DESIGN contract holds
    assert top["ranks"] == {"vector": vector_rank, "keyword": 1} and top["matched"] == ["noon"]
    assert 0 < top["score"] <= 1 and [h["score"] for h in hybrid] == sorted((h["score"] for h in hybrid), reverse=True)
    assert {h["modality"] for h in hybrid} == {"audio"}
    # every other hit is ranked as vector search ranked it (no keyword matched them)
    rest = [h["id"] for h in hybrid[1:]]
    assert rest == [h["id"] for h in vector if h["id"] != top["id"]][:len(rest)]


def test_api_hybrid_finds_a_word_vector_search_misses(indexed):
    client = indexed[2].test_client()

    def search(**body) -> dict:
        resp = client.post("/api/search", json=body)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    # "garage" is said once, in the 30 s window of the meeting recording about the parking garage
    vector = search(text="garage", target="audio", k=20)["hits"]
    hybrid = search(text="garage", target="audio", k=20, hybrid=True)
    top = hybrid["hits"][0]
    vector_rank = next((i + 1 for i, h in enumerate(vector) if h["id"] == top["id"]), None)
    print(f"'garage' -> meeting window {top['id']}: vector rank {vector_rank}, hybrid rank 1")
    assert top["name"] == "meeting.flac" and top["matched"] == ["garage"]
    assert top["ranks"] == {"vector": vector_rank, "keyword": 1}
    assert "garage" in top["text"].lower() and top["text"][slice(*top["marks"][0])].lower() == "garage"
    assert top["window"][0] <= top["start"] < top["end"] <= top["window"][1]  # the sentence that says it
    assert hybrid["hybrid"] == {"terms": ["garage"], "keyword_hits": 1, "rrf_k": 60.0}

    # the same through multipart (the page sends files this way)
    resp = client.post("/api/search", data={"text": "noon", "target": "audio", "k": "3", "hybrid": "1"},
                       content_type="multipart/form-data")
    assert resp.status_code == 200 and resp.get_json()["hits"][0]["name"] == "train_boston.wav"

    # a file name's words count, and are marked in the name
    image = search(text="zebra", target="image", k=3, hybrid=True)["hits"][0]
    assert image["name"] == "zebra-crossing_2.png" and image["matched"] == ["zebra"]
    assert image["name_marks"] == [[0, 5]]

    # words that match nothing, or FTS syntax: vector search, never an error
    for query in ('"foo OR NOT *', "NEAR(", "*", "zebra*"):
        body = search(text=query, k=3, hybrid=True)
        assert body["hits"], query
    plain, fused = search(text="qwzx vbnm", k=5), search(text="qwzx vbnm", k=5, hybrid=True)
    assert [h["id"] for h in fused["hits"]] == [h["id"] for h in plain["hits"]] and fused["hybrid"]["keyword_hits"] == 0

    # no typed words ("more like this"): hybrid equals vector search, and says so
    like = {"items": [top["id"]], "target": "audio", "k": 5}
    assert [h["id"] for h in search(**like, hybrid=True)["hits"]] == [h["id"] for h in search(**like)["hits"]]
    assert search(**like, hybrid=True)["hybrid"]["terms"] == []

    # a paraphrase still finds its clip (keywords add evidence, they do not take over)
    assert search(text="a puppy running around a park", target="audio", k=1, hybrid=True)["hits"][0]["name"] \
        == "dog_park.wav"

    # bad switch values are clear 400s
    for bad in ("yes", 1, "true"):
        resp = client.post("/api/search", json={"text": "noon", "hybrid": bad})
        assert resp.status_code == 400 and "hybrid" in resp.get_json()["error"]["message"]
    resp = client.post("/api/search", data={"text": "noon", "hybrid": "maybe"}, content_type="multipart/form-data")
    assert resp.status_code == 400

    # responses match the OpenAPI document
    doc = client.get("/api/openapi.json").get_json()
    schema = doc["paths"]["/api/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    _validate(hybrid, schema, doc)
    _validate({"text": "noon", "hybrid": True}, doc["components"]["schemas"]["SearchRequest"], doc)


def test_page_has_a_keyboard_usable_keywords_toggle(indexed):
    page = indexed[2].test_client().get("/").data.decode()
    assert '<input id="hybrid" type="checkbox"' in page and 'for="hybrid"' in page and ">Keywords<" in page


@pytest.mark.parametrize("indexed", ["sqlite"], indirect=True)  # a copy of the SQLite catalog is enough
def test_catalog_from_before_keyword_search_gets_a_clear_answer(indexed, tmp_path):
    data, _, _ = indexed
    old = tmp_path / "data"
    shutil.copytree(data, old)
    engine = make_engine(f"sqlite:///{old / 'catalog.sqlite3'}")
    with engine.begin() as conn:
        _alembic(conn, "downgrade", "0001")  # as if built before migration 0002
    engine.dispose()
    client = create_app({"DATA_DIR": str(old), "TESTING": True, "WARMUP": False}).test_client()
    # later migrations add columns every query reads (0004: items.view), so the answer is the fix, not a 500
    for body in ({"text": "noon", "k": 2}, {"text": "noon", "k": 2, "hybrid": True}):
        resp = client.post("/api/search", json=body)
        err = resp.get_json()["error"]
        assert resp.status_code == 503 and err["code"] == "catalog_outdated", err
        assert "schema 0001" in err["message"] and f"indexer add PATH --data-dir {old}" in err["message"]
    upgrade_to_head(make_engine(f"sqlite:///{old / 'catalog.sqlite3'}"))  # what `indexer add` does first
    client = create_app({"DATA_DIR": str(old), "TESTING": True, "WARMUP": False}).test_client()
    assert client.post("/api/search", json={"text": "noon", "k": 2}).get_json()["hits"]
    assert client.post("/api/search", json={"text": "noon", "k": 2, "hybrid": True}).status_code == 200
