"""`python -m retrieval eval`: end-to-end recall through the real pipeline and the query API.

The manifest's files (and inline text rows, written to files) are indexed by the
real indexer into a temporary data directory with a SQLite catalog; every query
row is then asked through :meth:`retrieval.service.SearchService.search` as an
``item`` query (its stored embedding, as indexed; a long recording's parts: their
mean) against each gallery modality, ranking the whole gallery, re-ranked unless
``--no-rerank`` exactly as a search would be (the item's stored tokens are its
query tokens). Relevant = same label; a query never retrieves itself; queries
with no relevant gallery row are skipped.

Video rows (``"modality": "video"``, DESIGN's row plus optional ``"start"``/``"end"`` seconds, default
the whole file) are labelled segments of a video; several rows may name one file. A video row stands
for the items of its file whose span overlaps its own; as a gallery it is found when a video hit (the
best moment of its video, :mod:`retrieval.moments`) starts inside its span, so ``q->video`` measures
finding the right video *and* the right moment; as a query it is its keyframes' mean.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable

from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.pipeline import AddOptions, add
from indexer.service import service_for

from ..encoders import MODALITIES
from ..index import INDEX_NAMES
from ..metrics import summarize
from ..query import DEFAULT_RERANK_K, Hit, Input, Query
from ..rerank import RerankOptions

# called per (query row, gallery modality) with the query row and, in rank order, (gallery row, its hit)
Collector = Callable[[dict, str, list[tuple[dict, Hit]]], None]
ROW_MODALITIES = (*MODALITIES, "video")


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
        if row["modality"] not in ROW_MODALITIES:
            raise ValueError(f"{path}:{n}: modality must be one of {', '.join(ROW_MODALITIES)}")
        if row["modality"] == "video" and not all(isinstance(row.get(k, 0), (int, float)) for k in ("start", "end")):
            raise ValueError(f"{path}:{n}: a video row's start and end are seconds")
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


def evaluate(manifest: Path, model: str | None, work: Path, rerank: RerankOptions | None = None,
             collect: Collector | None = None) -> dict:
    rows = load_manifest(manifest)
    by_path = _materialise(rows, Path(manifest).resolve().parent, work)
    data_dir = work / "data"
    catalog = Catalog(data_dir, database_url=f"sqlite:///{data_dir / 'catalog.sqlite3'}")
    try:
        add([Path(p) for p in by_path], catalog, AddOptions(model=model, progress=False))
        indices = catalog.fresh_indices()
        service = service_for(catalog, indices, catalog.state()[2])
        item_rows: dict[int, list[int]] = defaultdict(list)
        row_items: dict[int, list[int]] = defaultdict(list)
        with catalog.session() as s:
            for name in INDEX_NAMES:
                for ids, _ in repo.iter_embeddings(s, name):
                    meta = repo.item_hits(s, ids.tolist())
                    for iid in ids.tolist():
                        for r in by_path.get(meta[iid]["path"], []):
                            if rows[r]["modality"] == "video" and not (
                                    meta[iid]["view"] == "frame" and _overlaps(rows[r], meta[iid])):
                                continue  # a video row: its own span's keyframes
                            item_rows[iid].append(r)
                            row_items[r].append(iid)
        results: dict[str, dict] = {}
        present = sorted({rows[r]["modality"] for r in row_items}, key=ROW_MODALITIES.index)
        for q_mod in present:
            for g_mod in present:
                gallery = [r for r in row_items if rows[r]["modality"] == g_mod and rows[r].get("role", "both") != "query"]
                queries = [r for r in row_items if rows[r]["modality"] == q_mod and rows[r].get("role", "both") != "gallery"]
                ranked, n_rel = [], []
                gallery_set = set(gallery)
                for q in queries:
                    relevant = {g for g in gallery if g != q and rows[g]["label"] == rows[q]["label"]}
                    if not relevant:
                        continue
                    size = indices["video-frame"].count if g_mod == "video" else indices[g_mod].count
                    query = Query((Input("item", tuple(row_items[q])),), target=g_mod, k=size,
                                  rerank=rerank is not None, rerank_k=rerank.k if rerank else DEFAULT_RERANK_K,
                                  rerank_weight=rerank.weight if rerank else None, details=False)
                    hits = service.search(query).hits
                    order, seen = [], set()
                    for h in hits:
                        for r in _rows_of_hit(h, item_rows, rows, by_path, meta_of=service.port.items):
                            if r in gallery_set and r != q and r not in seen:
                                seen.add(r)
                                order.append((r, h))
                    ranked.append([rows[r]["label"] == rows[q]["label"] for r, _ in order])
                    n_rel.append(len(relevant))
                    if collect is not None:
                        collect(rows[q], g_mod, [(rows[r], h) for r, h in order])
                if ranked:
                    results[f"{q_mod}->{g_mod}"] = summarize(ranked, n_rel)
    finally:
        catalog.close()
    return results


def _overlaps(row: dict, item: dict) -> bool:
    a, b = float(row.get("start", 0.0)), float(row.get("end", float("inf")))
    return item["start"] is not None and item["start"] < b and item["end"] > a


def _rows_of_hit(h: Hit, item_rows: dict[int, list[int]], rows: list[dict], by_path: dict[str, list[int]],
                 meta_of: Callable) -> list[int]:
    """The manifest rows a hit stands for: its item's; a video moment's: the rows of its file whose span holds
    the moment's start."""
    if h.modality != "video" or h.start is None:
        return item_rows.get(h.id, [])
    path = meta_of([h.id]).get(h.id, {}).get("path")
    return [r for r in by_path.get(path, []) if float(rows[r].get("start", 0.0)) <= h.start + 1e-6
            < float(rows[r].get("end", float("inf")))]


def run_eval(args: argparse.Namespace) -> int:
    rerank = None if args.no_rerank else RerankOptions(args.rerank_k or DEFAULT_RERANK_K, args.rerank_weight)
    rankings = open(args.rankings, "w", encoding="utf-8") if getattr(args, "rankings", None) else None

    def write_ranking(qrow: dict, g_mod: str, order: list[tuple[dict, Hit]]) -> None:
        assert rankings is not None
        rankings.write(json.dumps({"query": qrow["id"], "target": g_mod, "ranked": [r["id"] for r, _ in order],
                                   "scores": [round(h.score, 6) for _, h in order]}) + "\n")

    collect = write_ranking if rankings else None
    try:
        if args.keep_data_dir:
            work = Path(args.keep_data_dir)
            work.mkdir(parents=True, exist_ok=True)
            results = evaluate(Path(args.manifest), args.model, work, rerank, collect)
        else:
            with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
                results = evaluate(Path(args.manifest), args.model, Path(tmp), rerank, collect)
    finally:
        if rankings:
            rankings.close()
    if args.json:
        print(json.dumps(results))
    else:
        for pair, m in results.items():
            print(f"{pair:<14} R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}  mAP {m['mAP']:.3f}  (n={m['n']})")
    return 0
