"""The query API's values: a :class:`Query` goes in, a :class:`Result` of ranked :class:`Hit` s comes out.

Every front end (``python -m retrieval search``, ``retrieval eval``, ``POST
/api/search``) builds a :class:`Query` and hands it to
:meth:`retrieval.service.SearchService.search`; they only parse and serialise.

An input is one of:

- ``text``: words (``value`` is the string);
- ``image`` / ``audio``: ``value`` is a path to a file (decoded by
  :mod:`retrieval.decoders` when needed) or what the decoder returns (a PIL image,
  16 kHz float32 samples) for uploads the front end decoded itself;
- ``item``: an indexed item id (or a tuple of ids, the parts of one file: their
  mean), looked up, never re-encoded; the items themselves are left out of the hits;
- ``vector``: a raw query vector in the model's space (``modality`` says what it
  was encoded from, for score calibration; default text).

``weight`` < 0 means "not this" (see :mod:`retrieval.fusion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .encoders import MODALITIES
from .fusion import MAX_WEIGHT

INPUT_KINDS = ("text", "image", "audio", "item", "vector")
TARGETS = (*MODALITIES, "video", "all")  # video: moments of videos (retrieval.moments)
DEFAULT_RERANK_K = 100


class QueryError(ValueError):
    """A query that cannot be answered as asked; ``code`` names the kind, the message says how to fix it."""

    def __init__(self, message: str, code: str = "bad_query", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Input:
    """One query input (see the module docstring for the kinds)."""

    kind: str
    value: Any
    weight: float = 1.0
    key: str | None = None  # identity for the query-vector cache (text, an upload's sha256); None = not cached
    label: str = ""
    modality: str | None = None  # vector inputs: the modality the vector was encoded from

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise QueryError(f"unknown query input kind '{self.kind}'; use one of {', '.join(INPUT_KINDS)}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w == 0 \
                or abs(w) > MAX_WEIGHT:
            raise QueryError(f"an input's weight must be a non-zero number between -{MAX_WEIGHT:g} and "
                             f"{MAX_WEIGHT:g} (negative = \"not this\"), got {str(w)[:40]!r}")

    @property
    def item_ids(self) -> tuple[int, ...]:
        if self.kind != "item":
            return ()
        return tuple(int(i) for i in self.value) if isinstance(self.value, (tuple, list)) else (int(self.value),)


@dataclass(frozen=True)
class Query:
    """What to look for and how: inputs (one fused query), target modality, the page, options."""

    inputs: tuple[Input, ...]
    target: str = "all"
    k: int = 10
    offset: int = 0
    hybrid: bool = False  # also match the typed words by full-text search (reciprocal rank fusion)
    rerank: bool = True  # re-rank the first-stage top ``rerank_k`` (single-input queries of a trained pair)
    rerank_k: int = DEFAULT_RERANK_K
    rerank_weight: float | None = None  # scale of the re-ranker's correction; None = as trained, 0 = off
    details: bool = True  # join hits with metadata (paths, snippets, spans); eval ranks without them
    details_top: int | None = None  # with details: only the first N hits of the page (None: all); the rest are ids
    dedup: float | None = None  # drop a hit whose stored vector has cosine >= this with a better hit of its modality
    span_top: int | None = None  # narrow long recordings to the matching sentence for the first N hits (None: all)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs:
            raise QueryError("the query is empty: give some words, an image or an audio file, an item or a vector",
                             "empty_query")
        if not any(q.weight > 0 for q in self.inputs):
            raise QueryError("every input is \"not this\" (negative weight); add at least one input to look for",
                             "no_positive_input")
        if self.target not in TARGETS:
            raise QueryError(f"unknown target '{str(self.target)[:40]}'; use one of {', '.join(TARGETS)}")
        if self.details_top is not None and (isinstance(self.details_top, bool) or not isinstance(self.details_top, int)
                                             or self.details_top < 0):
            raise QueryError(f"'details_top' must be a whole number >= 0, got {str(self.details_top)[:40]!r}")
        if self.dedup is not None and (isinstance(self.dedup, bool) or not isinstance(self.dedup, (int, float))
                                       or not 0 < self.dedup <= 1):
            raise QueryError(f"'dedup' must be a cosine in (0, 1], got {str(self.dedup)[:40]!r}")
        for name, lo in (("k", 1), ("offset", 0), ("rerank_k", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise QueryError(f"'{name}' must be a whole number >= {lo}, got {str(value)[:40]!r}")
        if self.rerank_weight is not None and not math.isfinite(self.rerank_weight):
            raise QueryError("the re-rank weight must be a finite number (0 = off)")

    @property
    def single(self) -> bool:
        """One input and no "not this": the shape the re-ranker was trained on."""
        return len(self.inputs) == 1


@dataclass
class Hit:
    """One ranked result. ``score`` is the calibrated relevance in [0, 1] (comparable across target
    modalities and query kinds); ``similarity`` the first-stage (or re-ranked) score it came from."""

    id: int
    modality: str
    score: float
    similarity: float = 0.0
    rank: int = 0
    path: str | None = None
    name: str | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    window: list[float] | None = None  # a long recording's whole window when start/end were narrowed
    width: int | None = None
    height: int | None = None
    marks: list[list[int]] | None = None  # [start, end) of query words in ``text``
    ranks: dict[str, int | None] | None = None  # hybrid: rank in the vector and in the keyword list
    matched: list[str] | None = None  # hybrid: query words the item's text or name holds
    name_marks: list[list[int]] | None = None
    view: str | None = None  # video hits: what matched at start..end: "frame" | "speech" | "both"
    stage: str = "first"  # "rerank" when the re-ranker corrected ``similarity`` (not serialised)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "rank": self.rank, "modality": self.modality,
                               "score": round(self.score, 4), "similarity": round(self.similarity, 4),
                               "path": self.path, "name": self.name}
        for key in ("width", "height"):
            if self.modality == "image":
                out[key] = getattr(self, key)
        for key in ("text", "start", "end", "window", "marks", "ranks", "matched", "name_marks", "view"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass
class Result:
    """A page of hits and what the engine did to get them."""

    hits: list[Hit]
    has_more: bool
    offset: int
    k: int
    target: str
    inputs: list[dict[str, Any]] = field(default_factory=list)  # per input: kind, label, weight, transcript
    words: list[str] = field(default_factory=list)  # query words worth marking in snippets
    model: str | None = None
    revision: int = 0
    rerank: dict[str, Any] = field(default_factory=lambda: {"applied": False, "k": 0})
    hybrid: dict[str, Any] | None = None
    calibrated: bool = False  # scores are calibrated relevances (False: clipped cosine, no calibration file)
    timings_ms: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # said once per result: e.g. photographs in a pictogram index
