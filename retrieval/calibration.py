"""Scores that mean the same everywhere: per-pair logistic calibration of similarities to relevance.

A cosine of 0.35 is a strong match for a typed word against pictures and a weak
one for a typed word against notes; a re-ranked score (first stage + correction)
lives on yet another scale. So the query API never shows a raw similarity: for a
query of kind ``q`` against items of modality ``g`` (``stage`` = ``first`` or
``rerank``) it shows

    relevance = sigmoid(a[q->g, stage] * similarity + b[q->g, stage])

fitted on held-out data (``python -m retrieval train --stage calibrate``) by
class-balanced logistic regression over all (query, gallery item) pairs.
Balanced classes make the relevance a
likelihood ratio read at even odds, so it does not depend on how many items of
a modality the fitting gallery had. Within one pair the order is unchanged
(``a > 0``), across pairs relevances compare: the "all" view merges by them.

A multi-input query's fused score is in the positive inputs' cosine units
(:func:`retrieval.fusion.attention_fuse_scores`), so its (a, b) are the inputs'
weighted means. A model without a calibration file (OpenCLIP) gets the cosine
clipped to [0, 1] and the result says ``calibrated: false``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

FILE = "calibration.json"
STAGES = ("first", "rerank")


def pair_key(query_modality: str, target: str, stage: str = "first") -> str:
    return f"{query_modality}->{target}" + ("+rerank" if stage == "rerank" else "")


@dataclass
class Calibration:
    """Per-pair (a, b); ``pairs`` maps :func:`pair_key` strings to ``[a, b]``; ``"*"`` is the pooled fit."""

    pairs: dict[str, list[float]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return bool(self.pairs)

    @classmethod
    def load(cls, path: Path | None) -> "Calibration":
        """The calibration in ``path`` (a file or a model folder), or the uncalibrated fallback for None."""
        if path is None:
            return cls()
        path = Path(path)
        if path.is_dir():
            path = path / FILE
        data = json.loads(path.read_text())
        pairs = {k: [float(v[0]), float(v[1])] for k, v in data["pairs"].items()}
        if any(not (a > 0 and math.isfinite(b)) for a, b in pairs.values()):
            raise ValueError(f"{path}: every pair needs a positive slope and a finite offset")
        return cls(pairs, data.get("info", {}))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"pairs": self.pairs, "info": self.info}, indent=1, sort_keys=True) + "\n")

    def params(self, inputs: Sequence[tuple[str, float]], target: str, stage: str = "first") -> tuple[float, float]:
        """(a, b) for positive inputs ``(modality, weight)`` against ``target``: their weighted mean."""
        pos = [(m, w) for m, w in inputs if w > 0]
        total = sum(w for _, w in pos)
        a = b = 0.0
        for modality, w in pos:
            pa, pb = self._pair(modality, target, stage)
            a, b = a + w * pa, b + w * pb
        return a / total, b / total

    def _pair(self, modality: str, target: str, stage: str) -> list[float]:
        for key in (pair_key(modality, target, stage), pair_key(modality, target), "*"):
            if key in self.pairs:
                return self.pairs[key]
        raise KeyError(f"no calibration for {pair_key(modality, target, stage)}")

    def relevance(self, scores: np.ndarray | Sequence[float], inputs: Sequence[tuple[str, float]], target: str,
                  stage: str = "first") -> np.ndarray:
        """Relevances in [0, 1] for similarities ``scores`` of one query against items of ``target``."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.calibrated:
            return np.clip(s, 0.0, 1.0)
        a, b = self.params(inputs, target, stage)
        return 1.0 / (1.0 + np.exp(-(a * s + b)))


def fit_logistic(scores: np.ndarray, labels: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Class-balanced logistic regression of ``labels`` (0/1) on ``scores``: (a, b).

    Newton's method with a backtracking line search on the weighted log-loss (plain Newton steps
    overshoot when the classes barely overlap)."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("calibration needs relevant and non-relevant pairs")
    w = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    X = np.stack([x, np.ones_like(x)], 1)

    def loss(t: np.ndarray) -> float:
        z = X @ t
        return float((w * (np.logaddexp(0.0, z) - y * z)).sum())

    theta = np.zeros(2)
    ridge = 1e-6 * np.eye(2)
    current = loss(theta)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (w * (p - y))
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(theta - t * step) > current:
            t /= 2
        theta = theta - t * step
        new = loss(theta)
        if current - new < 1e-12:
            break
        current = new
    return float(theta[0]), float(theta[1])


def fit(samples: dict[str, tuple[list[float], list[int]]], info: dict | None = None,
        min_pairs: int = 20) -> Calibration:
    """A :class:`Calibration` from per-pair (scores, labels); pairs with too few relevant pairs are left to
    the pooled fit ``"*"``."""
    pairs: dict[str, list[float]] = {}
    stats: dict[str, dict] = {}
    pooled_x: list[float] = []
    pooled_y: list[int] = []
    for key, (x, y) in sorted(samples.items()):
        if not key.endswith("+rerank"):
            pooled_x += list(x)
            pooled_y += list(y)
        n_pos = int(np.sum(y))
        stats[key] = {"relevant": n_pos, "other": len(y) - n_pos}
        if n_pos < min_pairs or n_pos == len(y):
            continue
        a, b = fit_logistic(np.asarray(x), np.asarray(y))
        if a > 0:
            pairs[key] = [round(a, 5), round(b, 5)]
    pairs["*"] = [round(v, 5) for v in fit_logistic(np.asarray(pooled_x), np.asarray(pooled_y))]
    return Calibration(pairs, {**(info or {}), "pairs": stats})
