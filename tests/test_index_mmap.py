"""Memory-mapped indices (issue 14 part 3): read-only consumers map saved indices instead of copying them.

* for every kind of index the project builds, a mapped load answers exactly as a normal read does;
* a process that maps a 200k x 384 Flat index keeps its private memory (RssAnon) far below the file's size,
  while a normal read copies it (measured in fresh subprocesses: /proc/self/status, no timing);
* a mapped index refuses writes (faiss would abort the process), and a reload after a save (a rename onto
  the path) maps the new file while the old mapping keeps answering;
* the metadata of a page of hits is read in a fixed number of statements, whatever k (SQLite and Postgres).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from conftest import new_pg_database
from retrieval.index import INDEX_NAME, ReadOnlyIndexError, VectorIndex, resolve_factory

REPO = Path(__file__).resolve().parent.parent


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, 64))
    x = _unit(centres[rng.integers(0, 50, 6000)] + 0.3 * rng.standard_normal((6000, 64)))
    q = _unit(x[:40] + 0.05 * rng.standard_normal((40, 64)))
    return np.arange(10_000, 16_000, dtype=np.int64), x, q


# every structure `auto` and the README's --index-factory examples build (PQ32x4fs,RFlat is auto's kind at 64-d)
KINDS = ["Flat", resolve_factory("auto", 10**6, 64), "HNSW32", "IVF{n},Flat", "SQfp16", "SQ8"]


@pytest.mark.parametrize("factory", KINDS)
def test_mapped_index_answers_as_a_read_one(tmp_path, data, factory):
    ids, x, q = data
    built = VectorIndex.build(ids, x, model="m", checksums={}, dim=64, factory=factory, modality="text")
    built.save(tmp_path)
    read = VectorIndex.load(tmp_path)
    mapped = VectorIndex.load(tmp_path, mmap=True)
    assert not read.mapped and mapped.mapped
    for k in (1, 10, 100):
        s1, i1 = read.search(q, k)
        s2, i2 = mapped.search(q, k)
        assert np.array_equal(i1, i2), f"{factory} k={k}"
        assert np.array_equal(s1, s2), f"{factory} k={k}"
    assert np.array_equal(read.ids(), mapped.ids())
    some = ids[::97]
    assert np.array_equal(read.vectors(some), mapped.vectors(some))  # IVF: the direct map is built on a mapped one
    assert np.array_equal(read.reference_sample(256), mapped.reference_sample(256))


def test_mapped_index_refuses_writes_instead_of_aborting(tmp_path, data):
    ids, x, _ = data
    VectorIndex.build(ids[:100], x[:100], model="m", checksums={}, dim=64, factory="Flat").save(tmp_path)
    mapped = VectorIndex.load(tmp_path, mmap=True)
    with pytest.raises(ReadOnlyIndexError, match="memory-mapped"):
        mapped.add(ids[100:101], x[100:101])
    with pytest.raises(ReadOnlyIndexError, match="memory-mapped"):
        mapped.remove(ids[:1])
    assert mapped.count == 100  # and the process is still alive to say so
    writable = VectorIndex.load(tmp_path)
    writable.add(ids[100:101], x[100:101])
    assert writable.count == 101


def test_reload_after_a_save_maps_the_new_file(tmp_path, data):
    ids, x, q = data
    VectorIndex.build(ids[:3000], x[:3000], model="m", checksums={}, dim=64, factory="Flat").save(tmp_path)
    old = VectorIndex.load(tmp_path, mmap=True)
    before = old.search(q, 5)
    old_inode = (tmp_path / INDEX_NAME).stat().st_ino

    writer = VectorIndex.load(tmp_path)  # the indexer's writable copy
    writer.add(ids[3000:], x[3000:])
    writer.save(tmp_path)
    assert (tmp_path / INDEX_NAME).stat().st_ino != old_inode, "a save must replace the file, never write into it"

    # the old mapping still reads the old (renamed-over) file, unchanged
    assert old.count == 3000
    again = old.search(q, 5)
    assert np.array_equal(before[1], again[1]) and np.array_equal(before[0], again[0])

    new = VectorIndex.load(tmp_path, mmap=True)
    assert new.mapped and new.count == 6000
    _, got = new.search(x[5000:5001], 1)
    assert got[0, 0] == ids[5000]  # a vector only the new file holds
    assert np.array_equal(new.search(q, 5)[1], VectorIndex.load(tmp_path).search(q, 5)[1])


_RSS_PROBE = r"""
import json, sys
import numpy as np
from retrieval.index import VectorIndex

def rss():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out

q = np.random.default_rng(1).standard_normal((4, 384)).astype(np.float32)
before = rss()
index = VectorIndex.load(sys.argv[1], mmap=sys.argv[2] == "mmap")
index.search(q, 10)  # a Flat search reads every vector: all pages are touched
after = rss()
print(json.dumps({"mapped": index.mapped, "anon": after["RssAnon"] - before["RssAnon"],
                  "file": after["RssFile"] - before["RssFile"]}))
"""


def _probe(folder: Path, how: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(folder), how], cwd=REPO, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_mapped_index_is_not_copied_into_private_memory(tmp_path):
    n, dim = 200_000, 384
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    VectorIndex.build(np.arange(n, dtype=np.int64), x, model="m", checksums={}, dim=dim, factory="Flat").save(tmp_path)
    del x
    size = (tmp_path / INDEX_NAME).stat().st_size
    assert size > n * dim * 4

    mapped, read = _probe(tmp_path, "mmap"), _probe(tmp_path, "read")
    assert mapped["mapped"] and not read["mapped"]
    # a normal read copies the vectors into the process; a mapped one holds only the id maps privately
    assert read["anon"] > 0.9 * size, read
    assert mapped["anon"] < 0.1 * size, (mapped, size)
    # ... and reads the vectors from the file's pages, which other processes mapping it share
    assert mapped["file"] > 0.5 * size, (mapped, size)


# ---------------------------------------------------------------- metadata for k hits: one batched read
def _synthetic_catalog(data_dir: Path, database_url: str | None, n: int = 300) -> None:
    from indexer import repository as repo
    from indexer.catalog import Catalog
    from retrieval.encoders import create_model

    model = create_model(None)
    catalog = Catalog(data_dir, database_url=database_url)
    try:
        vecs = _unit(np.random.default_rng(5).standard_normal((n, model.dim)).astype(np.float32))
        with catalog.session() as s:
            repo.set_model(s, model.name, model.checksums)
            for i in range(0, n, 3):
                row = repo.upsert_file(s, path=f"/synthetic/{i:05d}.txt", file_id=None, modality="text",
                                       size=100, mtime_ns=0, sha256=None, error=None)
                repo.add_items(s, row.id, [repo.NewItem("text", v, content=f"passage {i + j}")
                                           for j, v in enumerate(vecs[i:i + 3])])
            repo.bump_revision(s)
            s.commit()
        _, checksums, revision = catalog.state()
        catalog.rebuild_index("text", model.name, checksums, revision)
    finally:
        catalog.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_metadata_of_a_page_of_hits_is_one_batched_read(tmp_path, backend):
    from indexer.service import open_service
    from retrieval.query import Input, Query

    url, drop = new_pg_database("mmap_meta") if backend == "postgres" else (None, lambda: None)
    try:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        _synthetic_catalog(data_dir, url)
        vec = _unit(np.random.default_rng(9).standard_normal((1, 384)).astype(np.float32))[0].tolist()
        with open_service(data_dir, database_url=url) as service:
            assert service.searcher.indices["text"].mapped
            engine = service.port.catalog.engine
            counts = {}
            for k in (3, 30, 120):
                statements: list[str] = []
                listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
                event.listen(engine, "before_cursor_execute", listener)
                try:
                    result = service.search(Query((Input("vector", vec, modality="text"),), target="text", k=k))
                finally:
                    event.remove(engine, "before_cursor_execute", listener)
                assert len(result.hits) == k and all(h.path for h in result.hits)
                counts[k] = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            assert len(counts[3]) == len(counts[30]) == len(counts[120]) <= 2, counts
    finally:
        drop()


def test_mapping_can_be_turned_off(tmp_path, data, monkeypatch):
    ids, x, q = data
    VectorIndex.build(ids[:100], x[:100], model="m", checksums={}, dim=64, factory="Flat").save(tmp_path)
    monkeypatch.setenv("RETRIEVAL_INDEX_MMAP", "0")
    copied = VectorIndex.load(tmp_path, mmap=True)
    assert not copied.mapped
    copied.add(ids[100:101], x[100:101])  # an ordinary copy: writable
    assert copied.count == 101
