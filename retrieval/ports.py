"""What the query API needs from a catalog, as an interface (the indexer's catalog implements it).

Keeping this a :class:`typing.Protocol` lets :mod:`retrieval.service` rank and
present hits without importing SQL: ``indexer.query_port.CatalogPort`` is the
implementation over SQLAlchemy and the token store; a test or another store
can provide its own.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .tokens import Views


class MetadataPort(Protocol):
    def items(self, ids: Sequence[int]) -> dict[int, dict]:
        """Per existing id: ``{"id", "path", "modality", "start", "end", "content", "extra"}`` (extra holds
        ``segments`` for audio, ``width``/``height`` for images; ``view`` and ``file_id`` for video segments).
        Unknown ids are left out."""

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored embeddings of the ids that exist."""

    def tokens(self, ids: Sequence[int]) -> dict[int, Views]:
        """Stored token views (re-ranking) of the ids that have them."""

    def keyword_terms(self, words: str) -> list[str]:
        """The terms full-text search would look for in ``words`` (empty: nothing to match)."""

    def keyword_search(self, words: str, modality: str | None, limit: int) -> list[tuple[int, float]]:
        """Best ``limit`` (id, BM25-like score) matches of ``words``, restricted to ``modality`` unless None.

        Raises :class:`KeywordIndexMissing` when the catalog has no full-text index."""

    def keyword_matches(self, ids: Sequence[int], words: str) -> dict[int, list[str]]:
        """Per id, which of the query's terms its text or file name holds."""

    def file_segments(self, file_ids: Sequence[int]) -> dict[int, list[dict]]:
        """Per video file id (``items()`` gives ``file_id``): its segments ``{"id", "view", "start", "end",
        "spans"}`` (``spans``: a speech window's ASR sentences ``[start, end]``)."""

    def photo_count(self) -> int:
        """How many indexed pictures looked photographic when decoded (``retrieval.model_fit``)."""


class KeywordIndexMissing(RuntimeError):
    """The catalog predates keyword search; the message says how to upgrade it."""
