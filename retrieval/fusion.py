"""Combine several query inputs: one lookup vector for the ANN, attention scores for the candidates.

A multi-input query ("this image, but green", "a spoken question plus a typed
word", "like this item, not like that one") is answered in two stages:

1. :func:`fuse` — one vector for the approximate nearest-neighbour lookup: the
   weighted sum of the inputs' unit vectors (negative weights, "not this", push
   away), re-normalised.
2. :func:`attention_fuse_scores` — each candidate is scored against every input
   separately, and an attention over the inputs *conditioned on the candidate*
   decides how much each input counts: the input the candidate matches worst gets
   the most attention (a soft minimum), so an item must match all inputs ("image
   AND green") instead of one of them very well. "Not this" inputs subtract a
   penalty when the candidate resembles them.

Similarities of different inputs live on different scales (an image query
against images scores ~0.3-1.0, a colour word against images ~0.0-0.2), so the
attention compares *calibrated* similarities: z-scores against the input's own
similarity distribution over a reference sample of the collection.

Pure numpy and deterministic; the library's search (``retrieval.search``) and the
web engine use it. A plain mean of vectors (e.g. of a recording's segments) is
``fuse(vectors)`` without weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoders import l2_normalize

DEFAULT_TAU = 2.0  # attention temperature in z-score units; chosen on the demo archive (see README)
MAX_WEIGHT = 2.0  # the CLI (--weight) and the API accept per-input weights with 0 < |w| <= MAX_WEIGHT
SD_FLOOR = 1e-4  # cosine units: a reference sample of one item (or identical items) has no spread


def _weights(n: int, weights: Sequence[float] | np.ndarray | None) -> np.ndarray:
    w = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"got {w.size} weights for {n} query inputs")
    if not np.all(np.isfinite(w)):
        raise ValueError("query input weights must be finite numbers")
    if not np.any(w > 0):
        raise ValueError("a query needs at least one input with a positive weight (not only \"not this\" inputs)")
    return w


def fuse(vectors: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """(N, D) unit vectors -> one (D,) unit vector: ``normalise(sum_i w_i q_i)``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError("fuse needs at least one query vector")
    w = _weights(len(vectors), weights).astype(np.float32)
    return l2_normalize((w[:, None] * vectors).sum(0))


def attention_fuse_scores(
    query_vectors: np.ndarray,
    weights: Sequence[float] | np.ndarray | None,
    candidate_vectors: np.ndarray,
    tau: float = DEFAULT_TAU,
    reference_vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Score candidates against several weighted query inputs; returns (M,) float32 scores.

    Inputs ``q_i`` (unit, shape (N, D)) with weights ``w_i``: P = {i: w_i > 0} are
    what the user wants, Neg = {j: w_j < 0} are "not this". For a candidate ``c``
    (row of ``candidate_vectors``, unit) and a reference sample R of the collection
    (``reference_vectors``; the candidates themselves when None)::

        s_i(c)  = cos(q_i, c)
        mu_i, sd_i = mean and standard deviation of cos(q_i, r) over r in R  (sd >= SD_FLOOR)
        z_i(c)  = (s_i(c) - mu_i) / sd_i                       calibrated similarity
        a_i(c)  = w_i exp(-z_i(c)/tau) / sum_{p in P} w_p exp(-z_p(c)/tau),  i in P
        f(c)    = sum_{i in P} a_i(c) z_i(c)  -  sum_{j in Neg} (|w_j| / W) max(0, z_j(c)),  W = sum_{p in P} w_p
        score(c) = mu + sd * f(c),   mu = sum_P w_i mu_i / W,   sd = sum_P w_i sd_i / W

    ``a`` is a softmax over *minus* the calibrated similarities: a soft minimum, so
    a candidate scores high only when it matches every positive input (``tau`` ->
    0: the worst-matched input alone; ``tau`` -> inf: the weighted mean of z). A
    "not this" input lowers candidates that resemble it more than the collection
    does on average. The last line maps ``f`` back to cosine units, so with one
    positive input and no negatives ``score(c) = s_1(c)`` (returned exactly), and
    scores stay comparable to single-input scores. Scaling all weights by a
    positive constant changes nothing.
    """
    q = np.asarray(query_vectors, dtype=np.float32)
    if q.ndim != 2 or len(q) == 0:
        raise ValueError("attention_fuse_scores needs at least one query vector")
    w = _weights(len(q), weights)
    if not tau > 0:
        raise ValueError(f"the attention temperature tau must be positive, got {tau}")
    c = np.asarray(candidate_vectors, dtype=np.float32)
    if c.ndim != 2 or c.shape[1] != q.shape[1]:
        raise ValueError(f"candidate vectors must have shape (M, {q.shape[1]}), got {c.shape}")
    sims = c @ q.T  # (M, N)
    pos, neg = w > 0, w < 0
    if pos.sum() == 1 and not neg.any():
        return np.ascontiguousarray(sims[:, int(np.argmax(pos))], dtype=np.float32)
    if len(c) == 0:
        return np.zeros(0, dtype=np.float32)
    ref = c if reference_vectors is None else np.asarray(reference_vectors, dtype=np.float32)
    if ref.ndim != 2 or len(ref) == 0 or ref.shape[1] != q.shape[1]:
        raise ValueError(f"reference vectors must have shape (R>0, {q.shape[1]}), got {ref.shape}")
    ref_sims = (ref @ q.T).astype(np.float64)
    mu, sd = ref_sims.mean(0), np.maximum(ref_sims.std(0), SD_FLOOR)
    z = (sims.astype(np.float64) - mu) / sd  # (M, N)

    wp = w[pos]
    total = wp.sum()
    zp = z[:, pos]
    logits = -zp / tau
    att = np.exp(logits - logits.max(axis=1, keepdims=True)) * wp
    att /= att.sum(axis=1, keepdims=True)
    fused = (att * zp).sum(1)
    if neg.any():
        fused -= (np.maximum(z[:, neg], 0.0) * (-w[neg] / total)).sum(1)
    scale_mu = float((wp * mu[pos]).sum() / total)
    scale_sd = float((wp * sd[pos]).sum() / total)
    return (scale_mu + scale_sd * fused).astype(np.float32)
