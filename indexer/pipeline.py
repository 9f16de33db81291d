"""Indexing pipeline: reader -> mapper -> writer.

* reader: walk the given paths, keep files whose content (or, for text, name)
  is a supported modality, and compare size/mtime with the catalog;
* mapper: in a thread pool, hash and decode changed files (one file's failure is
  recorded as its error); in the main thread, encode decoded units in batches
  while the pool decodes the next files;
* writer: one database transaction per batch (files, items, embeddings, revision
  bump), then the in-memory FAISS indices; indices are saved periodically and at
  the end with the revision they reflect.

Killing a run at any point loses nothing: a batch is either committed whole or
not at all, committed files are "unchanged" on the next run, and an index whose
revision lags the database is rebuilt from the stored embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from retrieval import decoders
from retrieval.encoders import DEFAULT_MODEL, Model, canonical_name, create_model
from retrieval.index import VectorIndex, resolve_factory
from retrieval.tokens import item_views, model_has_tokens

from . import repository as repo
from .catalog import Catalog

log = logging.getLogger(__name__)


class ModelMismatchError(RuntimeError):
    """The data directory was built with another model."""


@dataclass(frozen=True)
class Candidate:
    path: str
    modality: str
    size: int
    mtime_ns: int


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


@dataclass
class Decoded:
    candidate: Candidate
    known: repo.KnownFile | None
    sha256: str | None = None
    units: list[Unit] = field(default_factory=list)
    error: str | None = None
    unchanged: bool = False


@dataclass
class AddOptions:
    model: str | None = None
    batch_size: int = 32
    workers: int = 2
    factory: str = "auto"
    progress: bool = True
    save_every_s: float = 30.0


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def as_dict(self, with_timings: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("added", "updated", "unchanged", "removed", "errors")}
        if with_timings:
            out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out


# ---------------------------------------------------------------- reader
def scan(roots: Sequence[Path]) -> Iterator[Candidate]:
    """Every indexable file under ``roots`` (hidden files and folders skipped)."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            found = _candidate(root)
            if found:
                yield found
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    found = _candidate(Path(dirpath) / name)
                    if found:
                        yield found


def _candidate(path: Path) -> Candidate | None:
    try:
        st = path.stat()
    except OSError:
        return None
    modality = decoders.sniff(path)
    if modality is None:
        return None
    return Candidate(str(path), modality, st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------- mapper
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def decode_file(c: Candidate, known: repo.KnownFile | None, model: Model) -> Decoded:
    """Hash and decode one file; never raises (the error is recorded instead)."""
    out = Decoded(c, known)
    try:
        out.sha256 = _sha256(c.path)
        if known is not None and known.sha256 == out.sha256:
            out.unchanged = True
            return out
        if c.modality not in model.modalities:
            model.tower(c.modality)  # raises with the fix in its message
        if c.modality == "image":
            img = decoders.load_image(Path(c.path))
            out.units = [Unit("image", img, extra={"width": img.width, "height": img.height}, source=c.path)]
        elif c.modality == "audio":
            audio = decoders.load_audio(Path(c.path))
            out.units = [Unit("audio", seg.samples, seg.start, seg.end) for seg in decoders.split_segments(audio)]
        else:
            text = decoders.load_text(Path(c.path))
            passages = decoders.split_passages(text)
            out.units = [
                Unit("text", p.text, content=p.text, extra={"chars": [p.start, p.end]} if len(passages) > 1 else None)
                for p in passages
            ]
    except (decoders.DecodeError, OSError) as exc:
        out.error = str(exc)
    except Exception as exc:  # any other failure of one file must not stop the run
        out.error = f"{c.path}: {type(exc).__name__}: {exc}"
    return out


def encode_units(model: Model, batch: Sequence[Decoded]) -> None:
    """Fill every unit's vector (and transcript notes, and token views when the model has them);
    a failing file gets an error."""
    by_modality: dict[str, list[Unit]] = defaultdict(list)
    for d in batch:
        if not d.error and not d.unchanged:
            for u in d.units:
                by_modality[u.modality].append(u)
    for modality, units in by_modality.items():
        try:
            _encode(model, modality, units)
        except Exception:  # isolate the file that fails, keep the others
            for d in batch:
                if d.error or d.unchanged or not d.units or d.units[0].modality != modality:
                    continue
                try:
                    _encode(model, modality, d.units)
                except Exception as exc:
                    d.error = f"{d.candidate.path}: encoding failed ({type(exc).__name__}: {exc})"


def _encode(model: Model, modality: str, units: list[Unit]) -> None:
    _encode_vectors(model, modality, units)
    if model_has_tokens(model, modality):
        views = item_views(model, modality, [u.payload for u in units], [u.content for u in units],
                           [u.source for u in units])
        for u, v in zip(units, views):
            u.views = v


def _encode_vectors(model: Model, modality: str, units: list[Unit]) -> None:
    enc = model.tower(modality).encode_with_notes([u.payload for u in units])
    for u, vec, note in zip(units, enc.vectors, enc.notes):
        u.vector = vec
        if note:
            note = dict(note)
            if "segments" in note and u.start_s:
                for seg in note["segments"]:
                    seg["start"] = round(seg["start"] + u.start_s, 2)
                    seg["end"] = round(seg["end"] + u.start_s, 2)
            u.content = note.pop("transcript", u.content)
            u.extra = {**(u.extra or {}), **note}


# ---------------------------------------------------------------- writer
class Writer:
    """Commits batches to the database, then mirrors them into the FAISS indices."""

    def __init__(self, catalog: Catalog, model: Model, indices: dict[str, VectorIndex], factory: str) -> None:
        self.catalog = catalog
        self.model = model
        self.indices = indices
        self.factory = factory
        self.revision = catalog.state()[2]
        self.needs_rebuild: set[str] = set()
        self.tokens = catalog.token_store()
        self._tokens_checked = False

    def _index(self, modality: str) -> VectorIndex:
        if modality not in self.indices:
            self.indices[modality] = VectorIndex.build(
                np.zeros(0, np.int64), np.zeros((0, self.model.dim), np.float32),
                model=self.model.name, checksums=self.model.checksums, dim=self.model.dim,
                factory="Flat", modality=modality, revision=self.revision,
            )
        return self.indices[modality]

    def write(self, batch: Sequence[Decoded], summary: Summary) -> None:
        added: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        removed: list[tuple[int, str]] = []
        views: list[tuple[int, dict[str, np.ndarray]]] = []
        with self.catalog.session() as s:
            for d in batch:
                c = d.candidate
                if d.unchanged:
                    repo.touch_file(s, d.known.id, c.size, c.mtime_ns)
                    summary.unchanged += 1
                    continue
                if d.known is not None:
                    removed += repo.delete_items_of_files(s, [d.known.id])
                row = repo.upsert_file(
                    s, path=c.path, file_id=d.known.id if d.known else None, modality=c.modality,
                    size=c.size, mtime_ns=c.mtime_ns, sha256=d.sha256, error=d.error,
                )
                if d.error:
                    summary.errors += 1
                    continue
                items = [repo.NewItem(u.modality, u.vector, u.start_s, u.end_s, u.content, u.extra) for u in d.units]
                ids = repo.add_items(s, row.id, items)
                for item_id, u in zip(ids, d.units):
                    added[u.modality][0].append(item_id)
                    added[u.modality][1].append(u.vector)
                    if u.views:
                        views.append((item_id, u.views))
                if d.known is None:
                    summary.added += 1
                else:
                    summary.updated += 1
            self.revision = repo.bump_revision(s)
            s.commit()
        if views:  # after the commit: a killed run leaves ids without tokens, which re-ranking skips
            if not self._tokens_checked:  # and `indexer rebuild` fills in
                self.tokens.check_model(self.model.name, self.model.dim)
                self._tokens_checked = True
            self.tokens.put_many(views)
        self.apply(added, removed)

    def remove_files(self, file_ids: list[int]) -> int:
        if not file_ids:
            return 0
        with self.catalog.session() as s:
            removed = repo.delete_files(s, file_ids)
            self.revision = repo.bump_revision(s)
            s.commit()
        self.apply({}, removed)
        return len(file_ids)

    def apply(self, added: dict[str, tuple[list[int], list[np.ndarray]]], removed: list[tuple[int, str]]) -> None:
        by_modality: dict[str, list[int]] = defaultdict(list)
        for item_id, modality in removed:
            by_modality[modality].append(item_id)
        if removed:
            self.tokens.delete_many(i for i, _ in removed)
        for modality, ids in by_modality.items():
            if modality not in self.indices:
                continue
            if self.indices[modality].supports_remove:
                self.indices[modality].remove(np.asarray(ids, np.int64))
            else:
                self.needs_rebuild.add(modality)
        for modality, (ids, vecs) in added.items():
            if modality in self.needs_rebuild:
                continue
            self._index(modality).add(np.asarray(ids, np.int64), np.stack(vecs))

    def save(self) -> None:
        self.catalog.save_indices(
            {m: i for m, i in self.indices.items() if m not in self.needs_rebuild}, self.revision
        )

    def finish(self) -> None:
        """Rebuild indices that need it (removals on HNSW, a factory change), then save."""
        model_name, checksums, _ = self.catalog.state()
        for modality, index in list(self.indices.items()):
            requested = self.factory
            if requested == "auto":  # keep what an earlier run asked for explicitly
                requested = index.manifest.requested_factory()
            desired = resolve_factory(requested, index.count, index.manifest.dim)
            if modality in self.needs_rebuild or not _same_factory(desired, index.manifest.factory):
                self.indices[modality] = self.catalog.rebuild_index(
                    modality, model_name, checksums, self.revision, factory=requested, dim=self.model.dim
                )
        self.needs_rebuild.clear()
        self.save()


def _same_factory(desired: str, actual: str) -> bool:
    if "{n}" in desired:
        return actual.startswith(desired.split("{n}")[0])
    return desired == actual


# ---------------------------------------------------------------- driver
def resolve_model(catalog: Catalog, requested: str | None) -> Model:
    """The model for this catalog; refuses one other than the catalog's."""
    recorded, recorded_sums, _ = catalog.state()
    name = canonical_name(requested or recorded or DEFAULT_MODEL)
    with catalog.session() as s:
        has_items = bool(repo.item_counts(s))
    if recorded and has_items and recorded != name:
        raise ModelMismatchError(
            f"{catalog.data_dir} was indexed with model '{recorded}', not '{name}'; "
            f"use --model {recorded}, or index into another --data-dir to use '{name}'"
        )
    model = create_model(name)
    if recorded == name and has_items and recorded_sums and recorded_sums != model.checksums:
        raise ModelMismatchError(
            f"the weights of model '{name}' changed since {catalog.data_dir} was indexed; "
            f"index into a new --data-dir (or delete {catalog.data_dir} and re-run the indexer)"
        )
    if recorded != name or not recorded_sums:
        with catalog.session() as s:
            repo.set_model(s, model.name, model.checksums)
            s.commit()
    return model


def add(paths: Sequence[Path], catalog: Catalog, options: AddOptions) -> Summary:
    """Index ``paths`` incrementally into ``catalog``; returns the run summary."""
    t_start = time.perf_counter()
    summary = Summary()
    roots = [str(Path(p).expanduser().resolve()) for p in paths]
    for root in roots:
        if not Path(root).exists():
            raise FileNotFoundError(f"{root} does not exist; pass a folder or file to index")
    catalog.lock()
    try:
        t = time.perf_counter()
        model = resolve_model(catalog, options.model)
        summary.timings["model_load_s"] = time.perf_counter() - t

        t = time.perf_counter()
        indices = catalog.fresh_indices(options.factory)
        writer = Writer(catalog, model, indices, options.factory)
        summary.timings["index_load_s"] = time.perf_counter() - t

        with catalog.session() as s:
            run_id = repo.start_run(s, model.name)
            known = repo.known_files_under(s, roots)
            s.commit()

        t = time.perf_counter()
        candidates = list(scan([Path(r) for r in roots]))
        seen = {c.path for c in candidates}
        summary.timings["scan_s"] = time.perf_counter() - t

        summary.removed = writer.remove_files([k.id for p, k in known.items() if p not in seen])

        todo = []
        for c in candidates:
            k = known.get(c.path)
            if k is not None and k.size == c.size and k.mtime_ns == c.mtime_ns:
                summary.unchanged += 1
            else:
                todo.append((c, k))
        _process(todo, model, writer, summary, options)

        t = time.perf_counter()
        writer.finish()
        summary.timings["index_save_s"] += time.perf_counter() - t
        summary.timings["total_s"] = time.perf_counter() - t_start
        summary.timings["files_per_s"] = len(todo) / max(summary.timings["total_s"], 1e-9)
        with catalog.session() as s:
            repo.finish_run(s, run_id, summary.as_dict())
            s.commit()
        return summary
    finally:
        catalog.unlock()


def _process(todo: list, model: Model, writer: Writer, summary: Summary, options: AddOptions) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", desc="indexing", disable=not options.progress or not todo,
               file=sys.stderr, dynamic_ncols=True)
    lookahead = max(2, options.workers) * options.batch_size
    last_save = time.perf_counter()

    def timed_decode(c: Candidate, k: repo.KnownFile | None) -> tuple[Decoded, float]:
        t0 = time.perf_counter()
        d = decode_file(c, k, model)
        return d, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="decode") as pool:
        pending: list[Future] = []
        it = iter(todo)
        batch: list[Decoded] = []
        units = 0

        def refill() -> None:
            while len(pending) < lookahead:
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append(pool.submit(timed_decode, *nxt))

        refill()
        while pending:
            d, dt = pending.pop(0).result()
            refill()
            summary.timings["decode_s"] += dt
            batch.append(d)
            units += len(d.units)
            if units >= options.batch_size or len(batch) >= options.batch_size or not pending:
                t = time.perf_counter()
                encode_units(model, batch)
                summary.timings["encode_s"] += time.perf_counter() - t
                t = time.perf_counter()
                writer.write(batch, summary)
                summary.timings["write_s"] += time.perf_counter() - t
                bar.update(len(batch))
                bar.set_postfix(errors=summary.errors, refresh=False)
                batch, units = [], 0
                if time.perf_counter() - last_save > options.save_every_s:
                    t = time.perf_counter()
                    writer.save()
                    summary.timings["index_save_s"] += time.perf_counter() - t
                    last_save = time.perf_counter()
    bar.close()


def rebuild_tokens(catalog: Catalog, model: Model, force: bool = False) -> dict[str, int]:
    """Re-encode token features of items that have none in the store (all items with ``force``),
    decoding their files again; files that no longer decode are counted, not fatal."""
    store = catalog.token_store()
    with catalog.session() as s:
        by_file = repo.items_by_file(s)
    with_tokens = {m for m in {f[1] for f in by_file} if model_has_tokens(model, m)}
    if not with_tokens:
        return {"written": 0, "skipped": 0, "failed": 0}
    store.check_model(model.name, model.dim)
    have = set() if force else store.ids()
    written = failed = 0
    todo = [(path, modality, items) for path, modality, items in by_file
            if modality in with_tokens and any(i[0] not in have for i in items)]
    for path, modality, items in todo:
        try:
            payloads = _payloads(path, modality, items)
            views = item_views(model, modality, payloads, [i[3] for i in items], [path] * len(items))
            store.put_many((i[0], v) for i, v in zip(items, views))
            written += len(items)
        except Exception as exc:  # one unreadable file must not stop the rebuild
            log.warning("%s: token features not rebuilt (%s)", path, exc)
            failed += len(items)
    return {"written": written, "skipped": sum(len(t[2]) for t in by_file) - written - failed, "failed": failed}


def _payloads(path: str, modality: str, items: list[tuple[int, float | None, float | None, str | None]]) -> list[Any]:
    if modality == "image":
        return [decoders.load_image(Path(path))] * len(items)
    if modality == "audio":
        audio = decoders.load_audio(Path(path))
        sr = decoders.SAMPLE_RATE
        return [audio[int((start or 0) * sr): int(end * sr) if end is not None else None] for _, start, end, _ in items]
    return [content or "" for _, _, _, content in items]
