"""`python -m retrieval eval`: end-to-end recall through the real pipeline.

The manifest's files (and inline text rows, written to files) are indexed by the
real indexer into a temporary data directory with a SQLite catalog; every query
row is then embedded exactly as the indexer embedded it and searched against the
gallery rows of each modality; unless ``--no-rerank``, the top K of each ranking
is re-ranked with the query row's own stored token features (as a search would
with the query's tokens). Relevant = same label; a query never retrieves
itself; queries with no relevant gallery row are skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.pipeline import AddOptions, add

from ..encoders import MODALITIES, create_reranker
from ..fusion import fuse
from ..metrics import summarize
from ..rerank import DEFAULT_K, RerankOptions, rerank_hits
from ..search import Searcher
from ..tokens import QUERY_VIEW


def load_manifest(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
        for key in ("id", "modality", "label"):
            if key not in row:
                raise ValueError(f"{path}:{n}: missing '{key}'")
        if row["modality"] not in MODALITIES:
            raise ValueError(f"{path}:{n}: modality must be one of {', '.join(MODALITIES)}")
        if "path" not in row and not (row["modality"] == "text" and "text" in row):
            raise ValueError(f"{path}:{n}: needs 'path' (or 'text' for a text row)")
        if row.get("role", "both") not in ("query", "gallery", "both"):
            raise ValueError(f"{path}:{n}: role must be query, gallery or both")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _materialise(rows: list[dict], manifest_dir: Path, work: Path) -> dict[str, list[int]]:
    """Absolute file path -> row indices; inline text rows become files in ``work``."""
    by_path: dict[str, list[int]] = defaultdict(list)
    text_dir = work / "texts"
    text_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        if "path" in row:
            p = (manifest_dir / row["path"]).resolve()
            if not p.is_file():
                raise FileNotFoundError(f"manifest row '{row['id']}': {p} does not exist")
        else:
            p = text_dir / f"{i:06d}_{re.sub(r'[^A-Za-z0-9_-]', '_', str(row['id']))[:60]}.txt"
            p.write_text(row["text"], encoding="utf-8")
        by_path[str(p)].append(i)
    return by_path


def evaluate(manifest: Path, model: str | None, work: Path, rerank: RerankOptions | None = None) -> dict:
    rows = load_manifest(manifest)
    by_path = _materialise(rows, Path(manifest).resolve().parent, work)
    data_dir = work / "data"
    catalog = Catalog(data_dir, database_url=f"sqlite:///{data_dir / 'catalog.sqlite3'}")
    try:
        add([Path(p) for p in by_path], catalog, AddOptions(model=model, progress=False))
        searcher = Searcher(catalog.fresh_indices())
        item_rows: dict[int, list[int]] = defaultdict(list)
        row_items: dict[int, list[int]] = defaultdict(list)
        row_vecs: dict[int, list[np.ndarray]] = defaultdict(list)
        with catalog.session() as s:
            for modality in MODALITIES:
                for ids, vecs in repo.iter_embeddings(s, modality):
                    meta = repo.item_hits(s, ids.tolist())
                    for iid, vec in zip(ids.tolist(), vecs):
                        for r in by_path.get(meta[iid]["path"], []):
                            item_rows[iid].append(r)
                            row_items[r].append(iid)
                            row_vecs[r].append(vec)
        reranker = create_reranker(searcher.model.name) if rerank is not None else None
        views = catalog.token_store().get_many(list(item_rows)) if reranker is not None else {}
    finally:
        catalog.close()
    # a row's query vector: its item's embedding (segments of a long recording: their mean)
    query_vec = {r: fuse(np.stack(v)) for r, v in row_vecs.items()}
    results: dict[str, dict] = {}
    present = sorted({rows[r]["modality"] for r in query_vec}, key=MODALITIES.index)
    for q_mod in present:
        for g_mod in present:
            gallery = [r for r in query_vec if rows[r]["modality"] == g_mod and rows[r].get("role", "both") != "query"]
            queries = [r for r in query_vec if rows[r]["modality"] == q_mod and rows[r].get("role", "both") != "gallery"]
            ranked, n_rel = [], []
            gallery_set = set(gallery)
            for q in queries:
                relevant = {g for g in gallery if g != q and rows[g]["label"] == rows[q]["label"]}
                if not relevant:
                    continue
                own = frozenset(row_items[q])
                hits = searcher.search_vector(query_vec[q], target=g_mod, k=searcher.indices[g_mod].count, exclude=own)
                qviews = views.get(row_items[q][0], {})
                if reranker is not None and QUERY_VIEW[q_mod] in qviews:
                    query = [(q_mod, {QUERY_VIEW[q_mod]: qviews[QUERY_VIEW[q_mod]]}, 1.0)]
                    hits = rerank_hits(hits, query, reranker, views, rerank)
                order, seen = [], set()
                for h in hits:
                    for r in item_rows.get(h.id, []):
                        if r in gallery_set and r != q and r not in seen:
                            seen.add(r)
                            order.append(r)
                ranked.append([rows[r]["label"] == rows[q]["label"] for r in order])
                n_rel.append(len(relevant))
            if ranked:
                results[f"{q_mod}->{g_mod}"] = summarize(ranked, n_rel)
    return results


def run_eval(args: argparse.Namespace) -> int:
    rerank = None if args.no_rerank else RerankOptions(args.rerank_k or DEFAULT_K, args.rerank_weight)
    if args.keep_data_dir:
        work = Path(args.keep_data_dir)
        work.mkdir(parents=True, exist_ok=True)
        results = evaluate(Path(args.manifest), args.model, work, rerank)
    else:
        with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
            results = evaluate(Path(args.manifest), args.model, Path(tmp), rerank)
    if args.json:
        print(json.dumps(results))
    else:
        for pair, m in results.items():
            print(f"{pair:<14} R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}  mAP {m['mAP']:.3f}  (n={m['n']})")
    return 0
