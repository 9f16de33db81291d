"""Fuse several query vectors into one (late fusion in the joint space).

Each input contributes its unit vector times a weight (negative weights push
away, "not this"); the sum is re-normalised. Attention-based fusion replaces
this in the re-ranking issue behind the same function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoders import l2_normalize


def fuse(vectors: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """(N, D) unit vectors -> one (D,) unit vector."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError("fuse needs at least one query vector")
    w = np.ones(len(vectors), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    if w.shape != (len(vectors),):
        raise ValueError(f"got {len(w)} weights for {len(vectors)} query inputs")
    if not np.any(w > 0):
        raise ValueError("a query needs at least one input with a positive weight")
    return l2_normalize((w[:, None] * vectors).sum(0))
