"""FAISS wrapper: approximate search compared with exact search, ids, persistence, model checks."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index import IndexMismatchError, VectorIndex, exact_search, resolve_factory


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """20k vectors in 200 clusters (like real embeddings) and perturbed-database queries."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((200, 64))
    x = _unit(centers[rng.integers(0, 200, 20_000)] + 0.35 * rng.standard_normal((20_000, 64)))
    q = _unit(x[rng.choice(20_000, 200, replace=False)] + 0.05 * rng.standard_normal((200, 64)))
    ids = np.arange(1_000, 21_000, dtype=np.int64)  # ids are SQL keys, not positions
    return ids, x, q


def _recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


def test_flat_is_exact(clustered):
    ids, x, q = clustered
    index = VectorIndex.build(ids, x, model="m", checksums={}, dim=64, factory="Flat")
    _, got = index.search(q, 10)
    _, truth = exact_search(x, ids, q, 10)
    assert np.array_equal(got, truth)


@pytest.mark.parametrize("factory", ["IVF{n},Flat", "HNSW32", "SQfp16", "SQ8", "PQ32x4fs,RFlat"])
def test_approximate_close_to_exact(clustered, factory):
    ids, x, q = clustered
    index = VectorIndex.build(ids, x, model="m", checksums={}, dim=64, factory=factory)
    _, got = index.search(q, 10)
    _, truth = exact_search(x, ids, q, 10)
    recall = _recall_at_10(got, truth)
    assert recall >= 0.95, f"{index.manifest.factory}: recall@10 {recall:.3f} vs exact"
    assert got[:, 0].tolist() != [-1] * len(got)


def test_auto_factory_by_size():
    assert resolve_factory("auto", 10) == "Flat"
    assert resolve_factory("auto", 1_000_000, 384) == "PQ192x4fs,RFlat"  # fits the default 8 GB budget
    assert resolve_factory("auto", 10_000_000, 384) == "IVF{n},SQ8"  # the full vectors would not (15 GB)
    assert resolve_factory("IVF64,Flat", 10) == "IVF64,Flat"


def test_add_remove_save_load_roundtrip(tmp_path, clustered):
    ids, x, _ = clustered
    index = VectorIndex.build(ids[:100], x[:100], model="m", checksums={"text/w": "abc"}, dim=64,
                              factory="Flat", modality="text", revision=7)
    index.add(ids[100:150], x[100:150])
    assert index.remove(ids[:10]) == 10
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    assert loaded.count == 140
    assert loaded.manifest.revision == 7 and loaded.manifest.model == "m"
    _, got = loaded.search(x[120:121], 1)
    assert got[0, 0] == ids[120]
    _, got = loaded.search(x[5:6], 5)
    assert ids[5] not in got[0]


def test_query_with_another_model_is_refused(clustered):
    ids, x, _ = clustered
    index = VectorIndex.build(ids[:10], x[:10], model="triad-mini", checksums={"text/w": "abc"}, dim=64)
    index.check_model("triad-mini", {"text/w": "abc"})
    with pytest.raises(IndexMismatchError, match="built with model 'triad-mini'.*--model triad-mini"):
        index.check_model("openclip:ViT-B-32/laion2b_s34b_b79k", {})
    with pytest.raises(IndexMismatchError, match="weights differ"):
        index.check_model("triad-mini", {"text/w": "other"})


def test_wrong_dimension_is_a_clear_error(clustered):
    ids, x, _ = clustered
    index = VectorIndex.build(ids[:10], x[:10], model="m", checksums={}, dim=64)
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        index.search(np.ones((1, 32), np.float32), 3)


def test_empty_index_searches_to_nothing():
    index = VectorIndex.build(np.zeros(0, np.int64), np.zeros((0, 8), np.float32), model="m", checksums={}, dim=8)
    scores, got = index.search(np.ones((1, 8), np.float32), 5)
    assert (got == -1).all()
