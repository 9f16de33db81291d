"""A refined index (``auto`` above 200k: fast-scan PQ + exact re-scoring) re-scores max(640, 2k) candidates for
large k, not 64k: the top 10 of a big fetch (the hybrid pool of 1,000, the re-rank pool of 100) keeps its recall."""

from __future__ import annotations

import faiss
import numpy as np

from retrieval.index import REFINE_SHORTLIST, VectorIndex, exact_search


def _unit(rng, n, dim=64):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_large_fetches_rescore_a_bounded_shortlist_and_keep_the_top_ten():
    rng = np.random.default_rng(0)
    vecs, ids = _unit(rng, 20_000), np.arange(20_000, dtype=np.int64) * 3 + 1
    index = VectorIndex.build(ids, vecs, model="m", checksums={}, dim=64, factory="PQ32x4fs,RFlat")
    queries = _unit(rng, 20)
    exact = exact_search(vecs, ids, queries, 10)[1]
    small = index.search(queries, 10)[1]
    for k in (100, 1000):
        _, got = index.search(queries, k)
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = max(REFINE_SHORTLIST, 2 * k) / k
        assert np.array_equal(got, index._cpu.search(queries, k, params=params)[1])  # the bounded shortlist
        recall = np.mean([len(set(a[:10]) & set(e)) / 10 for a, e in zip(got, exact)])
        assert recall >= 0.95, (k, recall)
        assert np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(got, small)]) >= 0.95
