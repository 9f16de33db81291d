"""Which FAISS structure a data directory gets: ``auto`` is chosen by size, again as the collection grows;
only a factory the user typed is kept by later runs.

The real pipeline indexes real notes with the bundled model, in this process, with the size at which
``auto`` leaves exact search lowered from 200k to a handful of vectors (the structure it then picks,
fast-scan PQ with exact re-scoring, is the one a large collection gets).

Issue 14 part 4 (ten million on one machine): ``auto`` also weighs a memory budget (``RETRIEVAL_INDEX_MEMORY_GB``)
and moves to compressed IVF lists when the full vectors do not fit; ``Catalog.rebuild_index`` streams the
stored embeddings (a sampled first pass to train, a second to add) and builds what the one-shot build does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import retrieval.index as index_module
import retrieval.index_build as build_module
import retrieval.index_stream as stream_module
from conftest import new_pg_database, run_json
from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.pipeline import AddOptions, add
from indexer.writer import _same_factory
from retrieval.index import VectorIndex, exact_search, resolve_factory

TOPICS = ["gardening tomatoes", "fixing a bicycle chain", "learning the piano", "baking sourdough bread",
          "hiking in the alps", "painting with watercolors", "repairing a leaking tap", "training a puppy"]


def _notes(folder: Path, start: int, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"note_{i:03d}.txt").write_text(f"Note {i}: some thoughts about {TOPICS[i % len(TOPICS)]}.")


def _add(src: Path, data: Path, factory: str | None = None) -> dict:
    catalog = Catalog(data)
    try:
        options = AddOptions(progress=False, **({"factory": factory} if factory else {}))  # as the CLI does
        return add([src], catalog, options).as_dict(with_timings=False)
    finally:
        catalog.close()


def _manifest(data: Path) -> dict:
    return json.loads((data / "index" / "text" / "manifest.json").read_text())


@pytest.fixture()
def small_exact_limit(monkeypatch):
    monkeypatch.setattr(stream_module, "AUTO_EXACT_LIMIT", 24)
    return index_module.resolve_factory("auto", 10_000, 384)


def test_auto_moves_to_the_fast_index_as_the_collection_grows(tmp_path, small_exact_limit):
    src, data = tmp_path / "notes", tmp_path / "data"
    _notes(src, 0, 10)
    _add(src, data)  # the first run bootstraps an empty index: that must not pin "Flat"
    first = _manifest(data)
    assert first["factory"] == "Flat" and "user_factory" not in first["extra"] and "requested_factory" not in first["extra"]
    _notes(src, 10, 30)  # 40 notes: past the (lowered) exact limit
    assert _add(src, data)["added"] == 30
    grown = _manifest(data)
    assert (grown["factory"], grown["count"]) == (small_exact_limit, 40)
    assert "user_factory" not in grown["extra"]
    for path in sorted(src.glob("*.txt"))[:25]:  # shrinks below the limit: exact again
        path.unlink()
    _add(src, data)
    assert (_manifest(data)["factory"], _manifest(data)["count"]) == ("Flat", 15)


def test_a_typed_factory_is_sticky_until_auto_is_typed(tmp_path, small_exact_limit):
    src, data = tmp_path / "notes", tmp_path / "data"
    _notes(src, 0, 40)
    _add(src, data, factory="Flat")  # typed: exact at any size
    assert (_manifest(data)["factory"], _manifest(data)["extra"]) == ("Flat", {"user_factory": "Flat"})
    _notes(src, 40, 4)
    _add(src, data)  # nothing typed: the earlier choice
    assert _manifest(data)["factory"] == "Flat"
    out = run_json("indexer", "rebuild", "--data-dir", str(data))  # (a subprocess: the real limit, 200k)
    assert out["text"]["factory"] == "Flat"
    _add(src, data, factory="auto")  # typed auto: by size from now on
    assert (_manifest(data)["factory"], _manifest(data)["extra"]) == (small_exact_limit, {})


def test_manifests_of_earlier_versions_read_their_bootstrap_flat_as_auto():
    m = index_module.IndexManifest(model="m", checksums={}, dim=4, factory="Flat", extra={"requested_factory": "Flat"})
    assert m.user_factory() is None and m.requested_factory() == "auto"
    m = index_module.IndexManifest(model="m", checksums={}, dim=4, factory="HNSW32",
                                   extra={"requested_factory": "HNSW32"})
    assert m.user_factory() == "HNSW32"
    assert index_module.choose_factory(None, m) == "HNSW32" and index_module.choose_factory("auto", m) == "auto"


# ---------------------------------------------------------------- tiers by size and memory budget
def test_auto_tier_by_collection_size_at_the_default_budget(monkeypatch):
    monkeypatch.delenv(build_module.MEMORY_ENV, raising=False)
    assert resolve_factory("auto", 199_999, 384) == "Flat"
    assert resolve_factory("auto", 200_000, 384) == resolve_factory("auto", 4_000_000, 384) == "PQ192x4fs,RFlat"
    assert resolve_factory("auto", 5_000_000, 384) == "IVF{n},SQ8"  # 4*384 B a vector would pass 8 GB
    assert resolve_factory("auto", 10_000_000, 384) == "IVF{n},SQ8"  # ~4.6 GB
    assert resolve_factory("auto", 30_000_000, 384) == "OPQ96_384,IVF{n},PQ96"
    assert resolve_factory("auto", 1_000_000, 385) == "SQfp16"  # odd dimension: no 2-d PQ sub-vectors
    assert resolve_factory("HNSW32", 10**9, 384) == "HNSW32"  # a typed factory is never second-guessed


def test_a_small_budget_moves_a_small_collection_to_the_ivf_tier(monkeypatch):
    monkeypatch.setenv(build_module.MEMORY_ENV, "0.002")  # 2 MB: 3000 x 384 floats (4.6 MB) do not fit
    assert resolve_factory("auto", 3000, 384) == "IVF{n},SQ8"
    assert resolve_factory("auto", 3000, 384, budget_bytes=10**9) == "Flat"  # an explicit budget wins
    assert resolve_factory("auto", 3000, 384, budget_bytes=1) == "OPQ96_384,IVF{n},PQ96"  # nothing fits: smallest
    monkeypatch.setenv(build_module.MEMORY_ENV, "lots")
    assert build_module.memory_budget_bytes() == int(build_module.DEFAULT_MEMORY_GB * 1e9)
    # the writer keeps an IVF index whose list count was fixed when it was built (no rebuild per batch)
    assert _same_factory(resolve_factory("auto", 3500, 384, budget_bytes=2 * 10**6), "IVF219,SQ8")
    assert not _same_factory("IVF{n},Flat", "IVF4096,SQ8")  # another IVF is another structure: rebuilt


@pytest.mark.parametrize("factory", ["PQ32x4fs,RFlat", "IVF{n},SQ8", "OPQ16_64,IVF{n},PQ16"])
def test_size_estimates_cover_the_saved_index(tmp_path, factory):
    n, dim = 3000, 64
    x = _clustered(n, dim, seed=4)
    VectorIndex.build(np.arange(n), x, model="m", checksums={}, dim=dim, factory=factory).save(tmp_path)
    size = (tmp_path / index_module.INDEX_NAME).stat().st_size
    estimate = build_module.estimated_bytes(factory, n, dim)
    # the file holds everything but IDMap2's reverse map (built at load): at most ID_MAP_BYTES a vector apart
    assert size <= estimate <= size + build_module.ID_MAP_BYTES * n + 4096, (size, estimate)


# ---------------------------------------------------------------- the streaming rebuild
def _clustered(n: int, dim: int, seed: int = 0, centres: int = 1000) -> np.ndarray:
    """bench/index_10m.py's generator: unit vectors around ``centres`` unit centres, noise as at 384-d 0.08."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + 0.08 * np.sqrt(384 / dim) * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fill(catalog: Catalog, x: np.ndarray, per_file: int = 50) -> np.ndarray:
    """``x`` as text items of synthetic files through the repository API; their ids."""
    ids = []
    with catalog.session() as s:
        for start in range(0, len(x), per_file):
            row = repo.upsert_file(s, path=f"/synthetic/{start:06d}.txt", file_id=None, modality="text", size=1,
                                   mtime_ns=0, sha256=None, error=None)
            ids += repo.add_items(s, row.id, [repo.NewItem("text", v, content=f"passage {start + j}")
                                              for j, v in enumerate(x[start:start + per_file])])
        repo.bump_revision(s)
        s.commit()
    return np.asarray(ids, dtype=np.int64)


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request, tmp_path):
    url, drop = new_pg_database("choice") if request.param == "postgres" else (None, lambda: None)
    cat = Catalog(tmp_path / "data", database_url=url)
    yield cat
    cat.close()
    drop()


@pytest.fixture()
def scans(monkeypatch):
    """Small SQL pages, and a count of the scans a rebuild makes."""
    calls = []
    real = repo.iter_embeddings

    def paged(s, name, batch=20_000, until=None):
        calls.append(until)
        return real(s, name, batch=257, until=until)

    monkeypatch.setattr(repo, "iter_embeddings", paged)
    return calls


@pytest.mark.parametrize("factory", ["Flat", "IVF{n},SQ8", "PQ16x4fs,RFlat"])
@pytest.mark.parametrize("one_pass_rows", [0, 200_000])  # 0: even a small collection is read twice
def test_streaming_rebuild_equals_the_one_shot_build(catalog, scans, monkeypatch, factory, one_pass_rows):
    monkeypatch.setattr(build_module, "ONE_PASS_ROWS", one_pass_rows)
    monkeypatch.setattr(stream_module, "MAX_TRAIN_POINTS", 700)  # the sample is picked across many pages
    x = _clustered(2500, 32, seed=1)
    ids = _fill(catalog, x)
    queries = _clustered(40, 32, seed=2)
    streamed = catalog.rebuild_index("text", "m", {}, 1, factory=factory)
    trained = factory != "Flat"
    assert len(scans) == (2 if trained and one_pass_rows == 0 else 1)  # Flat is never read twice
    one_shot = VectorIndex.build(ids, x, model="m", checksums={}, dim=32, factory=factory, modality="text",
                                 revision=1)
    assert streamed.manifest == one_shot.manifest
    assert np.array_equal(streamed.ids(), one_shot.ids()) and np.array_equal(np.sort(ids), streamed.ids())
    for k in (1, 10, 50):
        s1, i1 = streamed.search(queries, k)
        s2, i2 = one_shot.search(queries, k)
        assert np.array_equal(i1, i2) and np.array_equal(s1, s2), f"{factory} k={k}"
    if trained:  # the same training rows, whether from pages of SQL or from the whole matrix
        sample = build_module.StreamSample(700, 32)
        for start in range(0, len(x), 257):
            sample.add(x[start:start + 257])
        limit = index_module.training_limit(streamed.manifest.factory, 32)
        assert np.array_equal(sample.sample(limit), index_module._training_sample(x, streamed.manifest.factory))


def test_the_ivf_tier_built_by_the_catalog_is_searched_mapped(tmp_path, scans, monkeypatch):
    monkeypatch.setenv(build_module.MEMORY_ENV, "0.02")  # 20 MB: 20k x 384 floats (31 MB) do not fit
    monkeypatch.setattr(build_module, "ONE_PASS_ROWS", 0)
    n, dim = 20_000, 384
    # 50 centres of 400: ~11 of the 565 lists a centre, as 10M around 1000 centres get of 12.6k lists (with
    # 1000 centres of 20 here, k-means cannot find them under the noise: lists cut across them, recall 0.83)
    x = _clustered(n, dim, seed=3, centres=n // 400)
    catalog = Catalog(tmp_path / "data")
    try:
        ids = _fill(catalog, x, per_file=200)
        built = catalog.rebuild_index("text", "m", {}, 1)
    finally:
        catalog.close()
    assert built.manifest.factory == f"IVF{index_module.ivf_lists_for(n)},SQ8" and len(scans) == 2
    assert built.manifest.user_factory() is None  # chosen by size and budget: re-chosen on the next rebuild
    mapped = VectorIndex.load(tmp_path / "data" / "index" / "text", mmap=True)
    assert mapped.mapped and mapped.count == n
    rng = np.random.default_rng(7)
    queries = x[rng.integers(0, n, 100)] + 0.05 * rng.standard_normal((100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, got = mapped.search(queries, 10)
    _, truth = exact_search(x, ids, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])
    assert recall >= 0.9, f"recall@10 {recall:.3f} of {built.manifest.factory} against exact"
