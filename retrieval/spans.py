"""Where in an item a hit is: the transcript segment or note excerpt that matched.

An audio item is a window of up to 30 s; its ASR segments (with times) are kept
as metadata. Embedding those few segment texts with the model's text tower and
taking the one nearest the query vector narrows a hit to the sentence that
matched.
"""

from __future__ import annotations

import re
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


def text_snippet(content: str, query_words: Sequence[str], width: int = 200) -> str:
    """The ``width``-character window of ``content`` holding the most query words (start if none)."""
    if len(content) <= width:
        return content
    words = {w.lower() for w in query_words if len(w) > 2}
    lowered = content.lower()
    positions = [m.start() for w in words for m in re.finditer(re.escape(w), lowered)]
    if not positions:
        return content[:width]
    best = max(positions, key=lambda p: sum(p <= q < p + width for q in positions))
    start = max(0, min(best - width // 4, len(content) - width))
    return ("…" if start else "") + content[start:start + width] + ("…" if start + width < len(content) else "")
