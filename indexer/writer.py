"""Writer: one database transaction per batch (files, items, embeddings, revision bump), then the
in-memory FAISS indices and the token store; the batch types the mapper hands it.

Removed items leave every index at once: in place where FAISS can, else as tombstones
(:mod:`retrieval.tombstones`), so deleting a file from a large HNSW or ``…,RFlat`` index costs a small
file write, not a rebuild. :meth:`Writer.finish` compacts an index (rebuilds it from SQL, swapped in by
rename) once its tombstones pass :data:`~retrieval.tombstones.COMPACT_FRACTION` of it.

A batch the database refuses (a name or text it cannot store) is written file by file, and a file it
still refuses is recorded as that file's error, so one bad file never fails a run.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sqlalchemy.exc import DBAPIError, StatementError

from retrieval.encoders import Model
from retrieval.index import TombstonedIdError, VectorIndex, choose_factory, resolve_factory, write_manifest
from retrieval.tombstones import COMPACT_FRACTION

from . import repository as repo
from .catalog import Catalog
from .models import index_name
from .scanner import Candidate, Skipped

log = logging.getLogger(__name__)


@dataclass
class Unit:
    modality: str
    payload: Any
    start_s: float | None = None
    end_s: float | None = None
    content: str | None = None
    extra: dict | None = None
    vector: np.ndarray | None = None
    views: dict[str, np.ndarray] | None = None  # token features for the re-ranker (see retrieval.tokens)
    source: str = ""  # the file's path (an image's name words become a view)
    view: str | None = None  # video segments: "frame" (image tower) | "speech" (speech tower)
    thumbnail: bytes | None = None  # a video keyframe's JPEG

    @property
    def tower(self) -> str:
        """The tower that embeds this unit: a video keyframe is a picture, a speech window a recording."""
        return {"frame": "image", "speech": "audio"}.get(self.view or "", self.modality)

    @property
    def index(self) -> str:
        return index_name(self.modality, self.view)


@dataclass
class Decoded:
    candidate: Candidate
    known: repo.KnownFile | None
    sha256: str | None = None
    units: list[Unit] = field(default_factory=list)
    error: str | None = None
    unchanged: bool = False


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0  # new in this run (DESIGN's --json contract)
    known_errors: int = 0  # broken files under the given paths recorded by earlier runs, still broken
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    notices: list[str] = field(default_factory=list)  # what the model says about the archive (model_fit)

    def merge(self, other: "Summary") -> None:
        for k in ("added", "updated", "unchanged", "removed", "errors"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self, with_timings: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in
                               ("added", "updated", "unchanged", "removed", "errors", "known_errors")}
        if with_timings:
            out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        if self.notices:
            out["notices"] = list(self.notices)
        return out


# ---------------------------------------------------------------- writer
class Writer:
    """Commits batches to the database, then mirrors them into the FAISS indices."""

    def __init__(self, catalog: Catalog, model: Model, indices: dict[str, VectorIndex], factory: str | None) -> None:
        self.catalog = catalog
        self.model = model
        self.indices = indices
        self.factory = factory  # typed by the user (sticky; "auto" = by size), or None: keep the earlier choice
        self.revision = catalog.state()[2]
        self.needs_rebuild: set[str] = set()  # rebuilt from SQL by finish() (in memory until then: stale on disk)
        self.dirty: set[str] = set()  # modalities changed in memory since the last save
        self._before = self.revision  # the revision before the latest commit
        self.tokens = catalog.token_store()
        self._tokens_checked = False

    def _index(self, modality: str) -> VectorIndex:
        if modality not in self.indices:  # empty: exact until finish() builds what the requested factory needs
            self.indices[modality] = VectorIndex.build(
                np.zeros(0, np.int64), np.zeros((0, self.model.dim), np.float32),
                model=self.model.name, checksums=self.model.checksums, dim=self.model.dim,
                factory="Flat", modality=modality, revision=self.revision,
            )
            # "Flat" was the bootstrap's choice, not the user's: recording it made `auto` keep an exact index
            # at any size; record what was asked for instead
            self.indices[modality].manifest.set_user_factory(self.factory or "auto")
        return self.indices[modality]

    def write(self, batch: Sequence[Decoded], summary: Summary) -> None:
        """One transaction for the batch; if the database refuses it (a name or text it cannot store), each
        file alone, and a file that still fails is recorded as that file's error: never a run error."""
        try:
            part = Summary()
            added, removed, views = self._commit(batch, part)
        except (DBAPIError, StatementError, UnicodeError, ValueError) as exc:
            log.warning("batch refused by the database (%s); writing its files one by one", _short(exc))
            for d in batch:
                try:
                    one = Summary()
                    self._apply_committed(*self._commit([d], one))
                    summary.merge(one)
                except (DBAPIError, StatementError, UnicodeError, ValueError) as exc1:
                    self._record_refused(d, exc1, summary)
            return
        summary.merge(part)
        self._apply_committed(added, removed, views)

    def _commit(self, batch: Sequence[Decoded], summary: Summary):
        added: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        removed: list[tuple[int, str]] = []
        views: list[tuple[int, dict[str, np.ndarray]]] = []
        self._before = self.revision
        with self.catalog.session() as s:
            for d in batch:
                c = d.candidate
                if d.unchanged:
                    repo.touch_file(s, d.known.id, c.size, c.mtime_ns, c.dev, c.ino)
                    summary.unchanged += 1
                    continue
                if d.known is not None:
                    removed += repo.delete_items_of_files(s, [d.known.id])
                row = repo.upsert_file(
                    s, path=c.path, file_id=d.known.id if d.known else None, modality=c.modality,
                    size=c.size, mtime_ns=c.mtime_ns, sha256=d.sha256, error=d.error, dev=c.dev, inode=c.ino,
                )
                if d.error:
                    summary.errors += 1
                    continue
                items = [repo.NewItem(u.modality, u.vector, u.start_s, u.end_s, u.content, u.extra, u.view,
                                      u.thumbnail) for u in d.units]
                ids = repo.add_items(s, row.id, items)
                for item_id, u in zip(ids, d.units):
                    added[u.index][0].append(item_id)
                    added[u.index][1].append(u.vector)
                    if u.views:
                        views.append((item_id, u.views))
                if d.known is None:
                    summary.added += 1
                else:
                    summary.updated += 1
            self.revision = repo.bump_revision(s)
            s.commit()
        return added, removed, views

    def _apply_committed(self, added, removed, views) -> None:
        if views:  # after the commit: a killed run leaves ids without tokens, which the next add refills
            if not self._tokens_checked:
                self.tokens.check_model(self.model.name, self.model.dim)
                self._tokens_checked = True
            self.tokens.put_many(views)
        self.apply(added, removed)
        self._restamp_unchanged()

    def _restamp_unchanged(self) -> None:
        """Saved indices of modalities this commit did not touch stay fresh: web workers and searches keep
        them instead of rebuilding all three from SQL after every commit (only the changed one is stale
        until the next save)."""
        for modality in self.indices:
            if modality not in self.dirty and modality not in self.needs_rebuild:
                self.catalog.restamp_index(modality, self._before, self.revision)

    def _record_refused(self, d: Decoded, exc: BaseException, summary: Summary) -> None:
        c = d.candidate
        msg = (f"{c.path}: the catalog database refused this file ({_short(exc)}); it usually means the "
               f"file name or text holds bytes the database cannot store (NUL, bad UTF-8): rename or clean it")
        d.error, d.units = msg, []
        try:
            self._commit([d], summary)
        except Exception as exc2:  # even the error row cannot be stored: say so, keep going
            log.error("%s: not recorded in the catalog either (%s)", c.path, _short(exc2))
            summary.errors += 1

    def record_skipped(self, skipped: Sequence[Skipped], known: dict[str, repo.KnownFile],
                       summary: Summary) -> None:
        """Entries the scanner could not index become file errors (a known one with the same message is kept)."""
        todo = []
        for sk in skipped:
            k = known.get(sk.path)
            if k is not None and k.status == "error" and k.error == sk.reason:
                continue
            c = Candidate(sk.path, sk.modality or "", 0, 0)
            todo.append(Decoded(c, k, error=sk.reason))
        for d in todo:
            one = Summary()
            try:
                self._apply_committed(*self._commit([d], one))
                summary.merge(one)
            except Exception as exc:
                self._record_refused(d, exc, summary)

    def remove_files(self, file_ids: list[int]) -> int:
        if not file_ids:
            return 0
        self._before = self.revision
        with self.catalog.session() as s:
            removed = repo.delete_files(s, file_ids)
            self.revision = repo.bump_revision(s)
            s.commit()
        self.apply({}, removed)
        self._restamp_unchanged()
        return len(file_ids)

    def apply(self, added: dict[str, tuple[list[int], list[np.ndarray]]], removed: list[tuple[int, str]]) -> None:
        by_modality: dict[str, list[int]] = defaultdict(list)
        for item_id, modality in removed:
            by_modality[modality].append(item_id)
        if removed:
            self.tokens.delete_many(i for i, _ in removed)
        self.dirty.update(by_modality)
        self.dirty.update(m for m, (ids, _) in added.items() if ids)
        for modality, ids in by_modality.items():
            if modality in self.indices and modality not in self.needs_rebuild:
                self.indices[modality].remove(np.asarray(ids, np.int64))  # in place, or tombstones
        for modality, (ids, vecs) in added.items():
            if modality in self.needs_rebuild:
                continue
            try:
                self._index(modality).add(np.asarray(ids, np.int64), np.stack(vecs))
            except TombstonedIdError as exc:  # an id came back (ids are never reused): SQL has the truth
                log.error("%s; rebuilding the %s index from the catalog", exc, modality)
                self.needs_rebuild.add(modality)

    def save(self) -> None:
        """Write the indices that changed since they were saved; an unchanged one whose saved file is fresh keeps
        its file (only its manifest is rewritten if it differs): rewriting it would give readers a new file to
        load and map for the same vectors, and cost a full write of a large index."""
        saved = {m: i for m, i in self.indices.items() if m not in self.needs_rebuild}
        changed = {m: i for m, i in saved.items()
                   if m in self.dirty or not self.catalog.index_is_fresh(m, self.revision)}
        self.catalog.save_indices(changed, self.revision)
        for modality, index in saved.items():
            if modality not in changed:
                index.manifest.revision = self.revision
                index.manifest.count = index.count
                if self.catalog.saved_manifest(modality) != index.manifest:
                    write_manifest(self.catalog.index_dir(modality), index.manifest)
        self.dirty -= set(saved)

    def finish(self) -> None:
        """Rebuild indices that need it (a factory change, an ``auto`` index whose size now calls for another
        structure, tombstones past ``COMPACT_FRACTION``: compaction), then save. A rebuild is written by temp
        file + rename: readers keep searching the old file (with its tombstones) until they reload."""
        model_name, checksums, _ = self.catalog.state()
        for modality, index in list(self.indices.items()):
            requested = choose_factory(self.factory, index.manifest)
            desired = resolve_factory(requested, index.count, index.manifest.dim)
            compact = index.dead_fraction > COMPACT_FRACTION
            if compact:
                log.info("compacting the %s index: %.0f%% of its vectors are deleted", modality,
                         100 * index.dead_fraction)
            if modality in self.needs_rebuild or compact or not _same_factory(desired, index.manifest.factory):
                self.indices[modality] = self.catalog.rebuild_index(
                    modality, model_name, checksums, self.revision, factory=requested, dim=self.model.dim
                )
            else:
                index.manifest.set_user_factory(requested)
        self.needs_rebuild.clear()
        self.save()


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _same_factory(desired: str, actual: str) -> bool:
    """Whether ``actual`` was built from ``desired`` (``{n}``: any list count, so a growing IVF index is not rebuilt
    for its count alone; a prefix test took a typed ``IVF{n},Flat`` for a built ``IVF4096,SQ8``)."""
    return re.fullmatch(re.escape(desired).replace(re.escape("{n}"), r"\d+"), actual) is not None
