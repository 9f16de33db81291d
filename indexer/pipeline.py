"""Indexing pipeline: reader -> mapper -> writer.

* reader (:mod:`indexer.scanner`): walk the given paths, keep regular files whose
  content (or, for text, name) is a supported modality and whose links stay inside
  the roots, record what must be skipped, and compare size/mtime with the catalog;
* mapper: in a thread pool, hash and decode changed files (one file's failure is
  recorded as its error); in the main thread, encode decoded units in batches
  while the pool decodes the next files;
* writer (:mod:`indexer.writer`): one database transaction per batch (files, items,
  embeddings, revision bump), then the in-memory FAISS indices; indices are saved
  periodically and at the end with the revision they reflect; items left without
  token features are refilled (:mod:`indexer.token_sync`).

Killing a run at any point loses nothing: a batch is either committed whole or
not at all, committed files are "unchanged" on the next run, and an index whose
revision lags the database is rebuilt from the stored embeddings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from retrieval import decoders
from retrieval.encoders import DEFAULT_MODEL, Model, canonical_name, create_model
from retrieval.encoders.base import Encoded
from retrieval.tokens import item_views, model_has_tokens

from . import repository as repo
from . import sources
from .catalog import Catalog
from .db import analyze_if_stale
from .scanner import Candidate, Skipped, printable, scan
from .writer import Decoded, Summary, Unit, Writer, _short

log = logging.getLogger(__name__)


class ModelMismatchError(RuntimeError):
    """The data directory was built with another model."""


@dataclass
class AddOptions:
    model: str | None = None
    batch_size: int = 32
    workers: int = 2
    factory: str | None = None  # typed by the user (sticky; "auto" = by size); None: the earlier choice, else auto
    progress: bool = True
    save_every_s: float = 30.0
    decode_budget_mb: float = float(os.environ.get("INDEXER_DECODE_BUDGET_MB", 1024))  # decoded bytes held ahead
    executor: str = "local"  # "local": threads + this process; "ray": Ray actors (indexer.ray_executor)
    address: str | None = None  # Ray cluster address (None: $RAY_ADDRESS, else a local Ray instance)
    ray_workers: int | None = None  # Ray actors (None: one per GPU, else one per CPU of the cluster)


# ---------------------------------------------------------------- mapper
def decode_file(c: Candidate, known: repo.KnownFile | None, model: Model) -> Decoded:
    """Hash and decode one file; never raises (the error is recorded instead)."""
    out = Decoded(c, known)
    try:
        out.sha256 = sources.sha256_regular(c.path, c.dev, c.ino)
        if known is not None and known.sha256 == out.sha256:
            out.unchanged = True
            return out
        if c.modality not in model.modalities:
            model.tower("image" if c.modality == "video" else c.modality)  # raises with the fix in its message
        if c.modality == "image":
            img = decoders.load_image(Path(c.path))
            extra = {"width": img.width, "height": img.height} | ({"photo": True} if img.info.get("photographic") else {})
            out.units = [Unit("image", img, extra=extra, source=c.path)]
        elif c.modality == "video":
            out.units = video_units(c.path)
        elif c.modality == "audio":
            stats = decoders.StreamStats()
            out.units = [Unit("audio", seg.samples, seg.start, seg.end)
                         for seg in decoders.stream_segments(Path(c.path), stats=stats)]
            if not out.units:
                out.error = (f"{c.path}: the recording is silent ({_duration(stats.seconds)} under "
                             f"{decoders.SILENCE_DBFS:g} dBFS); nothing to index: check its recording level, "
                             f"or delete it")
        else:
            text = decoders.load_text(Path(c.path))
            passages = decoders.split_passages(text)
            out.units = [
                Unit("text", p.text, content=p.text, extra={"chars": [p.start, p.end]} if len(passages) > 1 else None)
                for p in passages
            ]
    except (decoders.DecodeError, sources.SourceChanged) as exc:
        out.error = str(exc)
    except OSError as exc:
        out.error = (f"{c.path}: cannot be read ({exc.strerror or _short(exc)}); check that it still exists and "
                     f"that the indexer may read it")
    except Exception as exc:  # any other failure of one file must not stop the run
        out.error = (f"{c.path}: could not be indexed ({_short(exc)}); check that the file opens in its usual "
                     f"program and re-save it; if it does, this is a bug: report it with this message")
    return out


def video_units(path: str) -> list[Unit]:
    """A video's keyframes (image tower, with thumbnails) and speech windows (speech tower)."""
    video = decoders.load_video(Path(path))
    size = {"width": video.width, "height": video.height, "duration": video.duration}
    units = [Unit("video", k.image, k.start, k.end, extra=size, source=path, view="frame", thumbnail=k.jpeg)
             for k in video.keyframes]
    return units + [Unit("video", seg.samples, seg.start, seg.end, source=path, view="speech")
                    for seg in video.speech]


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def encode_units(model: Model, batch: Sequence[Decoded]) -> None:
    """Fill every unit's vector (and transcript notes, and token views when the model has them);
    a failing file gets an error."""
    by_tower: dict[tuple[str, bool], list[Unit]] = defaultdict(list)
    for d in batch:
        if not d.error and not d.unchanged:
            for u in d.units:
                by_tower[(u.tower, u.view is None)].append(u)
    for (tower, tokens), units in by_tower.items():
        try:
            _encode(model, tower, units, tokens)
        except Exception:  # isolate the file that fails, keep the others
            for d in batch:
                mine = [u for u in d.units if (u.tower, u.view is None) == (tower, tokens)]
                if d.error or d.unchanged or not mine:
                    continue
                try:
                    _encode(model, tower, mine, tokens)
                except Exception as exc:
                    d.error = (f"{d.candidate.path}: the model could not encode it ({_short(exc)}); re-save the "
                               f"file in a common format, or report this message as a bug")


def _encode(model: Model, modality: str, units: list[Unit], tokens: bool = True) -> None:
    """Vectors, notes and token views when ``tokens`` (not video segments: the re-ranker was not trained on
    them) and the model has them; one forward pass gives vectors and tokens."""
    payloads = [u.payload for u in units]
    if not (tokens and model_has_tokens(model, modality)):
        _set_vectors(units, model.tower(modality).encode_with_notes(payloads))
        return
    enc, own = model.encode_with_tokens(modality, payloads)
    _set_vectors(units, enc)  # first: an audio unit's transcript (its content) becomes a view
    views = item_views(model, modality, payloads, [u.content for u in units], [u.source for u in units], own=own)
    for u, v in zip(units, views):
        u.views = v


def _set_vectors(units: list[Unit], enc: Encoded) -> None:
    for u, vec, note in zip(units, enc.vectors, enc.notes):
        u.vector = vec
        if note:
            note = dict(note)
            if "segments" in note and u.start_s:
                for seg in note["segments"]:
                    seg["start"] = round(seg["start"] + u.start_s, 2)
                    seg["end"] = round(seg["end"] + u.start_s, 2)
                    seg["words"] = [[w, round(a + u.start_s, 2), round(b + u.start_s, 2)]
                                    for w, a, b in seg.get("words") or []]
            u.content = note.pop("transcript", u.content)
            u.extra = {**(u.extra or {}), **note}


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


def check_roots(paths: Sequence[Path]) -> list[str]:
    """The absolute, resolved roots to index; raises ``FileNotFoundError`` (with the fix) before anything is
    created, so a mistyped path never leaves an empty catalog behind."""
    roots = []
    for p in paths:
        root = os.path.realpath(os.path.expanduser(os.fspath(p)))
        if not os.path.exists(root):
            raise FileNotFoundError(f"{root} does not exist; pass a folder or file to index")
        if not os.path.isdir(root) and not os.path.isfile(root):
            raise FileNotFoundError(f"{root} is neither a folder nor a regular file; pass a folder or file to index")
        if printable(root) != root:
            raise FileNotFoundError(f"{printable(root)}: the path is not valid UTF-8; rename it to index it")
        roots.append(root)
    return roots


def add(paths: Sequence[Path], catalog: Catalog, options: AddOptions) -> Summary:
    """Index ``paths`` incrementally into ``catalog``; returns the run summary."""
    t_start = time.perf_counter()
    summary = Summary()
    roots = check_roots(paths)
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
        found = list(scan(roots))
        candidates = [c for c in found if isinstance(c, Candidate)]
        skipped = [c for c in found if isinstance(c, Skipped)]
        seen = {c.path for c in found}
        summary.timings["scan_s"] = time.perf_counter() - t

        summary.removed = writer.remove_files([k.id for p, k in known.items() if p not in seen])
        writer.record_skipped(skipped, known, summary)

        todo = []
        for c in candidates:
            k = known.get(c.path)
            if k is not None and k.size == c.size and k.mtime_ns == c.mtime_ns and (
                    k.status == "error" or (k.dev, k.inode) == (sources.as_int64(c.dev), sources.as_int64(c.ino))):
                summary.unchanged += 1  # a same-looking file under a new inode is hashed (and its identity kept)
            else:
                todo.append((c, k))
        if options.executor == "ray":
            from .ray_executor import process as ray_process

            ray_process(todo, model, writer, summary, options, roots)
        else:
            _process(todo, model, writer, summary, options)
        refill_missing_tokens(catalog, model, summary)

        t = time.perf_counter()
        writer.finish()
        summary.timings["index_save_s"] += time.perf_counter() - t
        summary.timings["total_s"] = time.perf_counter() - t_start
        summary.timings["files_per_s"] = len(todo) / max(summary.timings["total_s"], 1e-9)
        with catalog.session() as s:
            summary.known_errors = max(0, len(repo.error_paths_under(s, roots)) - summary.errors)
            summary.notices = catalog_notices(s, model.name)
            repo.finish_run(s, run_id, summary.as_dict())
            s.commit()
        analyze_if_stale(catalog.engine)  # Postgres: fresh planner statistics after a large run
        return summary
    finally:
        catalog.unlock()


def catalog_notices(session, model: str) -> list[str]:  # noqa: ANN001 - a SQLAlchemy session
    from .notices import notices

    return notices(session, model)


def refill_missing_tokens(catalog: Catalog, model: Model, summary: Summary) -> None:
    """Items left without token features (a killed run or token rebuild) get them back."""
    from .token_sync import missing_tokens, rebuild_tokens

    t = time.perf_counter()
    catalog.token_store().discard_incomplete_rebuild()  # we hold the writer lock: no rebuild is running
    if not missing_tokens(catalog):
        return
    out = rebuild_tokens(catalog, model)
    if out["written"] or out["failed"]:
        log.warning("token features: %d refilled, %d failed (re-ranking skips those)", out["written"], out["failed"])
    summary.timings["tokens_refill_s"] = time.perf_counter() - t


def decoded_bytes(d: Decoded) -> int:
    """Memory a decoded file holds until it is encoded (samples, pixels, text)."""
    n = 0
    for u in d.units:
        p = u.payload
        n += p.nbytes if hasattr(p, "nbytes") else (p.width * p.height * 3 if hasattr(p, "width") else len(str(p)) * 4)
    return n


def estimated_bytes(c: Candidate) -> int:
    """What decoding ``c`` will hold, before it is decoded: pixels from the image header, else from the size."""
    if c.modality == "image":
        try:
            from PIL import Image

            with Image.open(c.path) as img:  # reads the header only
                return min(img.width * img.height, decoders.MAX_IMAGE_PIXELS) * 3
        except Exception:
            return c.size
    if c.modality == "video":  # keyframes at 320 px and 16 kHz speech: far less than the file, for long ones
        return min(c.size, 1 << 30)
    if c.modality == "audio":  # 16 kHz float32 is 2x a 16-bit 16 kHz WAV, ~4x a typical compressed file
        return min(4 * c.size, int(decoders.MAX_AUDIO_SECONDS * decoders.SAMPLE_RATE * 4 * 1.2))
    return 4 * c.size


def _process(todo: list, model: Model, writer: Writer, summary: Summary, options: AddOptions) -> None:
    """Decode ahead in a thread pool (at most ``lookahead`` files and ``decode_budget_mb`` of decoded data, at
    least one file), encode and write in batches; ``timings.decode_held_peak_mb`` is the most decoded data held."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", desc="indexing", disable=not options.progress or not todo,
               file=sys.stderr, dynamic_ncols=True)
    lookahead = max(2, options.workers) * options.batch_size
    last_save = time.perf_counter()

    def timed_decode(c: Candidate, k: repo.KnownFile | None) -> tuple[Decoded, float]:
        t0 = time.perf_counter()
        d = decode_file(c, k, model)
        return d, time.perf_counter() - t0

    budget = int(options.decode_budget_mb * (1 << 20))
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="decode") as pool:
        pending: list[tuple[Future, int]] = []  # (future, estimated bytes)
        it = iter(todo)
        batch: list[Decoded] = []
        units = batch_bytes = 0
        peak = 0

        def held() -> int:
            return batch_bytes + sum(decoded_bytes(f.result()[0]) if f.done() else est for f, est in pending)

        def refill() -> None:
            while len(pending) < lookahead and (not pending or held() < budget):
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append((pool.submit(timed_decode, *nxt), estimated_bytes(nxt[0])))

        refill()
        while pending:
            d, dt = pending.pop(0)[0].result()
            batch.append(d)
            units += len(d.units)
            batch_bytes += decoded_bytes(d)
            peak = max(peak, held())
            refill()
            summary.timings["decode_s"] += dt
            if (units >= options.batch_size or len(batch) >= options.batch_size or not pending
                    or batch_bytes >= budget // 2):
                t = time.perf_counter()
                encode_units(model, batch)
                summary.timings["encode_s"] += time.perf_counter() - t
                t = time.perf_counter()
                writer.write(batch, summary)
                summary.timings["write_s"] += time.perf_counter() - t
                bar.update(len(batch))
                bar.set_postfix(errors=summary.errors, refresh=False)
                batch, units, batch_bytes = [], 0, 0
                if time.perf_counter() - last_save > options.save_every_s:
                    t = time.perf_counter()
                    writer.save()
                    summary.timings["index_save_s"] += time.perf_counter() - t
                    last_save = time.perf_counter()
                refill()
        summary.timings["decode_held_peak_mb"] = peak / (1 << 20)
    bar.close()
