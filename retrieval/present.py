"""Hits -> what a user sees: paths, note snippets, the sentence of a long recording, marked words.

Used by :mod:`retrieval.service` for every front end, so the page, the API and the
command line show the same excerpt: a long recording's hit is narrowed to the ASR
segment nearest the query (segment texts are embedded once per item and kept:
an item's segments never change, a re-indexed file gets new ids), and with
keyword search to a sentence holding a matched word when the nearest one has none.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .encoders import Model
from .ports import MetadataPort
from .query import Hit, Input

SPAN_CACHE_SIZE = 4096  # audio items whose segment vectors are kept (a few KB each)
WORD_RE = re.compile(r"\w+", re.UNICODE)
NAME_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)  # file names: "_" separates words too
# words too common to mark in a snippet (they still count for the query itself)
STOPWORDS = frozenset("""a an and are as at be but by can did do does for from had has have her his how i in is it its
me my not of on or our she so than that the their them then there these they this to too was we were what when where
which who why will with you your""".split())


def _stem(word: str) -> str:
    """A crude English stem, enough to mark "dogs" for "dog" and "starts" for "start" (not "dogma")."""
    for suffix in ("ing", "ers", "ed", "es", "er", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def mark_words(text: str, words: Sequence[str], pattern: re.Pattern = WORD_RE) -> list[list[int]]:
    """[start, end) character ranges of ``text`` holding a query word (3+ letters, no stopwords, any case or plural).

    ``pattern`` finds the words of ``text`` (:data:`NAME_WORD_RE` for file names).
    """
    wanted = {_stem(w.lower()) for w in words if len(w) > 2 and w.lower() not in STOPWORDS}
    if not wanted:
        return []
    return [[m.start(), m.end()] for m in pattern.finditer(text) if _stem(m.group(0).lower()) in wanted]


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


def query_words(inputs: Sequence[Input], infos: Sequence[dict]) -> list[str]:
    """The words of the positive typed inputs and of the positive spoken inputs' transcripts."""
    words = [w for q in inputs if q.kind == "text" and q.weight > 0 for w in WORD_RE.findall(q.value)]
    return words + [w for i in infos if i["weight"] > 0 for w in WORD_RE.findall(i.get("transcript", ""))]


class Presenter:
    """Joins hits with their metadata; keeps segment vectors of audio items (thread-safe)."""

    def __init__(self, model: Model, text_lock: threading.Lock) -> None:
        self.model = model
        self.text_lock = text_lock
        self._spans: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def markable(words: Sequence[str]) -> set[str]:
        return {w.lower() for w in words if len(w) > 2 and w.lower() not in STOPWORDS}

    def present(self, hits: list[Hit], port: MetadataPort, query: np.ndarray, words: Sequence[str],
                keywords: str = "") -> list[Hit]:
        """The hits that still exist, filled in; ``keywords``: the hybrid query's typed words."""
        meta = port.items([h.id for h in hits])
        hits = [h for h in hits if h.id in meta]  # removed between the index snapshot and this query
        spans = self._best_spans(query, [meta[h.id] for h in hits])
        for h, span in zip(hits, spans):
            m = meta[h.id]
            h.path = m["path"]
            h.name = os.path.basename(m["path"])  # stored paths are absolute POSIX paths; no Path() per hit
            extra = m.get("extra") or {}
            if h.modality == "image":
                h.width, h.height = extra.get("width"), extra.get("height")
            if m.get("content"):
                h.text = text_snippet(m["content"], words) if h.modality == "text" else m["content"]
            if m.get("start") is not None:
                h.start, h.end = m["start"], m["end"]
                if span:
                    h.window = [m["start"], m["end"]]
                    h.start, h.end, h.text = span["start"], span["end"], span["text"]
            if h.text:
                h.marks = mark_words(h.text, words)
        if keywords:
            self._mark_keywords(hits, port, keywords, meta)
        return hits

    @staticmethod
    def _mark_keywords(hits: list[Hit], port: MetadataPort, words: str, meta: dict[int, dict]) -> None:
        """Hybrid hits: the query words each matched, marks in the file name, and a long recording's
        excerpt moved to a sentence holding a matched word when it shows none."""
        matched = port.keyword_matches([h.id for h in hits], words)
        for h in hits:
            h.matched = terms = matched.get(h.id, [])
            h.name_marks = mark_words(h.name or "", terms, NAME_WORD_RE)
            if not (h.window and terms and not h.marks):
                continue
            segments = [seg for seg in (meta[h.id].get("extra") or {}).get("segments") or []
                        if seg.get("text", "").strip()]
            if segments:
                best = max(segments, key=lambda seg: len(mark_words(seg["text"].strip(), terms)))
                text = best["text"].strip()
                if mark_words(text, terms):
                    h.start, h.end, h.text = float(best["start"]), float(best["end"]), text
                    h.marks = mark_words(text, terms)

    def _best_spans(self, query: np.ndarray, metas: Sequence[dict]) -> list[dict | None]:
        """Per audio hit with several ASR segments, the segment nearest the query (one batched encoding)."""
        out: list[dict | None] = [None] * len(metas)
        if "text" not in self.model.modalities:
            return out
        per_hit: dict[int, tuple[list[dict], np.ndarray | None]] = {}
        missing: list[tuple[int, list[str]]] = []
        for i, m in enumerate(metas):
            segments = [seg for seg in (m.get("extra") or {}).get("segments") or [] if seg.get("text", "").strip()]
            if m.get("modality") != "audio" or len(segments) < 2:
                continue
            with self._lock:
                vecs = self._spans.get(m["id"])
                if vecs is not None:
                    self._spans.move_to_end(m["id"])
            per_hit[i] = (segments, vecs)
            if vecs is None:
                missing.append((i, [seg["text"].strip() for seg in segments]))
        if missing:
            with self.text_lock:
                encoded = self.model.encode("text", [t for _, texts in missing for t in texts])
            pos = 0
            for i, texts in missing:
                vecs = encoded[pos:pos + len(texts)]
                pos += len(texts)
                per_hit[i] = (per_hit[i][0], vecs)
                with self._lock:
                    self._spans[metas[i]["id"]] = vecs
                    while len(self._spans) > SPAN_CACHE_SIZE:
                        self._spans.popitem(last=False)
        for i, (segments, vecs) in per_hit.items():
            seg = segments[int(np.argmax(vecs @ query))]
            out[i] = {"start": float(seg["start"]), "end": float(seg["end"]), "text": seg["text"].strip()}
        return out
