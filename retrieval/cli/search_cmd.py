"""`python -m retrieval search`: fused query -> hits with paths and segment times."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.db import data_dir_from

from ..encoders import canonical_name, create_model
from ..index import check_compatible
from ..search import QueryInput, Searcher
from ..spans import best_span, text_snippet

SPAN_REFINE_TOP = 10


def run_search(args: argparse.Namespace) -> int:
    inputs = [QueryInput(m, v) for m, v in (getattr(args, "inputs", None) or [])]
    if not inputs:
        raise ValueError("give at least one query input: --text T, --image FILE or --audio FILE")
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
        query = searcher.query_vector(inputs)
        hits = searcher.search_vector(query, target=args.target, k=max(1, args.k))
        with catalog.session() as s:
            meta = repo.item_hits(s, [h.id for h in hits])
    finally:
        catalog.close()
    query_words = [w for q in inputs if q.modality == "text" for w in re.findall(r"\w+", q.value)]
    rows = []
    for rank, h in enumerate(hits):
        m = meta.get(h.id, {})
        row = {"id": h.id, "path": m.get("path"), "modality": h.modality, "score": round(h.score, 4)}
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
