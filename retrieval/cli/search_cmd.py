"""`python -m retrieval search`: parse the flags into a :class:`~retrieval.query.Query`, call the query API, print.

Ranking, re-ranking, score calibration, hybrid keyword fusion and excerpts all
happen in :mod:`retrieval.service`, exactly as for the web API. ``--json``
prints ``{"hits": [...]}`` with the DESIGN contract's ``id``, ``path``,
``modality`` and ``score`` (the calibrated relevance in [0, 1]; with
``--hybrid`` the reciprocal-rank-fusion score normalised to (0, 1]) and the
same extra fields as the API (``similarity``, ``start``/``end``, ``text``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..query import DEFAULT_RERANK_K, Input, Query, Result


def build_query(args: argparse.Namespace) -> Query:
    inputs = [Input(m, v, w, label=str(v)[:60]) for m, v, w in (getattr(args, "inputs", None) or [])]
    for path in getattr(args, "vector_file", None) or []:
        inputs.append(Input("vector", _read_vector(Path(path)), label=Path(path).name))
    if not inputs:
        raise ValueError("give at least one query input: --text T, --image FILE or --audio FILE")
    if not any(q.weight > 0 for q in inputs):
        raise ValueError("a query needs at least one input to look for: add --text T, --image FILE or --audio FILE "
                         "next to the --not-* inputs")
    for q in inputs:
        if q.kind in ("image", "audio") and not Path(q.value).is_file():
            raise FileNotFoundError(f"--{q.kind} {q.value}: no such file")
    return Query(tuple(inputs), target=args.target, k=max(1, args.k), hybrid=getattr(args, "hybrid", False),
                 rerank=not args.no_rerank, rerank_k=args.rerank_k or DEFAULT_RERANK_K,
                 rerank_weight=args.rerank_weight)


def _read_vector(path: Path) -> np.ndarray:
    """A query vector from a .npy file or a JSON list of numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"--vector-file {path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.asarray(json.loads(path.read_text()), dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--vector-file {path}: not a .npy array or a JSON list of numbers ({exc})") from None


def run_search(args: argparse.Namespace) -> int:
    from indexer.db import data_dir_from
    from indexer.service import open_service

    query = build_query(args)
    data_dir = data_dir_from(args.data_dir)
    with open_service(data_dir, model=args.model) as service:
        result = service.search(query)
    print_result(result, args.json)
    return 0


def print_result(result: Result, as_json: bool) -> None:
    rows = [h.to_dict() for h in result.hits]
    if as_json:
        print(json.dumps({"hits": rows, "calibrated": result.calibrated, "rerank": result.rerank,
                          **({"hybrid": result.hybrid} if result.hybrid else {}),
                          **({"notices": result.notices} if result.notices else {})}))
        return
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    if not rows:
        print("no results (is anything of that modality indexed? `python -m indexer status`)")
    for r in rows:
        where = f" [{r['start']:.1f}-{r['end']:.1f}s]" if "start" in r else ""
        snippet = f"  \"{' '.join(r['text'].split())[:80]}\"" if r.get("text") else ""
        print(f"{r['score']:.3f}  {r['modality']:<5}  {r['name'] or r['id']}{where}{snippet}")
