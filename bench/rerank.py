"""Cost of re-ranking on this machine, as a ratio to first-stage search; prints JSON.

    python bench/rerank.py [--gallery 20000] [--k 100] [--queries 50]

Builds a gallery of ``--gallery`` image items whose vectors and token features
come from the demo images (replicated with small perturbations, so the FAISS
search and the re-ranker see realistic shapes: 17 pixel tokens, some with a
name view), a flat FAISS index over them, and runs the same text queries
through (a) first-stage search (query encoding + FAISS top-K) and (b) the
re-rank step alone (query tokens + candidate token loading from a real on-disk
token store + the cross-attention scorer over K candidates). Reports per-query
milliseconds (median over the queries) and the ratio (b)/(a).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUERIES = ["a red apple", "a dog", "a cat face", "a guitar", "a house with a garden", "a rocket", "pizza",
           "a bicycle", "rain and an umbrella", "a birthday cake"]


@dataclass(frozen=True)
class _Hit:
    id: int
    modality: str
    score: float


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", type=int, default=20_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()

    import torch

    from retrieval import decoders
    from retrieval.encoders import create_model
    from retrieval.rerank import create_reranker
    from retrieval.index import VectorIndex
    from retrieval.rerank import RerankOptions, rerank_hits
    from retrieval.tokens import TokenStore, item_views, query_views

    torch.set_num_threads(2)
    model = create_model("triad-mini")
    reranker = create_reranker("triad-mini")
    paths = sorted((REPO / "demo" / "images").glob("*.png"))
    base = item_views(model, "image", [decoders.load_image(p) for p in paths], [None] * len(paths), [str(p) for p in paths])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "tokens")
        vecs = np.empty((args.gallery, model.dim), np.float32)
        batch = []
        for i in range(args.gallery):
            v = {k: t + rng.normal(0, 0.02, t.shape).astype(np.float32) for k, t in base[i % len(base)].items()}
            if i % 3:
                v.pop("name", None)
            vecs[i] = v["pixels"][0] / np.linalg.norm(v["pixels"][0])
            batch.append((i + 1, v))
            if len(batch) == 1000:
                store.put_many(batch)
                batch = []
        store.put_many(batch)
        index = VectorIndex.build(np.arange(1, args.gallery + 1, dtype=np.int64), vecs, model="triad-mini", checksums={},
                                  dim=model.dim, factory="Flat", modality="image", revision=0)
        first_ms, rerank_ms = [], []
        options = RerankOptions(args.k)
        for n in range(args.queries):
            text = QUERIES[n % len(QUERIES)] + ("" if n < len(QUERIES) else f" {n}")
            t0 = time.perf_counter()
            q = model.encode("text", [text])[0]
            scores, ids = index.search(q[None], args.k)
            hits = [_Hit(int(i), "image", float(s)) for s, i in zip(scores[0], ids[0])]
            t1 = time.perf_counter()
            qv = query_views(model, "text", text)
            views = store.get_many([h.id for h in hits])
            t2 = time.perf_counter()
            rerank_hits(hits, [("text", qv, 1.0)], reranker, views, options)
            t3 = time.perf_counter()
            first_ms.append((t1 - t0) * 1000)
            rerank_ms.append((t3 - t1) * 1000)
            if n == 0:
                load_ms = (t2 - t1) * 1000
        med_first, med_rerank = statistics.median(first_ms[1:]), statistics.median(rerank_ms[1:])
        print(json.dumps({
            "gallery": args.gallery, "k": args.k, "queries": args.queries, "threads": torch.get_num_threads(),
            "first_stage_ms_p50": round(med_first, 2), "rerank_ms_p50": round(med_rerank, 2),
            "rerank_ms_p90": round(sorted(rerank_ms[1:])[int(0.9 * (len(rerank_ms) - 2))], 2),
            "first_query_token_load_ms": round(load_ms, 2),
            "rerank_over_first_stage": round(med_rerank / med_first, 2),
        }))


if __name__ == "__main__":
    main()
