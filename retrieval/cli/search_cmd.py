"""`python -m retrieval search`: fused query -> hits with paths and segment times.

``--hybrid`` adds keyword search: the vector hits (a pool of
:data:`HYBRID_POOL`) and the catalog's full-text hits for the words of the
positive ``--text`` inputs, restricted to ``--target``, are merged by reciprocal
rank fusion (k = 60, :mod:`retrieval.rank_fusion`). A hit's ``score`` is then
the fused score normalised to (0, 1] (1 = first in both lists); ``ranks`` says
where it stood in each list and ``matched`` which query words its text or file
name holds. Without typed words there is nothing to match and hybrid equals
vector search.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path

from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.db import data_dir_from

from ..encoders import canonical_name, create_model, create_reranker
from ..fusion import fuse
from ..index import check_compatible
from ..rank_fusion import ranks as list_ranks, rrf
from ..rerank import DEFAULT_K, RerankOptions, rerank_inputs
from ..search import Hit, QueryInput, Searcher, decode_input
from ..spans import best_span, text_snippet

SPAN_REFINE_TOP = 10
HYBRID_POOL = 1000  # vector and keyword hits fused per hybrid query (FAISS top-1000 costs milliseconds)


def run_search(args: argparse.Namespace) -> int:
    inputs = [QueryInput(m, v, w) for m, v, w in (getattr(args, "inputs", None) or [])]
    if not inputs:
        raise ValueError("give at least one query input: --text T, --image FILE or --audio FILE")
    if not any(q.weight > 0 for q in inputs):
        raise ValueError("a query needs at least one input to look for: add --text T, --image FILE or --audio FILE "
                         "next to the --not-* inputs")
    data_dir = data_dir_from(args.data_dir)
    if not (data_dir / "index").is_dir():
        raise FileNotFoundError(f"no index in {data_dir}; run `python -m indexer add PATH --data-dir {data_dir}` first")
    catalog = Catalog(data_dir)
    try:
        indices = catalog.fresh_indices()
        if args.model:  # refuse before loading another model
            for index in indices.values():
                check_compatible(index.manifest, canonical_name(args.model), {})
        searcher = Searcher(indices, create_model(args.model) if args.model else None)
        vectors, weights = searcher.encode_inputs(inputs), [q.weight for q in inputs]
        query = fuse(vectors, weights)  # the lookup vector; also refuses a query of "not this" inputs only
        k, hybrid = max(1, args.k), getattr(args, "hybrid", False)
        # the re-ranker was trained on single-input queries; several inputs are scored by attention fusion
        single = len([q for q in inputs if q.weight != 0]) == 1
        options = RerankOptions(args.rerank_k or DEFAULT_K, args.rerank_weight) if single and not args.no_rerank else None
        pool = max(k, HYBRID_POOL if hybrid else 0, options.k if options else 0)
        hits = searcher.search_inputs(vectors, weights, target=args.target, k=pool)
        if options is not None:  # the top K re-ranked by the fused cross-attention scorer (when the model has one)
            lazy = [(q.modality, functools.partial(decode_input, q), q.weight) for q in inputs]
            hits = rerank_inputs(searcher.model, create_reranker(searcher.model.name), lazy, hits,
                                 catalog.token_store(), options)
        fused: dict[int, dict] = {}
        if hybrid:
            hits, fused = _hybrid(catalog, hits, inputs, args.target, k)
        hits = hits[:k]
        with catalog.session() as s:
            meta = repo.item_hits(s, [h.id for h in hits])
    finally:
        catalog.close()
    query_words = [w for q in inputs if q.modality == "text" and q.weight > 0 for w in re.findall(r"\w+", q.value)]
    rows = []
    for rank, h in enumerate(hits):
        m = meta.get(h.id, {})
        row = {"id": h.id, "path": m.get("path"), "modality": h.modality, "score": round(h.score, 4)}
        row.update(fused.get(h.id, {}))
        if m.get("content"):
            row["text"] = text_snippet(m["content"], query_words)
        if m.get("start") is not None:
            row["start"], row["end"] = m["start"], m["end"]
            segments = m.get("extra", {}).get("segments") or []
            span = best_span(searcher.model, query, segments) if rank < SPAN_REFINE_TOP and len(segments) > 1 else None
            if span:  # narrow a long window to the sentence that matched
                row["window"] = [m["start"], m["end"]]
                row["start"], row["end"], row["text"] = span["start"], span["end"], span["text"]
        rows.append(row)
    if args.json:
        print(json.dumps({"hits": rows}))
    else:
        if not rows:
            print("no results (is anything of that modality indexed? `python -m indexer status`)")
        for r in rows:
            where = f" [{r['start']:.1f}-{r['end']:.1f}s]" if "start" in r else ""
            snippet = f"  \"{' '.join(r['text'].split())[:80]}\"" if r.get("text") else ""
            print(f"{r['score']:.3f}  {r['modality']:<5}  {Path(r['path']).name if r['path'] else r['id']}{where}{snippet}")
    return 0


def _hybrid(catalog: Catalog, hits: list[Hit], inputs: list[QueryInput], target: str,
            k: int) -> tuple[list[Hit], dict[int, dict]]:
    """RRF of the vector ``hits`` and the keyword hits of the typed words: top ``k`` and, per hit, its ranks."""
    words = " ".join(q.value for q in inputs if q.modality == "text" and q.weight > 0)
    if not repo.keyword_terms(words):
        return hits[:k], {}  # no typed words: hybrid is vector search
    with catalog.session() as s:
        keyword = repo.keyword_search(s, words, None if target == "all" else target, limit=max(k, HYBRID_POOL))
        lists = [[h.id for h in hits], [i for i, _ in keyword]]
        top = rrf(lists, normalize=True)[:k]
        modality = {h.id: h.modality for h in hits}
        missing = [i for i, _ in top if i not in modality]
        modality.update({i: m["modality"] for i, m in repo.item_hits(s, missing).items()})
        matched = repo.keyword_matches(s, [i for i, _ in top], words)
    where = list_ranks(lists)
    out = [Hit(i, modality[i], score) for i, score in top if i in modality]
    info = {h.id: {"ranks": {"vector": where[h.id][0], "keyword": where[h.id][1]}, "matched": matched.get(h.id, [])}
            for h in out}
    return out, info
