"""Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): merge ranked lists by rank alone.

``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks; a list that does
not hold ``d`` adds nothing. Ranks rather than scores are fused because a cosine
similarity and a BM25 score live on unrelated scales; ``k = 60`` (the paper's
value) damps the weight of the very top ranks so that agreement between lists
counts more than one list's first place.

Hybrid search fuses the vector hits with the keyword hits of the typed words.
``normalize=True`` divides by the best possible score (``sum_i w_i / (k + 1)``
over the lists that hold anything: first in each of them), so fused scores fall
in (0, 1] and read like the cosine scores a page shows otherwise; an empty list
(no keyword matched) then leaves the other list's scores at full height.

Ties (equal fused score) go to the item with the better single rank, then to
the earlier list, then to first appearance: deterministic, no hashing order.
Pure Python, no SQL: the caller gets the lists from wherever it likes.
"""

from __future__ import annotations

import math
from typing import Hashable, Iterable, Sequence, TypeVar

RRF_K = 60.0

T = TypeVar("T", bound=Hashable)


def rrf(ranked_lists: Sequence[Iterable[T]], k: float = RRF_K, weights: Sequence[float] | None = None,
        normalize: bool = False) -> list[tuple[T, float]]:
    """Fuse ``ranked_lists`` (ids, best first) into one ``[(id, fused score), ...]``, best first.

    A repeated id within one list counts at its first (best) rank only. Weights
    default to 1 per list; a weight of 0 switches a list off.
    """
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"the RRF constant k must be a finite number >= 0, got {k}")
    lists = [list(lst) for lst in ranked_lists]
    if weights is None:
        w = [1.0] * len(lists)
    else:
        w = [float(x) for x in weights]
        if len(w) != len(lists):
            raise ValueError(f"got {len(w)} weights for {len(lists)} ranked lists")
        if any(not math.isfinite(x) or x < 0 for x in w):
            raise ValueError(f"RRF weights must be finite numbers >= 0, got {list(weights)}")
    scores: dict[T, float] = {}
    best: dict[T, tuple[int, int, int]] = {}  # (best rank, list of that rank, first appearance)
    seen = 0
    for li, (lst, weight) in enumerate(zip(lists, w)):
        in_list: set = set()
        for rank, item in enumerate(lst, start=1):
            if item in in_list:
                continue
            in_list.add(item)
            if item not in scores:
                scores[item] = 0.0
                best[item] = (rank, li, seen)
                seen += 1
            elif rank < best[item][0]:
                best[item] = (rank, li, best[item][2])
            scores[item] += weight / (k + rank)
    if not scores:
        return []
    top = sum(x for x, lst in zip(w, lists) if lst) / (k + 1) if normalize else 1.0
    if top <= 0:
        raise ValueError("at least one non-empty ranked list needs a weight above 0")
    order = sorted(scores, key=lambda d: (-scores[d], best[d]))
    return [(d, scores[d] / top) for d in order]


def ranks(ranked_lists: Sequence[Iterable[T]]) -> dict[T, list[int | None]]:
    """Per id, its 1-based rank in each list (None where absent): what a fused hit came from."""
    lists = [list(lst) for lst in ranked_lists]
    out: dict[T, list[int | None]] = {}
    for li, lst in enumerate(lists):
        for rank, item in enumerate(lst, start=1):
            slot = out.setdefault(item, [None] * len(lists))
            if slot[li] is None:
                slot[li] = rank
    return out
