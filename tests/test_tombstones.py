"""Deleting from a large index does not rebuild it (issue 14 part 4): tombstones.

* HNSW, IVF and refined (``…,RFlat``, what ``auto`` builds above 200k) indices record removed ids as
  tombstones: a search never returns one and still returns the exact live top-k, also when every nearest
  neighbour of the query is deleted (the search retries with a larger fetch); count, ids, stored vectors and
  the reference sample leave them out; a tombstoned id cannot come back. Flat and SQ indices remove in place;
* tombstones are saved beside the index (``tombstones.npy``, counted in the manifest) and loaded with it,
  mapped or not; a delete-only save leaves ``index.faiss`` as it is; a lost tombstone file is refused;
* the indexer: deleting a file from an HNSW32 data directory writes tombstones, no rebuild (SQLite and
  Postgres); past ``COMPACT_FRACTION`` it compacts; ``indexer rebuild`` always does;
* the web engine keeps its mapped index and takes the new tombstones when only they changed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pytest

from conftest import new_pg_database, run_json
from retrieval.index import INDEX_NAME, MANIFEST_NAME, TombstonedIdError, VectorIndex, exact_search
from retrieval.tombstones import COMPACT_FRACTION, OVERFETCH_MARGIN, TOMBSTONES_NAME, first_fetch

TOMBSTONED = ["PQ16x4fs,RFlat", "HNSW32", "IVF16,Flat"]
N, DIM = 3000, 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(14)
    x = _unit(rng.standard_normal((N, DIM)))
    q = _unit(rng.standard_normal((40, DIM)))
    return np.arange(N, dtype=np.int64) * 3 + 7, x, q  # ids with gaps, as SQL ids after deletions


def _build(ids: np.ndarray, x: np.ndarray, factory: str) -> VectorIndex:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # HNSW's graph depends on the insertion threads: one, so the test is repeatable
    try:
        return VectorIndex.build(ids, x, model="m", checksums={}, dim=x.shape[1], factory=factory, modality="text")
    finally:
        faiss.omp_set_num_threads(threads)


def _spy_fetches(index: VectorIndex, monkeypatch) -> list[int]:
    """The k of every search the index runs underneath (first fetch and retries)."""
    fetches: list[int] = []
    raw = index._raw_search

    def spy(queries, k):
        fetches.append(k)
        return raw(queries, k)

    monkeypatch.setattr(index, "_raw_search", spy)
    return fetches


# ---------------------------------------------------------------- the index
@pytest.mark.parametrize("factory", TOMBSTONED)
def test_removed_ids_are_never_returned_and_the_rest_is_the_exact_live_top_k(data, factory, monkeypatch):
    ids, x, q = data
    index = _build(ids, x, factory)
    rng = np.random.default_rng(1)
    _, near = exact_search(x, ids, q[:3], 150)  # adversarial rows: their 150 nearest neighbours are gone
    dead = np.union1d(near.ravel(), rng.choice(ids, N // 10, replace=False))
    assert not index.removes_in_place
    assert index.remove(dead) == len(dead)
    assert index.remove(dead[:5]) == 0 and index.remove(np.array([1, 2])) == 0  # again, and ids it never held
    assert index.count == N - len(dead) and np.array_equal(index.tombstones, dead)
    live = ~np.isin(ids, dead)
    assert np.array_equal(index.ids(), ids[live])
    fetches = _spy_fetches(index, monkeypatch)
    for k in (1, 10, 50):
        want_s, want = exact_search(x[live], ids[live], q, k)
        got_s, got = index.search(q, k)
        assert not np.isin(got, dead).any(), f"{factory} k={k}: a removed id came back"
        if "RFlat" in factory and k > 10:  # large fetches re-score max(640, 2k) candidates (index.REFINE_SHORTLIST)
            overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want)])
            assert overlap >= 0.97 and (got >= 0).all(), f"{factory} k={k}: live top-k overlap {overlap}"
            continue
        assert np.array_equal(got, want), f"{factory} k={k}: not the exact live top-k"
        assert np.allclose(got_s, want_s, atol=1e-4)
    assert max(fetches) > first_fetch(50, len(dead), N), "the adversarial rows were never searched again"


@pytest.mark.parametrize("factory", TOMBSTONED)
def test_every_nearest_neighbour_deleted(data, factory, monkeypatch):
    """The query's 500 nearest vectors (itself included) are dead: the first fetch holds no live hit, the search
    doubles its fetch until it does, and returns ranks 501.. of the exact list."""
    ids, x, _ = data
    index = _build(ids, x, factory)
    query = x[:1]
    _, near = exact_search(x, ids, query, 500)
    index.remove(near[0])
    fetches = _spy_fetches(index, monkeypatch)
    _, got = index.search(query, 10)
    _, ranked = exact_search(x, ids, query, 510)
    assert np.array_equal(got[0], ranked[0, 500:])
    first = first_fetch(10, 500, N)
    assert first == 10 + math.ceil(2 * 10 * 500 / N) + OVERFETCH_MARGIN and first < 500
    assert fetches[0] == first and fetches[-1] > 500 and len(fetches) > 2, fetches
    assert fetches[-1] <= 10 + 500  # never more than k + tombstones


@pytest.mark.parametrize("factory", TOMBSTONED)
def test_almost_everything_deleted(data, factory):
    ids, x, q = data
    index = _build(ids[:400], x[:400], factory)
    index.remove(ids[4:400])
    assert index.count == 4
    _, got = index.search(q[:3], 10)  # k is cut to the 4 live vectors
    assert got.shape == (3, 4) and all(set(row) == set(ids[:4].tolist()) for row in got)
    index.remove(ids[:4])
    assert index.count == 0 and len(index.ids()) == 0
    s, got = index.search(q[:2], 5)
    assert (got == -1).all() and np.isneginf(s).all()


def test_reads_leave_tombstones_out_and_they_cannot_come_back(data):
    ids, x, _ = data
    index = _build(ids[:600], x[:600], "HNSW32")
    dead = ids[10:600:3]
    index.remove(dead)
    live = ~np.isin(ids[:600], dead)
    assert np.allclose(index.reference_sample(), x[:600][live], atol=1e-6)  # small: every live vector
    sample = index.reference_sample(64)
    assert len(sample) == 64 and not (sample @ x[:600][~live].T > 1 - 1e-5).any()  # no dead vector in it
    assert np.allclose(index.vectors(ids[[0, 1, 599]]), x[[0, 1, 599]], atol=1e-6)
    with pytest.raises(KeyError, match=str(dead[0])):
        index.vectors(dead[:1])
    with pytest.raises(TombstonedIdError, match="never reused"):
        index.add(dead[:1], x[:1])  # the old vector must not come back to life
    assert index.count == len(ids[:600][live])
    index.add(ids[600:610], x[600:610])  # new ids are fine, next to the tombstones
    _, got = index.search(x[605:606], 1)
    assert got[0, 0] == ids[605] and index.count == live.sum() + 10


@pytest.mark.parametrize("factory", ["Flat", "SQfp16"])
def test_flat_and_sq_indices_remove_in_place(tmp_path, data, factory):
    ids, x, q = data
    index = _build(ids[:500], x[:500], factory)
    assert index.removes_in_place
    assert index.remove(ids[:100]) == 100
    assert index._cpu.ntotal == 400 and index.count == 400 and len(index.tombstones) == 0
    _, got = index.search(q, 20)
    assert not np.isin(got, ids[:100]).any()
    index.save(tmp_path)
    assert not (tmp_path / TOMBSTONES_NAME).exists()
    assert "tombstones" not in json.loads((tmp_path / MANIFEST_NAME).read_text())["extra"]


# ---------------------------------------------------------------- on disk
def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


@pytest.mark.parametrize("mmap", [False, True])
def test_tombstones_are_saved_and_loaded_and_a_delete_only_save_keeps_the_index_file(tmp_path, data, mmap):
    ids, x, q = data
    _build(ids, x, "PQ16x4fs,RFlat").save(tmp_path)
    index_file = tmp_path / INDEX_NAME
    before = _identity(index_file)
    writer = VectorIndex.load(tmp_path)  # the indexer's writable copy
    dead = ids[::7]
    writer.remove(dead)
    writer.save(tmp_path)
    assert _identity(index_file) == before, "a delete-only save rewrote index.faiss"
    assert np.array_equal(np.load(tmp_path / TOMBSTONES_NAME), dead)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["extra"]["tombstones"] == len(dead) and manifest["count"] == N - len(dead)

    reader = VectorIndex.load(tmp_path, mmap=mmap)
    assert reader.mapped == mmap
    assert np.array_equal(reader.tombstones, dead) and reader.count == N - len(dead)
    assert np.array_equal(reader.ids(), writer.ids())
    assert np.array_equal(reader.search(q, 10)[1], writer.search(q, 10)[1])
    assert not np.isin(reader.search(q, 100)[1], dead).any()

    tomb_before = _identity(tmp_path / TOMBSTONES_NAME)
    writer.save(tmp_path)  # nothing changed: neither file is rewritten
    assert _identity(index_file) == before and _identity(tmp_path / TOMBSTONES_NAME) == tomb_before

    new_ids = np.arange(5) + 10**6
    writer.add(new_ids, x[:5])  # an add changes the vectors: the index file is replaced (by rename)
    writer.save(tmp_path)
    assert _identity(index_file)[0] != before[0]
    again = VectorIndex.load(tmp_path, mmap=mmap)
    assert again.count == N - len(dead) + 5 and np.array_equal(again.tombstones, dead)
    assert reader.count == N - len(dead)  # the earlier reader still answers from what it loaded


def test_a_lost_tombstone_file_is_refused_and_unknown_ids_are_dropped(tmp_path, data):
    ids, x, _ = data
    index = _build(ids[:500], x[:500], "HNSW32")
    index.remove(ids[:20])
    index.save(tmp_path)
    (tmp_path / TOMBSTONES_NAME).unlink()  # the manifest says 20: serving without them would return deleted items
    with pytest.raises(ValueError, match="manifest says 20"):
        VectorIndex.load(tmp_path)
    np.save(tmp_path / TOMBSTONES_NAME, np.concatenate([ids[:20], [10**9, 10**9 + 1]]))  # ids it does not hold
    loaded = VectorIndex.load(tmp_path)
    assert np.array_equal(loaded.tombstones, ids[:20]) and loaded.count == 480


def test_a_reader_takes_new_tombstones_over_the_same_mapped_index(tmp_path, data):
    ids, x, q = data
    _build(ids, x, "HNSW32").save(tmp_path)
    reader = VectorIndex.load(tmp_path, mmap=True)
    _, first = reader.search(q[:1], 5)
    writer = VectorIndex.load(tmp_path)
    writer.remove(first[0])
    writer.save(tmp_path)
    newer = reader.with_tombstones_of(tmp_path)
    assert newer is not reader and newer._cpu is reader._cpu and newer.mapped  # the same pages
    assert newer.count == N - 5 and not np.isin(newer.search(q[:1], 5)[1], first).any()
    assert reader.count == N and np.array_equal(reader.search(q[:1], 5)[1], first)  # a snapshot in flight


# ---------------------------------------------------------------- the indexer, end to end
TOPICS = ["gardening tomatoes", "fixing a bicycle chain", "learning the piano", "baking sourdough bread",
          "hiking in the alps", "painting with watercolors", "repairing a leaking tap", "training a puppy"]


def _notes(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"note_{i:03d}.txt" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_text(f"Note {i}: some thoughts about {TOPICS[i % len(TOPICS)]}.")
    return paths


def _index(src: Path, data: Path, model: str, factory: str | None = None, database_url: str | None = None) -> dict:
    from indexer.catalog import Catalog
    from indexer.pipeline import AddOptions, add

    catalog = Catalog(data, database_url=database_url)
    try:
        return add([src], catalog, AddOptions(model=model, factory=factory, progress=False)).as_dict(with_timings=False)
    finally:
        catalog.close()


def _sql_ids(data: Path, database_url: str | None = None) -> set[int]:
    from indexer import repository as repo
    from indexer.catalog import Catalog

    catalog = Catalog(data, database_url=database_url)
    try:
        with catalog.session() as s:
            return {int(i) for ids, _ in repo.iter_embeddings(s, "text") for i in ids}
    finally:
        catalog.close()


@pytest.fixture()
def rebuilds(monkeypatch) -> list[str]:
    """The modalities Catalog.rebuild_index rebuilt (from SQL) in this process."""
    from indexer.catalog import Catalog

    calls: list[str] = []
    rebuild = Catalog.rebuild_index

    def spy(self, modality, *args, **kwargs):
        calls.append(modality)
        return rebuild(self, modality, *args, **kwargs)

    monkeypatch.setattr(Catalog, "rebuild_index", spy)
    return calls


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_deleting_a_file_writes_tombstones_and_compaction_rebuilds(tmp_path, tiny_openclip, rebuilds):
    src, data = tmp_path / "notes", tmp_path / "data"
    model = f"openclip:{tiny_openclip}"
    notes = _notes(src, 30)
    assert _index(src, data, model, factory="HNSW32")["added"] == 30
    folder = data / "index" / "text"
    assert _manifest(folder)["factory"] == "HNSW32"
    before, ids_before = _identity(folder / INDEX_NAME), _sql_ids(data)
    rebuilds.clear()

    notes[5].unlink()  # 1 of 30 items: below COMPACT_FRACTION
    assert _index(src, data, model)["removed"] == 1
    gone = ids_before - _sql_ids(data)
    assert len(gone) == 1 and 1 / 30 < COMPACT_FRACTION
    assert rebuilds == [], "deleting one file rebuilt the index"
    assert _identity(folder / INDEX_NAME) == before, "deleting one file rewrote index.faiss"
    assert set(np.load(folder / TOMBSTONES_NAME).tolist()) == gone
    assert (_manifest(folder)["count"], _manifest(folder)["extra"]["tombstones"]) == (29, 1)
    hits = run_json("retrieval", "search", "--text", "Note 5: some thoughts about repairing a leaking tap",
                    "--target", "text", "-k", "50", "--no-rerank", "--data-dir", str(data))["hits"]
    assert len(hits) == 29 and notes[5].name not in {Path(h["path"]).name for h in hits}
    assert not gone & {h["id"] for h in hits}
    assert run_json("indexer", "status", "--data-dir", str(data))["items"]["text"] == 29

    for path in notes[10:13]:  # 4 of 30 dead: past COMPACT_FRACTION, the run compacts
        path.unlink()
    assert _index(src, data, model)["removed"] == 3
    assert rebuilds == ["text"]
    assert not (folder / TOMBSTONES_NAME).exists() and "tombstones" not in _manifest(folder)["extra"]
    assert _identity(folder / INDEX_NAME)[0] != before[0]  # a new file, renamed over the old one
    compacted = VectorIndex.load(folder)
    assert compacted._cpu.ntotal == compacted.count == 26 and compacted.manifest.factory == "HNSW32"
    assert set(compacted.ids().tolist()) == _sql_ids(data)

    notes[20].unlink()
    _index(src, data, model)
    assert (folder / TOMBSTONES_NAME).exists()
    out = run_json("indexer", "rebuild", "--data-dir", str(data))  # a rebuild builds fresh: always compacts
    assert out["text"] == {"count": 25, "factory": "HNSW32"}
    assert not (folder / TOMBSTONES_NAME).exists() and VectorIndex.load(folder)._cpu.ntotal == 25


def test_a_tombstoned_id_added_again_makes_the_writer_rebuild_from_sql(tmp_path, tiny_openclip, rebuilds):
    """Ids are never reused, so this is a bug upstream if it happens: the old vector must not come back, and the
    catalog (SQL) decides what the index holds."""
    from indexer.catalog import Catalog
    from indexer.pipeline import resolve_model
    from indexer.writer import Writer

    src, data = tmp_path / "notes", tmp_path / "data"
    model = f"openclip:{tiny_openclip}"
    notes = _notes(src, 12)
    _index(src, data, model, factory="HNSW32")
    notes[0].unlink()
    _index(src, data, model)
    catalog = Catalog(data)
    try:
        indices = catalog.fresh_indices()
        dead = int(indices["text"].tombstones[0])
        writer = Writer(catalog, resolve_model(catalog, None), indices, None)
        rebuilds.clear()
        writer.apply({"text": ([dead], [np.ones(indices["text"].manifest.dim, np.float32)])}, [])
        assert writer.needs_rebuild == {"text"}
        writer.finish()
        assert rebuilds == ["text"]
        assert set(writer.indices["text"].ids().tolist()) == _sql_ids(data) and dead not in _sql_ids(data)
    finally:
        catalog.close()


def test_deleting_a_file_writes_tombstones_with_postgres(tmp_path, tiny_openclip, rebuilds):
    from indexer.service import open_service
    from retrieval.query import Input, Query

    url, drop = new_pg_database("tombstones")
    try:
        src, data = tmp_path / "notes", tmp_path / "data"
        model = f"openclip:{tiny_openclip}"
        notes = _notes(src, 12)
        _index(src, data, model, factory="HNSW32", database_url=url)
        before, ids_before = _identity(data / "index" / "text" / INDEX_NAME), _sql_ids(data, url)
        rebuilds.clear()
        notes[3].unlink()
        assert _index(src, data, model, database_url=url)["removed"] == 1
        gone = ids_before - _sql_ids(data, url)
        assert rebuilds == [] and _identity(data / "index" / "text" / INDEX_NAME) == before
        with open_service(data, database_url=url) as service:
            index = service.searcher.indices["text"]
            assert index.mapped and index.count == 11 and set(index.tombstones.tolist()) == gone
            hits = service.search(Query((Input("text", "Note 3: some thoughts"),), target="text", k=50)).hits
        assert len(hits) == 11 and not gone & {h.id for h in hits}
    finally:
        drop()


def test_the_web_engine_takes_new_tombstones_without_reloading_the_index(tmp_path, tiny_openclip):
    from webui import create_app

    src, data = tmp_path / "notes", tmp_path / "data"
    model = f"openclip:{tiny_openclip}"
    notes = _notes(src, 12)
    _index(src, data, model, factory="HNSW32")
    app = create_app({"DATA_DIR": str(data), "TESTING": True, "RELOAD_CHECK_SECONDS": 0})
    engine, client = app.extensions["webui.engine"], app.test_client()

    def names() -> set[str]:
        hits = client.post("/api/search", json={"text": "some thoughts", "k": 50}).get_json()["hits"]
        return {h["name"] for h in hits}

    assert names() == {p.name for p in notes}
    first = engine.snapshot().service.searcher.indices["text"]
    assert first.mapped and engine.reloads == {"loaded": 1, "kept": 0, "rebuilt": 0}
    index_file = data / "index" / "text" / INDEX_NAME
    before = _identity(index_file)

    notes[7].unlink()
    _index(src, data, model)
    assert names() == {p.name for p in notes} - {notes[7].name}
    now = engine.snapshot().service.searcher.indices["text"]
    assert _identity(index_file) == before
    assert now is not first and now._cpu is first._cpu, "the unchanged, mapped index was loaded again"
    assert engine.reloads == {"loaded": 1, "kept": 1, "rebuilt": 0} and engine._indices.tombstone_reloads == 1
    assert now.count == 11 and first.count == 12  # a request still holding the first snapshot keeps its view
    gone = set(first.ids().tolist()) - set(now.ids().tolist())
    _, got = now.search(first.vectors(np.array(sorted(gone))), 12)  # the deleted note's own vector
    assert len(gone) == 1 and not gone & set(got.ravel().tolist()) and (got >= 0).sum() == 11
    stats = client.get("/api/stats").get_json()
    assert stats["items"]["text"] == 11 and stats["indices"]["text"]["count"] == 11
