"""The search engine one web worker shares between its threads.

One :class:`Engine` per process holds the catalog (SQL), the FAISS indices and
the model (created once through the registry's per-process cache). It only reads
the data directory: a stale index (an indexer run in progress, or one that was
killed) is rebuilt in memory from the stored embeddings, never written back, so
several worker processes can serve one data directory beside a running indexer.

After a new indexer run (the catalog's revision changes) the indices are
reloaded on the next request; requests in flight keep the snapshot they started
with. Encoding is serialised per modality (Hugging Face fast tokenizers are not
safe to call from several threads at once); FAISS search on a CPU index is
thread-safe and runs without a lock.

Hybrid search (``hybrid=True``): the vector hits (a pool of :data:`HYBRID_POOL`)
and the catalog's full-text hits for the typed words (positive text inputs
only; the words of a spoken query are not used) are merged by reciprocal rank
fusion, k = 60 (:mod:`retrieval.rank_fusion`). A hit's score is then the fused
score normalised to (0, 1]; it also says its rank in each list (``ranks``),
which query words its text or file name holds (``matched``, by the database's
own stemming) and where they are in its name (``name_marks``). A long
recording's excerpt moves to the sentence holding a matched word when the
vector-chosen sentence has none. Without typed words hybrid equals vector
search (the response's ``hybrid.terms`` is then empty).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from indexer import repository as repo
from indexer.catalog import Catalog
from retrieval import decoders
from retrieval.encoders import MODALITIES, Model, ModelError, create_model, create_reranker
from retrieval.fusion import fuse
from retrieval.index import VectorIndex, read_manifest
from retrieval.rank_fusion import RRF_K, ranks as list_ranks, rrf
from retrieval.rerank import DEFAULT_K as RERANK_K, Reranker, RerankOptions, rerank_hits
from retrieval.search import Hit, Searcher
from retrieval.spans import text_snippet
from retrieval.tokens import QUERY_VIEW, TokenStore, query_views

from .errors import ApiError

log = logging.getLogger(__name__)

QUERY_CACHE_SIZE = 256
HYBRID_POOL = 1000  # vector and keyword hits fused per hybrid query
SPAN_CACHE_SIZE = 4096  # audio items whose segment vectors are kept (a few KB each)
WORD_RE = re.compile(r"\w+", re.UNICODE)
NAME_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)  # file names: "_" separates words too
# words too common to mark in a snippet (they still count for the query itself)
STOPWORDS = frozenset("""a an and are as at be but by can did do does for from had has have her his how i in is it its
me my not of on or our she so than that the their them then there these they this to too was we were what when where
which who why will with you your""".split())


@dataclass(frozen=True)
class QueryPart:
    """One input of a query: text, an uploaded image/audio file (decoded already), or an indexed item."""

    kind: str  # "text" | "image" | "audio" | "item"
    value: Any  # str, PIL image, float32 samples, or an item id
    key: str  # stable identity for the query-vector cache (text, sha256 of the upload, item id)
    label: str = ""
    weight: float = 1.0  # < 0: "not this" (see retrieval.fusion)


@dataclass
class Snapshot:
    """What one request searches: indices and the model of one catalog revision."""

    revision: int
    model_name: str | None
    searcher: Searcher | None
    counts: dict[str, int] = field(default_factory=dict)


class NotIndexedError(ApiError):
    status = 503
    code = "not_indexed"


class Engine:
    def __init__(self, data_dir: Path, database_url: str | None = None, reload_check_s: float = 2.0) -> None:
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.reload_check_s = reload_check_s
        self._catalog: Catalog | None = None
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0
        self._reload_lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._encode_locks = {m: threading.Lock() for m in MODALITIES}
        self._cache: OrderedDict[tuple, tuple[np.ndarray, dict]] = OrderedDict()
        self._span_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---- catalog -------------------------------------------------------
    def catalog(self) -> Catalog | None:
        """The catalog, or None while the data directory does not exist (nothing indexed yet)."""
        if self._catalog is None:
            if self.database_url is None and not _has_database(self.data_dir):
                return None
            with self._catalog_lock:
                if self._catalog is None:
                    # never migrate from the web app: the indexer owns the schema
                    self._catalog = Catalog(self.data_dir, migrate=False, database_url=self.database_url)
        return self._catalog

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
            model_checksums = dict(repo.get_state(s).checksums or {})
            s.rollback()
        indices: dict[str, VectorIndex] = {}
        for modality in MODALITIES:
            if counts.get(modality, 0) == 0:
                continue
            if cat.index_is_fresh(modality, revision):
                try:
                    indices[modality] = VectorIndex.load(cat.index_dir(modality))
                    continue
                except (OSError, RuntimeError, ValueError) as exc:  # replaced while we read it
                    log.warning("reading the %s index failed (%s); rebuilding it in memory", modality, exc)
            indices[modality] = self._rebuild_in_memory(cat, modality, model_name, model_checksums, revision)
        if not indices:
            return Snapshot(revision, model_name, None, counts)
        searcher = Searcher(indices, create_model(model_name))
        log.info("loaded revision %d (%s) of %s: %s", revision, model_name, self.data_dir, counts)
        return Snapshot(revision, model_name, searcher, counts)

    @staticmethod
    def _rebuild_in_memory(cat: Catalog, modality: str, model: str, checksums: dict, revision: int) -> VectorIndex:
        log.warning("the %s index lags the catalog (indexer running or interrupted); "
                    "building it in memory from the stored embeddings", modality)
        ids_parts, vec_parts = [], []
        with cat.session() as s:
            for ids, vecs in repo.iter_embeddings(s, modality):
                ids_parts.append(ids)
                vec_parts.append(vecs)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        vecs = np.concatenate(vec_parts) if vec_parts else None
        try:
            factory = read_manifest(cat.index_dir(modality)).requested_factory()
        except (FileNotFoundError, ValueError, TypeError):
            factory = "auto"
        dim = vecs.shape[1] if vecs is not None else 1
        return VectorIndex.build(ids, vecs if vecs is not None else np.zeros((0, dim), np.float32), model=model,
                                 checksums=checksums, dim=dim, factory=factory, modality=modality, revision=revision)

    def model(self) -> Model | None:
        snap = self.snapshot()
        return snap.searcher.model if snap.searcher else None

    def warm_up(self) -> None:
        """Load indices and the text tower now, so the first query is not the slow one."""
        snap = self.snapshot()
        if snap.searcher is not None and "text" in snap.searcher.model.modalities:
            with self._encode_locks["text"]:
                snap.searcher.model.encode("text", ["warm up"])

    # ---- queries -------------------------------------------------------
    def encode(self, model: Model, part: QueryPart) -> tuple[np.ndarray, dict]:
        """One input's unit vector and what we learnt on the way (an audio query's transcript)."""
        if part.kind == "item":
            raise AssertionError("items are looked up, not encoded")
        try:
            tower = model.tower(part.kind)
        except ModelError as exc:
            raise ApiError(str(exc), 422, "unsupported_modality") from None
        with self._encode_locks[part.kind]:
            enc = tower.encode_with_notes([part.value])
        note = dict(enc.notes[0] or {})
        info: dict[str, Any] = {}
        if part.kind == "audio" and "transcript" in note:
            info["transcript"] = note["transcript"]
            if not note["transcript"].strip():
                raise ApiError("no speech was recognised in the recording; speak clearly, closer to the "
                               "microphone, or pick another file", 422, "no_speech")
        return enc.vectors[0], info

    def query_vector(self, snap: Snapshot, parts: Sequence[QueryPart]) -> tuple[np.ndarray, list[dict]]:
        """The fused lookup vector (weighted sum of the inputs) and per-input info."""
        vectors, weights, infos = self.query_vectors(snap, parts)
        return fuse(vectors, weights), infos

    def query_vectors(self, snap: Snapshot, parts: Sequence[QueryPart]) -> tuple[np.ndarray, list[float], list[dict]]:
        """One unit vector per input (cached by input identity), the inputs' weights, and per-input info."""
        assert snap.searcher is not None
        model = snap.searcher.model
        vectors, infos = [], []
        item_ids = [int(p.value) for p in parts if p.kind == "item"]
        stored: dict[int, np.ndarray] = {}
        if item_ids:
            with self.session() as s:
                stored = repo.item_embeddings(s, item_ids)
        for part in parts:
            key = (model.name, part.kind, part.key)
            if part.kind == "item":
                vec = stored.get(int(part.value))
                if vec is None:
                    raise ApiError(f"item {part.value} does not exist (it may have been removed by a later "
                                   "indexer run)", 404, "unknown_item")
                vec, info = vec / max(float(np.linalg.norm(vec)), 1e-12), {}
            else:
                with self._cache_lock:
                    cached = self._cache.get(key)
                    if cached is not None:
                        self._cache.move_to_end(key)
                if cached is None:
                    cached = self.encode(model, part)
                    with self._cache_lock:
                        self._cache[key] = cached
                        while len(self._cache) > QUERY_CACHE_SIZE:
                            self._cache.popitem(last=False)
                vec, info = cached
            vectors.append(vec)
            infos.append({"kind": part.kind, "label": part.label, "weight": part.weight, **info})
        return np.stack(vectors), [p.weight for p in parts], infos

    def search(self, parts: Sequence[QueryPart], target: str, k: int, offset: int, hybrid: bool = False,
               rerank: bool = True) -> dict:
        if not parts:
            raise ApiError("the query is empty: type some words, add an image or an audio file, or record "
                           "from the microphone", 400, "empty_query")
        snap = self.snapshot()
        if snap.searcher is None:
            raise self.not_indexed()
        t0 = time.perf_counter()
        vectors, weights, infos = self.query_vectors(snap, parts)
        query = fuse(vectors, weights)
        t1 = time.perf_counter()
        exclude = frozenset(int(p.value) for p in parts if p.kind == "item")
        # hybrid: the typed words of positive inputs are the keywords; the vector list gets deeper
        keywords = " ".join(p.value for p in parts if p.kind == "text" and p.weight > 0) if hybrid else None
        fusion = {"terms": repo.keyword_terms(keywords or ""), "keyword_hits": 0, "ranks": {}}
        n = max(offset + k + 1, HYBRID_POOL) if fusion["terms"] else offset + k + 1
        # the re-ranker was trained on single-input queries; several inputs are scored by attention fusion
        reranker = self.reranker(snap) if rerank and len(parts) == 1 else None
        if reranker is not None:
            n = max(n, RERANK_K)
        hits = snap.searcher.search_inputs(vectors, weights, target=target, k=n, exclude=exclude)
        if reranker is not None:
            hits = self.rerank(snap, reranker, parts, weights, hits)
        if fusion["terms"]:
            hits = self.fuse_keywords(hits, keywords, target, offset + k + 1, exclude, fusion)
        page, has_more = hits[offset:offset + k], len(hits) > offset + k
        words = [w for p in parts if p.kind == "text" and p.weight > 0 for w in WORD_RE.findall(p.value)]
        words += [w for i in infos if i["weight"] > 0 for w in WORD_RE.findall(i.get("transcript", ""))]
        rows = self.rows(snap, page, query, words, first_rank=offset)
        if fusion["terms"]:
            self._mark_keywords(rows, keywords, fusion["ranks"])
        t2 = time.perf_counter()
        result = {
            "hits": rows,
            "offset": offset,
            "k": k,
            "has_more": has_more,
            "next_offset": offset + k if has_more else None,
            "target": target,
            "query": {"inputs": infos, "words": sorted({w.lower() for w in words if len(w) > 2 and w.lower() not in STOPWORDS})},
            "model": snap.model_name,
            "revision": snap.revision,
            "timings_ms": {"encode": round((t1 - t0) * 1000, 1), "search": round((t2 - t1) * 1000, 1)},
        }
        result["rerank"] = {"applied": reranker is not None, "k": RERANK_K if reranker is not None else 0}
        if hybrid:
            result["hybrid"] = {"terms": fusion["terms"], "keyword_hits": fusion["keyword_hits"], "rrf_k": RRF_K}
        return result

    # ---- re-ranking: fused cross-attention over the top K ---------------
    def reranker(self, snap: Snapshot) -> Reranker | None:
        """The model's trained re-ranker, or None (OpenCLIP models have none; a damaged file is logged)."""
        if snap.model_name is None:
            return None
        try:
            return create_reranker(snap.model_name)
        except (ModelError, OSError, ValueError) as exc:
            log.warning("searching without re-ranking: %s", exc)
            return None

    def rerank(self, snap: Snapshot, reranker: Reranker, parts: Sequence[QueryPart], weights: Sequence[float],
               hits: list[Hit]) -> list[Hit]:
        """Re-order the first-stage top K; query tokens come from the inputs (an item's from the store)."""
        assert snap.searcher is not None
        model = snap.searcher.model
        store = TokenStore(self.data_dir / "tokens")
        stored = store.get_many([int(p.value) for p, w in zip(parts, weights) if p.kind == "item" and w > 0])
        query = []
        for part, w in zip(parts, weights):
            if w <= 0:
                continue
            if part.kind == "item":
                views = stored.get(int(part.value), {})
                own = [(m, {v: views[v]}) for m, v in QUERY_VIEW.items() if v in views]
                if own:
                    query.append((own[0][0], own[0][1], w))
                continue
            with self._encode_locks[part.kind]:
                query.append((part.kind, query_views(model, part.kind, part.value), w))
        if not query:
            return hits
        return rerank_hits(hits, query, reranker, store.get_many([h.id for h in hits[:RERANK_K]]), RerankOptions(RERANK_K))

    # ---- hybrid: vector + keyword hits by reciprocal rank fusion ------------
    def fuse_keywords(self, vector: list[Hit], words: str, target: str, n: int, exclude: frozenset[int],
                      info: dict) -> list[Hit]:
        """The ``n`` best of the ``vector`` hits fused with the keyword hits of ``words`` (RRF, k = 60).

        Fills ``info`` with the number of keyword hits and each returned id's [vector, keyword] rank.
        """
        pool = max(n, HYBRID_POOL)
        with self.session() as s:
            try:
                keyword = repo.keyword_search(s, words, None if target == "all" else target, pool + len(exclude))
            except SQLAlchemyError:
                cat = self.catalog()
                if cat is not None and not inspect(cat.engine).has_table("items_fts"):
                    raise ApiError("this catalog was built before keyword search existed; run `python -m indexer "
                                   f"add PATH --data-dir {self.data_dir}` once (it upgrades the database), then "
                                   "search again", 503, "keyword_index_missing") from None
                raise
            keyword_ids = [i for i, _ in keyword if i not in exclude]
            lists = [[h.id for h in vector], keyword_ids]
            top = rrf(lists, normalize=True)[:n]
            modality = {h.id: h.modality for h in vector}
            missing = [i for i, _ in top if i not in modality]
            modality.update({i: m["modality"] for i, m in repo.item_hits(s, missing).items()})
        where = list_ranks(lists)
        info.update(keyword_hits=len(keyword_ids), ranks={i: where[i] for i, _ in top})
        return [Hit(i, modality[i], score) for i, score in top if i in modality]

    def _mark_keywords(self, rows: list[dict], words: str, ranks: dict[int, list]) -> None:
        """Hybrid rows: rank per list, the query words each matched, marks in the file name, and a
        long recording's excerpt moved to a sentence holding a matched word when it shows none."""
        with self.session() as s:
            matched = repo.keyword_matches(s, [r["id"] for r in rows], words)
            moved = [r for r in rows if r.get("window") and matched.get(r["id"]) and not r.get("marks")]
            details = {r["id"]: repo.item_detail(s, r["id"]) for r in moved}
        for row in rows:
            vector_rank, keyword_rank = ranks.get(row["id"], [None, None])
            row["ranks"] = {"vector": vector_rank, "keyword": keyword_rank}
            row["matched"] = terms = matched.get(row["id"], [])
            row["name_marks"] = mark_words(row["name"], terms, NAME_WORD_RE)
            detail = details.get(row["id"])
            segments = [seg for seg in ((detail or {}).get("extra") or {}).get("segments") or []
                        if seg.get("text", "").strip()]
            if segments:
                best = max(segments, key=lambda seg: len(mark_words(seg["text"].strip(), terms)))
                text = best["text"].strip()
                if mark_words(text, terms):
                    row["start"], row["end"], row["text"] = float(best["start"]), float(best["end"]), text
                    row["marks"] = mark_words(text, terms)

    # ---- hits -> rows with metadata ---------------------------------------
    def rows(self, snap: Snapshot, hits: Sequence[Hit], query: np.ndarray, words: Sequence[str],
             first_rank: int = 0) -> list[dict]:
        """Join hits with the catalog: paths, segment times narrowed to the sentence that matched, snippets."""
        assert snap.searcher is not None
        with self.session() as s:
            meta = repo.item_hits(s, [h.id for h in hits])
        spans = self._best_spans(snap.searcher.model, query, [meta.get(h.id, {}) for h in hits])
        rows = []
        for rank, (h, span) in enumerate(zip(hits, spans), start=first_rank):
            m = meta.get(h.id)
            if m is None:  # removed between the index snapshot and this query
                continue
            row: dict[str, Any] = {"id": h.id, "rank": rank, "modality": h.modality, "score": round(h.score, 4),
                                   "path": m["path"], "name": Path(m["path"]).name}
            extra = m.get("extra") or {}
            if h.modality == "image":
                row["width"], row["height"] = extra.get("width"), extra.get("height")
            if m.get("content"):
                row["text"] = text_snippet(m["content"], words) if h.modality == "text" else m["content"]
            if m.get("start") is not None:
                row["start"], row["end"] = m["start"], m["end"]
                if span:
                    row["window"] = [m["start"], m["end"]]
                    row["start"], row["end"], row["text"] = span["start"], span["end"], span["text"]
            if row.get("text"):
                row["marks"] = mark_words(row["text"], words)
            rows.append(row)
        return rows

    def _best_spans(self, model: Model, query: np.ndarray, metas: Sequence[dict]) -> list[dict | None]:
        """Per audio hit, the ASR segment nearest the query (same rule as retrieval.spans.best_span).

        Segment texts are embedded once per item and kept (an item's segments never change:
        a re-indexed file gets new item ids), so a page costs one batched encoding at most.
        """
        out: list[dict | None] = [None] * len(metas)
        if "text" not in model.modalities:
            return out
        per_hit: dict[int, tuple[list[dict], np.ndarray | None]] = {}
        missing: list[tuple[int, list[str]]] = []
        for i, m in enumerate(metas):
            segments = [seg for seg in (m.get("extra") or {}).get("segments") or [] if seg.get("text", "").strip()]
            if m.get("modality") != "audio" or len(segments) < 2:
                continue
            with self._cache_lock:
                vecs = self._span_cache.get((model.name, m["id"]))
                if vecs is not None:
                    self._span_cache.move_to_end((model.name, m["id"]))
            per_hit[i] = (segments, vecs)
            if vecs is None:
                missing.append((i, [seg["text"].strip() for seg in segments]))
        if missing:
            with self._encode_locks["text"]:
                encoded = model.encode("text", [t for _, texts in missing for t in texts])
            pos = 0
            for i, texts in missing:
                vecs = encoded[pos:pos + len(texts)]
                pos += len(texts)
                per_hit[i] = (per_hit[i][0], vecs)
                with self._cache_lock:
                    self._span_cache[(model.name, metas[i]["id"])] = vecs
                    while len(self._span_cache) > SPAN_CACHE_SIZE:
                        self._span_cache.popitem(last=False)
        for i, (segments, vecs) in per_hit.items():
            seg = segments[int(np.argmax(vecs @ query))]
            out[i] = {"start": float(seg["start"]), "end": float(seg["end"]), "text": seg["text"].strip()}
        return out


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
    return sniff_mime(head) or "application/octet-stream"


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
