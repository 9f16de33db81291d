"""Retrieval metrics over ranked lists: recall@k (hit rate) and mean average precision."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def average_precision(relevant: Sequence[bool], n_relevant: int) -> float:
    """AP of one ranked list (``relevant[i]`` = rank i is relevant) with ``n_relevant`` in all."""
    if n_relevant == 0:
        return 0.0
    rel = np.asarray(relevant, dtype=bool)
    hits = np.cumsum(rel)
    ranks = np.arange(1, len(rel) + 1)
    return float((hits[rel] / ranks[rel]).sum() / n_relevant)


def summarize(ranked_relevance: list[Sequence[bool]], n_relevant: list[int], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """``{"R@1": .., "R@5": .., "R@10": .., "mAP": .., "n": ..}`` over queries."""
    n = len(ranked_relevance)
    out: dict = {}
    for k in ks:
        out[f"R@{k}"] = round(float(np.mean([any(r[:k]) for r in ranked_relevance])) if n else 0.0, 4)
    out["mAP"] = round(float(np.mean([average_precision(r, m) for r, m in zip(ranked_relevance, n_relevant)])) if n else 0.0, 4)
    out["n"] = n
    return out
