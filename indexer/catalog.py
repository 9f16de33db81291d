"""A data directory: its database, its FAISS indices (one per modality) and its lock.

The database is the source of truth; the token-feature store (``tokens/``,
re-ranking) is written beside it by the indexer. Each index's manifest records the database
revision it reflects; an index whose revision differs (an interrupted run, a
deleted file) is rebuilt from the stored embeddings, so index and database
always agree after :meth:`Catalog.fresh_indices`.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from retrieval.index import INDEX_NAME, INDEX_NAMES, IndexManifest, VectorIndex, choose_factory, read_manifest, write_manifest
from retrieval.index import build_from_batches
from retrieval.tokens import TokenStore

from . import repository as repo
from .db import open_sessionmaker

log = logging.getLogger(__name__)


class CatalogBusyError(RuntimeError):
    """Another indexer run holds this data directory."""


class Catalog:
    def __init__(self, data_dir: Path, migrate: bool = True, database_url: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.engine, self.sessions = open_sessionmaker(self.data_dir, migrate=migrate, url=database_url)
        self._lock_fd: int | None = None

    # ---- locking -----------------------------------------------------
    def lock(self) -> None:
        """Exclusive writer lock on the data directory (released by the OS on kill)."""
        fd = os.open(self.data_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CatalogBusyError(
                f"another indexer run is writing to {self.data_dir}; wait for it to finish"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        self.unlock()
        self.engine.dispose()

    def session(self) -> Session:
        return self.sessions()

    # ---- token features (re-ranking) ----------------------------------
    def token_store(self) -> TokenStore:
        return TokenStore(self.data_dir / "tokens")

    # ---- indices -----------------------------------------------------
    def index_dir(self, modality: str) -> Path:
        return self.data_dir / "index" / modality

    def state(self) -> tuple[str | None, dict[str, str], int]:
        with self.session() as s:
            st = repo.get_state(s)
            out = (st.model, dict(st.checksums or {}), int(st.revision))
            s.commit()
        return out

    def index_is_fresh(self, modality: str, revision: int) -> bool:
        try:
            manifest = read_manifest(self.index_dir(modality))
        except (FileNotFoundError, ValueError, TypeError):
            return False
        return manifest.revision == revision and (self.index_dir(modality) / "index.faiss").is_file()

    def fresh_indices(self, factory: str | None = None, force: bool = False, save: bool = True,
                      load: Callable[[str], VectorIndex] | None = None, mmap: bool = False) -> dict[str, VectorIndex]:
        """Load every modality's index, rebuilding stale ones from the DB with ``factory`` (None: the one the
        user chose earlier, else by size; see :meth:`rebuild_index`) and saving them unless ``save`` is
        False: readers that do not hold the writer lock, like the web app and a search, rebuild in memory).

        ``load(modality)`` reads a fresh saved index (default :meth:`VectorIndex.load` of its folder); a
        long-running reader passes one that keeps the index it already has when the file did not change.
        ``mmap``: saved indices are memory-mapped, read-only (:meth:`VectorIndex.load`): for readers only; the
        indexer, which adds to what it loads, keeps the default."""
        model, checksums, revision = self.state()
        if model is None:
            return {}
        out: dict[str, VectorIndex] = {}
        with self.session() as s:
            counts = repo.item_counts(s)
        for modality in INDEX_NAMES:
            if counts.get(modality, 0) == 0 and not self.index_dir(modality).exists():
                continue
            if not force and self.index_is_fresh(modality, revision):
                try:
                    out[modality] = (load(modality) if load else
                                     VectorIndex.load(self.index_dir(modality), mmap=mmap))
                    continue
                except (OSError, RuntimeError, ValueError) as exc:  # replaced while we read it
                    log.warning("reading the %s index failed (%s); rebuilding it", modality, exc)
            log.warning("index for %s is out of date (indexer running or interrupted?); rebuilding it from the "
                        "stored embeddings%s", modality, "" if save else " in memory")
            out[modality] = self.rebuild_index(modality, model, checksums, revision, factory, save=save)
        return out

    def saved_manifest(self, modality: str) -> IndexManifest | None:
        """The manifest of the saved index of ``modality``, or None (missing or unreadable)."""
        try:
            return read_manifest(self.index_dir(modality))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def rebuild_index(
        self, modality: str, model: str, checksums: dict[str, str], revision: int, factory: str | None = None,
        dim: int | None = None, save: bool = True,
    ) -> VectorIndex:
        """Rebuild one modality's index from the stored embeddings.

        ``factory``: a string the user typed (``"auto"`` = by size, forgetting an earlier choice), or None
        to keep the choice recorded in the saved manifest (a typed factory is sticky; ``auto`` is re-chosen
        by the collection's size on every rebuild, so a growing collection moves to the fast index).

        Streams (:func:`retrieval.index.build_from_batches`): the float32 vectors are never all in memory
        at once; a trained index is built from a seeded sample of pass one and filled batch by batch in pass two."""
        factory = choose_factory(factory, self.saved_manifest(modality))
        with self.session() as s:
            first = repo.iter_embeddings(s, modality)
            head = next(first, None)  # the data's dimension wins over the one asked for, as before
            if head is not None:
                dim = head[1].shape[1]
            else:
                try:
                    dim = dim or read_manifest(self.index_dir(modality)).dim
                except (FileNotFoundError, ValueError, TypeError):
                    dim = dim or 1
            last: int | None = None
            scans = 0

            def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                """Pass one continues the scan begun above; pass two (trained factories above ONE_PASS_ROWS)
                reads again up to the last id pass one saw, so rows committed meanwhile are not counted twice."""
                nonlocal last, scans
                scans += 1
                if scans == 1:
                    for ids, vecs in itertools.chain([head] if head is not None else [], first):
                        last = int(ids[-1])
                        yield ids, vecs
                elif last is not None:
                    yield from repo.iter_embeddings(s, modality, until=last)

            index = build_from_batches(batches, model=model, checksums=checksums, dim=dim, factory=factory,
                                       modality=modality, revision=revision)
        if save:
            index.save(self.index_dir(modality))
        return index

    def restamp_index(self, modality: str, old: int, new: int) -> bool:
        """Mark a saved index that was fresh at revision ``old`` as fresh at ``new`` (the caller, holding the
        writer lock, knows the commits between them did not touch this modality): readers keep it instead of
        rebuilding it from SQL. Only the manifest is rewritten (atomically); False if it was not fresh."""
        folder = self.index_dir(modality)
        try:
            manifest = read_manifest(folder)
        except (FileNotFoundError, ValueError, TypeError):
            return False
        if manifest.revision != old or not (folder / INDEX_NAME).is_file():
            return False
        manifest.revision = new
        write_manifest(folder, manifest)
        return True

    def save_indices(self, indices: dict[str, VectorIndex], revision: int) -> None:
        for modality, index in indices.items():
            index.manifest.revision = revision
            index.save(self.index_dir(modality))
