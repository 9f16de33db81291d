"""Token features (re-ranking) kept in step with the catalog: refill the items that have none.

The indexer writes an item's tokens after its batch commits, so a killed run (or a killed
``indexer rebuild --tokens``) can leave items without them; re-ranking would silently skip those.
:func:`rebuild_tokens` decodes the files of such items again and writes their tokens; ``indexer add``
and ``indexer status`` count the missing ones (:func:`missing_tokens`) and ``add`` refills them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from retrieval import decoders
from retrieval.encoders import Model
from retrieval.tokens import TokenStore, item_views, model_has_tokens

from . import repository as repo
from .catalog import Catalog

log = logging.getLogger(__name__)


def missing_tokens(catalog: Catalog) -> int | None:
    """Items without token features, counted in the modalities whose items have them (a model's tower
    either writes tokens for all its items or for none); None when this catalog has no token store."""
    store = catalog.token_store()
    if not store.has_manifest():
        return None
    have = store.ids()
    missing = 0
    with catalog.session() as s:
        for modality in repo.item_counts(s):
            ids = repo.item_ids(s, [modality])
            if ids & have:
                missing += len(ids - have)
    return missing


def rebuild_tokens(catalog: Catalog, model: Model, force: bool = False) -> dict[str, int]:
    """Encode token features of items that have none in the store (all items with ``force``), decoding
    their files again; files that no longer decode are counted, not fatal.

    ``force`` builds a whole new store beside the old one and swaps it in at the end (a killed run
    leaves the old store); an item whose file no longer decodes keeps its old tokens."""
    store = catalog.token_store()
    with catalog.session() as s:
        by_file = repo.items_by_file(s)
    total = sum(len(t[2]) for t in by_file)
    have = set() if force else store.ids()
    todo = [(path, modality, items) for path, modality, items in by_file if any(i[0] not in have for i in items)]
    with_tokens = {m for m in {t[1] for t in todo} if model_has_tokens(model, m)}  # builds only needed towers
    if not with_tokens:
        return {"written": 0, "skipped": total, "failed": 0}
    target = store.begin_rebuild() if force else store
    target.check_model(model.name, model.dim)
    written = failed = 0
    for modality in sorted(with_tokens):
        batch: list[tuple[str, list, list]] = []  # (path, items, payloads): encoded together, BATCH items at once
        for path, mod, items in todo:
            if mod != modality:
                continue
            try:
                batch.append((path, items, _payloads(path, modality, items)))
            except Exception as exc:  # one unreadable file must not stop the rebuild
                failed += _failed(path, items, exc, force, target, store)
            if sum(len(b[1]) for b in batch) >= BATCH or sum(_nbytes(b[2]) for b in batch) >= BATCH_BYTES:
                w, f = _encode_batch(model, modality, batch, force, target, store)
                written, failed, batch = written + w, failed + f, []
        if batch:
            w, f = _encode_batch(model, modality, batch, force, target, store)
            written, failed = written + w, failed + f
    if force:
        store.commit_rebuild(target)
    return {"written": written, "skipped": total - written - failed, "failed": failed}


BATCH = 32  # items encoded per forward pass, as the indexer's batches (one file at a time: ~65 items/s for notes)
BATCH_BYTES = 256 * 2**20  # decoded payloads held at once at most (large photos, long recordings)


def _nbytes(payloads: list) -> int:
    return sum(getattr(p, "nbytes", 0) or (p.width * p.height * 3 if hasattr(p, "width") else len(str(p)))
               for p in payloads)


def _encode_batch(model: Model, modality: str, batch: list[tuple[str, list, list]], force: bool,
                  target: TokenStore, store: TokenStore) -> tuple[int, int]:
    """Encode the views of several files' items in one pass; if that fails, file by file. (written, failed)."""
    flat = [(path, item, payload) for path, items, payloads in batch for item, payload in zip(items, payloads)]
    try:
        views = item_views(model, modality, [p for _, _, p in flat], [i[3] for _, i, _ in flat], [f for f, _, _ in flat])
    except Exception:
        if len(batch) == 1:
            path, items, _ = batch[0]
            return 0, _failed(path, items, RuntimeError("encoding failed"), force, target, store)
        written = failed = 0
        for one in batch:
            w, f = _encode_batch(model, modality, [one], force, target, store)
            written, failed = written + w, failed + f
        return written, failed
    target.put_many((item[0], v) for (_, item, _), v in zip(flat, views))
    return len(flat), 0


def _failed(path: str, items: list, exc: BaseException, force: bool, target: TokenStore, store: TokenStore) -> int:
    log.warning("%s: token features not rebuilt (%s)", path, exc)
    if force:
        target.copy_from(store, [i[0] for i in items])
    return len(items)


def _payloads(path: str, modality: str, items: list[tuple[int, float | None, float | None, str | None]]) -> list[Any]:
    if modality == "image":
        return [decoders.load_image(Path(path))] * len(items)
    if modality == "audio":  # the items' windows, decoded one window at a time (never the whole recording)
        wanted = {round(start or 0.0, 3) for _, start, _, _ in items}
        windows = {seg.start: seg.samples for seg in decoders.stream_segments(Path(path), silence_dbfs=None)
                   if seg.start in wanted}
        missing = wanted - set(windows)
        if missing:
            raise decoders.DecodeError(f"{path}: changed since it was indexed (no window at {min(missing)} s); "
                                       f"re-run `python -m indexer add` on its folder")
        return [windows[round(start or 0.0, 3)] for _, start, _, _ in items]
    return [content or "" for _, _, _, content in items]
