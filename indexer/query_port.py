"""The catalog side of the query API: :class:`retrieval.ports.MetadataPort` over SQL and the token store.

Each call opens a short session (several web threads share one port); the
query API (:mod:`retrieval.service`) never sees SQLAlchemy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from retrieval.ports import KeywordIndexMissing
from retrieval.tokens import Views

from . import repository as repo
from .catalog import Catalog


DF_KEPT = 50_000  # term counts kept per catalog revision (~100 B each)


class CatalogPort:
    """Items, stored vectors, token views and keyword hits of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.store = catalog.token_store()
        self._total: tuple[int, int] | None = None  # (catalog revision, item count): counted once per revision
        self._df: tuple[int, OrderedDict[str, int]] = (-1, OrderedDict())  # per revision: term -> items holding it
        self._lock = threading.Lock()  # several web threads share one port

    def items(self, ids: Sequence[int]) -> dict[int, dict]:
        if not ids:
            return {}
        with self.catalog.engine.connect() as conn:
            return repo.item_hits(conn, list(ids))

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        with self.catalog.session() as s:
            return repo.item_embeddings(s, list(ids))

    def tokens(self, ids: Sequence[int]) -> dict[int, Views]:
        return self.store.get_many(ids)

    def keyword_terms(self, words: str) -> list[str]:
        return repo.keyword_terms(words)

    def keyword_search(self, words: str, modality: str | None, limit: int) -> list[tuple[int, float]]:
        with self.catalog.session() as s:
            try:
                revision = self._revision(s)
                return repo.keyword_search(s, words, modality, limit, total_items=self._item_total(s, revision),
                                           df=self._term_counts(s, revision, repo.keyword_terms(words)))
            except SQLAlchemyError:
                if not inspect(self.catalog.engine).has_table("items_fts"):
                    raise KeywordIndexMissing(
                        "this catalog was built before keyword search existed; run `python -m indexer add PATH "
                        f"--data-dir {self.catalog.data_dir}` once (it upgrades the database), then search again"
                    ) from None
                raise

    @staticmethod
    def _revision(s) -> int:  # noqa: ANN001 - a SQLAlchemy session
        state = repo.read_state(s)
        return state[1] if state else 0

    def _item_total(self, s, revision: int) -> int | None:  # noqa: ANN001 - a SQLAlchemy session
        """The item count of the catalog's ``revision`` (SQLite's bm25() needs none)."""
        if s.get_bind().dialect.name != "postgresql":
            return None
        kept = self._total
        if kept is None or kept[0] != revision:
            kept = self._total = (revision, repo.item_total(s))
        return kept[1]

    def _term_counts(self, s, revision: int, terms: list[str]) -> dict[str, int]:  # noqa: ANN001
        """:func:`indexer.repository.term_counts` of ``terms``, kept per revision (at most ``DF_KEPT`` terms, the
        most recently used): words recur in queries, and a common one's bounded count cost ~65 ms on Postgres."""
        with self._lock:
            if self._df[0] != revision:
                self._df = (revision, OrderedDict())
            kept = self._df[1]
            known = {t: kept[t] for t in terms if t in kept}
            for t in known:
                kept.move_to_end(t)
        missing = [t for t in terms if t not in known]
        if missing:
            counted = repo.term_counts(s, missing)
            with self._lock:
                if self._df[0] == revision:
                    self._df[1].update(counted)
                    while len(self._df[1]) > DF_KEPT:
                        self._df[1].popitem(last=False)
            known.update(counted)
        return known

    def keyword_matches(self, ids: Sequence[int], words: str) -> dict[int, list[str]]:
        with self.catalog.session() as s:
            return repo.keyword_matches(s, list(ids), words)

    def file_segments(self, file_ids: Sequence[int]) -> dict[int, list[dict]]:
        with self.catalog.session() as s:
            return repo.file_segments(s, list(file_ids))

    def photo_count(self) -> int:
        from .notices import photo_count

        with self.catalog.session() as s:
            return photo_count(s)
