"""The per-process state of one web worker: the catalog, the current snapshot of indices, the query service.

One :class:`Engine` per process holds the catalog (SQL) and a :class:`Snapshot`
of one catalog revision: its FAISS indices and a
:class:`~retrieval.service.SearchService` over them (the model and what queries
share are created once per process, :func:`indexer.service.resources_for`). It
only reads the data directory: a stale index (an indexer run in progress, or
one that was killed) is rebuilt in memory from the stored embeddings, never
written back, so several worker processes can serve one data directory beside
a running indexer.

After a new indexer run (the catalog's revision changes) the indices are
reloaded on the next request, per modality: a saved index whose file did not
change keeps its loaded object, a fresh saved one is loaded, and only one that
lags the catalog is rebuilt (``Engine.reloads`` counts each); requests in flight
keep the snapshot they started with. Saved indices are memory-mapped read-only
(:meth:`VectorIndex.load` with ``mmap=True``): the workers of one server share the file's pages instead of
each holding a copy; the indexer replaces index files by rename, so a snapshot still in use keeps reading
the old file's pages while the next reload maps the new one. An indexer run that only deleted items from an
index that keeps tombstones (HNSW, IVF, ``…,RFlat``: :mod:`retrieval.tombstones`) rewrites only its
``tombstones.npy``: the reload keeps the mapped index and takes the new tombstones. Searching itself — encoding, fusion, re-ranking, calibration, hybrid
keywords, excerpts — is the library's query API (:mod:`retrieval.service`);
this module only hands it a snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.db import configured_database_url, schema_versions
from indexer.service import service_for
from retrieval import decoders
from retrieval.encoders import Model
from retrieval.index import INDEX_NAME, TOMBSTONES_NAME, VectorIndex, read_manifest
from retrieval.tombstones import file_key
from retrieval.present import mark_words  # noqa: F401  (re-exported: the page's word marking)
from retrieval.service import SearchService

from .errors import ApiError

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What one request searches: the query service over one catalog revision's indices."""

    revision: int
    model_name: str | None
    service: SearchService | None
    counts: dict[str, int] = field(default_factory=dict)


class NotIndexedError(ApiError):
    status = 503
    code = "not_indexed"


class CatalogOutdatedError(ApiError):
    status = 503
    code = "catalog_outdated"


class Engine:
    def __init__(self, data_dir: Path, database_url: str | None = None, reload_check_s: float = 2.0) -> None:
        self.data_dir = Path(data_dir)
        # as the indexer reads it (indexer.db.database_url): the config, else $DATABASE_URL, else the SQLite file;
        # without this a catalog on Postgres named only by $DATABASE_URL looked like "nothing indexed yet"
        self.database_url = database_url or configured_database_url()
        self.reload_check_s = reload_check_s
        self._catalog: Catalog | None = None
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0
        self._reload_lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self.reloads = {"loaded": 0, "kept": 0, "rebuilt": 0}  # per modality, since the process started
        self._indices = _IndexFiles(self.reloads)  # its .tombstone_reloads: kept ones given new tombstones
        self._kept: dict[str, tuple[int, Any]] = {}  # name -> (catalog revision, value)

    # ---- catalog -------------------------------------------------------
    def catalog(self) -> Catalog | None:
        """The catalog, or None while the data directory does not exist (nothing indexed yet)."""
        if self._catalog is None:
            if self.database_url is None and not _has_database(self.data_dir):
                return None
            with self._catalog_lock:
                if self._catalog is None:
                    # never migrate from the web app: the indexer owns the schema
                    catalog = Catalog(self.data_dir, migrate=False, database_url=self.database_url)
                    self._check_schema(catalog)
                    self._catalog = catalog
        return self._catalog

    def _check_schema(self, catalog: Catalog) -> None:
        """A catalog made by an older version lacks tables or columns the queries read: say so, with the fix,
        instead of failing each query on a missing column. (An empty database file has no version yet.)"""
        current, head = schema_versions(catalog.engine)
        if current is not None and current != head and current < head:
            catalog.engine.dispose()
            raise CatalogOutdatedError(
                f"the catalog in {self.data_dir} was made by an older version of the indexer (schema {current}, "
                f"this version reads {head}); run `python -m indexer add PATH --data-dir {self.data_dir}` once "
                "(it upgrades the database and keeps what is indexed), then reload")

    def session(self):
        cat = self.catalog()
        if cat is None:
            raise self.not_indexed()
        return cat.session()

    def not_indexed(self) -> NotIndexedError:
        return NotIndexedError(
            f"nothing is indexed in {self.data_dir} yet; run `python -m indexer add PATH --data-dir {self.data_dir}` "
            "and reload this page"
        )

    def read_state(self) -> tuple[str | None, int] | None:
        cat = self.catalog()
        if cat is None:
            return None
        try:
            with cat.session() as s:
                return repo.read_state(s)
        except SQLAlchemyError:
            if not inspect(cat.engine).has_table("state"):
                return None  # an empty database file: the indexer has not run here
            raise

    def kept_for_revision(self, name: str, revision: int, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per catalog revision (every indexer write bumps it): counts over the whole
        catalog are kept, not counted on every request. Two threads may both compute after a change."""
        kept = self._kept.get(name)
        if kept is not None and kept[0] == revision:
            return kept[1]
        value = compute()
        self._kept[name] = (revision, value)
        return value

    # ---- indices -------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The current indices and model, reloaded when the catalog's revision moved."""
        now = time.monotonic()
        snap = self._snapshot
        if snap is not None and now - self._checked_at < self.reload_check_s:
            return snap
        with self._reload_lock:
            snap = self._snapshot
            if snap is not None and time.monotonic() - self._checked_at < self.reload_check_s:
                return snap
            state = self.read_state()
            model_name, revision = state if state else (None, 0)
            if snap is None or snap.revision != revision or snap.model_name != model_name:
                snap = self._load(model_name, revision)
                self._snapshot = snap
            self._checked_at = time.monotonic()
            return snap

    def _load(self, model_name: str | None, revision: int) -> Snapshot:
        if model_name is None:
            return Snapshot(revision, None, None)
        cat = self.catalog()
        assert cat is not None
        with cat.session() as s:
            counts = repo.item_counts(s)
            s.rollback()
        loaded: set[int] = set()

        def load(modality: str) -> VectorIndex:
            index = self._indices.load(cat.index_dir(modality), modality)
            loaded.add(id(index))
            return index

        indices = cat.fresh_indices(save=False, load=load)
        self.reloads["rebuilt"] += sum(id(i) not in loaded for i in indices.values())
        indices = {m: i for m, i in indices.items() if counts.get(m, 0) > 0}
        if not indices:
            return Snapshot(revision, model_name, None, counts)
        service = service_for(cat, indices, revision)
        log.info("loaded revision %d (%s) of %s: %s", revision, model_name, self.data_dir, counts)
        return Snapshot(revision, model_name, service, counts)

    def service(self) -> SearchService:
        """The query service of the current snapshot (503 while nothing is indexed)."""
        snap = self.snapshot()
        if snap.service is None:
            raise self.not_indexed()
        return snap.service

    def model(self) -> Model | None:
        snap = self.snapshot()
        return snap.service.model if snap.service else None

    def warm_up(self) -> None:
        """Load indices and the text tower now, so the first query is not the slow one."""
        snap = self.snapshot()
        if snap.service is not None and "text" in snap.service.model.modalities:
            with snap.service.resources.locks["text"]:
                snap.service.model.encode("text", ["warm up"])


class _IndexFiles:
    """Saved indices this process has loaded (memory-mapped), by modality: a file that did not change keeps its
    loaded index object; a new one is loaded. A file's identity includes its inode: a save is a rename onto the
    path, so a new file is never mistaken for the one already mapped. A new file with the same bytes keeps an
    index that is *not* mapped (a fallback read: reloading it would copy the file again); a mapped one maps the
    new file instead, since mapping costs less than hashing the file would, and keeping the old, deleted inode
    would leave workers loaded at different times on different page-cache copies.

    The tombstone file (``tombstones.npy``) is part of the key: a kept index whose tombstones changed is
    replaced by a new object over the same mapped FAISS index with the new tombstones
    (:meth:`VectorIndex.with_tombstones_of`), so snapshots in flight keep the set they started with."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.tombstone_reloads = 0  # kept indices given a newer tombstone file (counted as "kept" too)
        self._kept: dict[str, tuple[tuple[int, ...], str | None, VectorIndex, tuple | None]] = {}

    def load(self, folder: Path, modality: str) -> VectorIndex:
        path = folder / INDEX_NAME
        key, dead_key = file_key(path), file_key(folder / TOMBSTONES_NAME)  # before reading either
        if key is None:
            raise FileNotFoundError(f"{path} is missing")
        kept = self._kept.get(modality)
        same, digest = kept is not None and kept[0] == key, None
        if kept is not None and not same and not kept[2].mapped:
            digest = _file_digest(path)
            same = kept[1] == digest
        if same:
            index = kept[2]
            if dead_key != kept[3]:  # only the tombstones changed (a delete-only run): same mapped vectors
                index = index.with_tombstones_of(folder)
                self.tombstone_reloads += 1
            else:
                index.manifest.revision = read_manifest(folder).revision  # same vectors, newer catalog revision
            if file_key(path) == key:  # not replaced meanwhile (a compaction's new file drops the tombstones)
                self._kept[modality] = (key, kept[1], index, dead_key)
                self.counts["kept"] += 1
                return index
        index = VectorIndex.load(folder, mmap=True)
        if not index.mapped and digest is None:
            digest = _file_digest(path)
        self.counts["loaded"] += 1
        self._kept[modality] = (key, digest, index, dead_key)
        return index


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def upload_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _has_database(data_dir: Path) -> bool:
    return (Path(data_dir) / "catalog.sqlite3").is_file()


def media_type(path: Path, modality: str) -> str:
    """The MIME type of an indexed file, decided by its content."""
    if modality == "text":
        return "text/plain; charset=utf-8"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        head = b""
    if modality == "video":
        return video_mime(head)
    return sniff_mime(head) or "application/octet-stream"


def video_mime(head: bytes) -> str:
    """MIME type of a video container from its first bytes (MP4/MOV, WebM/Matroska, AVI)."""
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    return "application/octet-stream"


def sniff_mime(head: bytes) -> str | None:
    """MIME type of an image or audio file from its first bytes; None for anything else."""
    table = [
        (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"), (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
        (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"), (b"\x1a\x45\xdf\xa3", "audio/webm"),
    ]
    for magic, mime in table:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    if len(head) > 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "audio/mpeg"
    return None


def sniff_upload(head: bytes, tmp_path: Path) -> str | None:
    """"image" or "audio" by content only (the name a browser sends is not trusted).

    The project's decoder sniffing, plus the containers browsers record into
    (MediaRecorder: WebM/Matroska in Chromium and Firefox, MP4 in Safari).
    """
    kind = decoders.sniff(tmp_path)  # the temp file has no extension, so only content decides
    if kind in ("image", "audio"):
        return kind
    if head.startswith(b"\x1a\x45\xdf\xa3") or head[4:8] == b"ftyp":
        return "audio"
    return None
