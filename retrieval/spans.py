"""Where in a recording a hit is: pick the transcript segment closest to the query.

An audio item is a window of up to 30 s; its ASR segments (with times) are kept
as metadata. Embedding those few segment texts with the model's text tower and
taking the one nearest the query vector narrows a hit to the sentence that
matched.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoders import Model


def best_span(model: Model, query: np.ndarray, segments: Sequence[dict]) -> dict | None:
    """The segment (``{"start", "end", "text"}``) most similar to ``query``, or None."""
    texts = [s.get("text", "").strip() for s in segments]
    keep = [i for i, t in enumerate(texts) if t]
    if not keep or "text" not in model.modalities:
        return None
    vectors = model.encode("text", [texts[i] for i in keep])
    best = keep[int(np.argmax(vectors @ query))]
    seg = segments[best]
    return {"start": float(seg["start"]), "end": float(seg["end"]), "text": texts[best]}
