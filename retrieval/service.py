"""The one query path: every front end hands a :class:`~retrieval.query.Query` to :meth:`SearchService.search`.

Where a search is ranked, in order:

1. **encode** each input once (text/image/audio through the model's towers, cached
   by the input's key; an ``item`` from its stored embedding; a ``vector`` as given);
2. **first stage**: the FAISS lookup of :class:`retrieval.search.Searcher` (one input:
   cosine; several, or "not this": candidates from each input, attention fusion);
3. **re-rank** (single-input queries of a pair the model's re-ranker was trained on,
   checked before anything is widened or tokenised): the top ``rerank_k`` get
   ``similarity = first + weight * correction`` (:mod:`retrieval.rerank`);
4. **calibrate**: each hit's similarity becomes a relevance in [0, 1] for its
   (query kind, target modality, stage) (:mod:`retrieval.calibration`), and hits of
   all modalities are merged by it; videos (target ``video`` or ``all``) add their best moment
   each, a keyframe's and a speech window's relevances fused (:mod:`retrieval.moments`);
5. **hybrid** (optional): that list and the catalog's keyword hits for the typed words
   are merged by reciprocal rank fusion; the score is then the fused score in (0, 1];
6. **page and present**: ``offset``/``k``, then metadata, snippets, sentence spans and
   marked words (:mod:`retrieval.present`).

Metadata, stored vectors, token views and keyword hits come through a
:class:`retrieval.ports.MetadataPort`; this module imports no SQL and no web code.
One :class:`QueryResources` per model and process holds what queries share (the
model, its re-ranker and calibration, caches, per-modality encode locks: Hugging
Face tokenizers are not thread-safe); a :class:`SearchService` pairs it with one
snapshot of the indices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import decoders
from .calibration import Calibration
from .encoders import MODALITIES, Model, ModelError, l2_normalize
from .encoders.registry import model_part
from .fusion import fuse
from .index import VIDEO_INDICES
from .moments import Moment, narrow, video_moments
from .ports import KeywordIndexMissing, MetadataPort
from .present import Presenter, mark_words, query_words
from .query import Hit, Input, Query, QueryError, Result
from .rank_fusion import RRF_K, ranks as list_ranks, rrf
from .rerank import Reranker, corrections, create_reranker
from .search import Hit as Candidate, Searcher
from .tokens import QUERY_VIEW, Views

log = logging.getLogger(__name__)

QUERY_CACHE_SIZE = 256
HYBRID_POOL = 1000  # vector and keyword hits fused per hybrid query (FAISS top-1000 costs milliseconds)


class QueryResources:
    """What every query of one model in one process shares (thread-safe)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.locks = {m: threading.Lock() for m in MODALITIES}
        self._cache: OrderedDict[tuple, tuple[np.ndarray, dict, np.ndarray | None]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.presenter = Presenter(model, self.locks["text"])
        self._reranker: Reranker | None | bool = False  # False: not looked up yet
        self.calibration = _load_calibration(model.name)

    @property
    def reranker(self) -> Reranker | None:
        """The model's trained re-ranker, or None (OpenCLIP models have none; a damaged file is logged)."""
        if self._reranker is False:
            try:
                self._reranker = create_reranker(self.model.name)
            except (ModelError, OSError, ValueError) as exc:
                log.warning("searching without re-ranking: %s", exc)
                self._reranker = None
        return self._reranker  # type: ignore[return-value]

    def encode(self, q: Input, payload: Any, with_tokens: bool = False) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """One input's unit vector, what was learnt on the way (an audio query's transcript) and, when
        ``with_tokens`` (the query will be re-ranked), its token features from the same forward pass (a typed
        query ran MiniLM twice before: ~55 ms of a ~40 ms-per-pass query on 2 busy cores)."""
        key = (q.kind, q.key) if q.key is not None else None
        if key is not None:
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None and (not with_tokens or hit[2] is not None):  # else: one pass gives both
                    self._cache.move_to_end(key)
                    return hit
        try:
            tower = self.model.tower(q.kind)
        except ModelError as exc:
            raise QueryError(str(exc), "unsupported_modality", 422) from None
        tokens = None
        with self.locks[q.kind]:
            if with_tokens and tower.has_tokens():
                enc, toks = tower.encode_with_tokens([payload()])
                tokens = toks[0]
            else:
                enc = tower.encode_with_notes([payload()])
        note = dict(enc.notes[0] or {})
        info = {"transcript": note["transcript"]} if q.kind == "audio" and "transcript" in note else {}
        if q.kind == "audio" and "transcript" in note and not note["transcript"].strip():
            raise QueryError("no speech was recognised in the recording; speak clearly, closer to the microphone, "
                             "or pick another file", "no_speech", 422)
        out = (enc.vectors[0], info, tokens)
        if key is not None:
            with self._cache_lock:
                self._cache[key] = out
                while len(self._cache) > QUERY_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return out

    def query_tokens(self, modality: str, payload: Any) -> Views:
        with self.locks[modality]:
            return {QUERY_VIEW[modality]: self.model.encode_tokens(modality, [payload])[0]}


def _load_calibration(model_name: str) -> Calibration:
    try:
        return Calibration.load(model_part(model_name, "calibration"))
    except (ModelError, OSError, ValueError, KeyError) as exc:
        log.warning("scores are not calibrated: %s", exc)
        return Calibration()


@dataclass
class _Encoded:
    vectors: np.ndarray
    weights: list[float]
    modalities: list[str]  # per input, the modality it stands for (calibration)
    infos: list[dict]
    payloads: list[Any]  # per input, a zero-argument loader of what the towers take (None: items, vectors)
    exclude: frozenset[int]
    tokens: list[np.ndarray | None]  # per input, token features encoded with its vector (when it may be re-ranked)


class SearchService:
    """Answers queries against one snapshot of the indices."""

    def __init__(self, searcher: Searcher, port: MetadataPort, resources: QueryResources | None = None,
                 revision: int = 0) -> None:
        self.searcher = searcher
        self.port = port
        self.resources = resources or QueryResources(searcher.model)
        if self.resources.model is not searcher.model:
            raise ValueError("the query resources belong to another model than the indices")
        self.revision = revision
        self._notice_cache: list[str] | None = None

    @property
    def model(self) -> Model:
        return self.searcher.model

    def search(self, query: Query) -> Result:
        t0 = time.perf_counter()
        enc = self._encode(query)
        t1 = time.perf_counter()
        reranker = self._reranker_for(query, enc)
        pool = query.offset + query.k + 1
        words = " ".join(q.value for q in query.inputs if q.kind == "text" and q.weight > 0) if query.hybrid else ""
        terms = self.port.keyword_terms(words) if words else []
        if terms:
            pool = max(pool, HYBRID_POOL)
        if reranker is not None:
            pool = max(pool, query.rerank_k)
        # per modality: the first stage orders by raw similarity, which only compares within one modality;
        # the modalities are merged after calibration (else the cut to ``pool`` would compare raw scores)
        targets = [m for m in self.searcher.indices if m in MODALITIES and query.target in (m, "all")]
        first = [h for m in targets
                 for h in self.searcher.search_inputs(enc.vectors, enc.weights, target=m, k=pool, exclude=enc.exclude)]
        stage = dict.fromkeys((h.id for h in first), "first")
        if reranker is not None:
            first, stage = self._rerank(query, enc, reranker, first)
        hits = self._calibrate(first, stage, enc)
        moments = self._video(query, enc, pool) if query.target in ("video", "all") else {}
        if moments:
            hits = sorted(hits + [m.hit for m in moments.values()], key=lambda h: -h.score)
        hybrid = {"terms": [], "keyword_hits": 0, "rrf_k": RRF_K} if query.hybrid else None
        if terms:
            hits, hybrid = self._hybrid(hits, words, terms, query, enc.exclude)
        if query.dedup is not None:
            hits = self._dedup(hits, float(query.dedup))
        page, has_more = hits[query.offset:query.offset + query.k], len(hits) > query.offset + query.k
        for rank, h in enumerate(page, start=query.offset):
            h.rank = rank
        marked = query_words(query.inputs, enc.infos)
        if query.details:  # one batched metadata read for the hits shown (``details_top``: only the first N)
            head = len(page) if query.details_top is None else query.details_top
            page = self.resources.presenter.present(page[:head], self.port, fuse(enc.vectors, enc.weights), marked,
                                                    words if terms else "") + page[head:]
            self._present_moments(page[:head], moments, marked)
        t2 = time.perf_counter()
        return Result(
            hits=page, has_more=has_more, offset=query.offset, k=query.k, target=query.target, inputs=enc.infos,
            words=sorted({w.lower() for w in marked if w.lower() in self.resources.presenter.markable(marked)}),
            model=self.model.name, revision=self.revision,
            rerank={"applied": reranker is not None, "k": query.rerank_k if reranker is not None else 0},
            hybrid=hybrid, calibrated=self.resources.calibration.calibrated,
            timings_ms={"encode": round((t1 - t0) * 1000, 1), "search": round((t2 - t1) * 1000, 1)},
            notices=self._notices() if "image" in targets else [])

    def _video(self, query: Query, enc: _Encoded, pool: int) -> dict[int, Moment]:
        """The best moment of each video the query finds (:mod:`retrieval.moments`), by hit id."""
        ids = [h.id for name in VIDEO_INDICES if name in self.searcher.indices
               for h in self.searcher.search_inputs(enc.vectors, enc.weights, target=name, k=pool, exclude=enc.exclude)]
        moments = video_moments(self.searcher.indices, self.port, self.resources.calibration, ids, enc.vectors,
                                enc.weights, enc.modalities, enc.exclude)
        return {m.hit.id: m for m in moments}

    def _present_moments(self, page: list[Hit], moments: dict[int, Moment], words: list[str]) -> None:
        """Video hits: the moment's times, view and transcript (the presenter filled in the keyframe item's)."""
        shown = [moments[h.id] for h in page if h.id in moments]
        speech = self.port.items([m.speech_id for m in shown if m.speech_id is not None]) if shown else {}
        for h in page:
            m = moments.get(h.id)
            if m is not None:
                narrow(m, speech.get(m.speech_id) if m.speech_id is not None else None)
                h.start, h.end, h.view, h.text, h.window = m.start, m.end, m.view, m.text, None
                h.marks = mark_words(m.text, words) if m.text else None

    def _notices(self) -> list[str]:
        """Once per snapshot: what the model says about the archive (photographs in a pictogram index)."""
        if self._notice_cache is None:
            from .model_fit import photo_notice

            count = getattr(self.port, "photo_count", None)
            notice = photo_notice(self.model.name, count()) if count is not None else None
            self._notice_cache = [notice] if notice else []
        return list(self._notice_cache)

    # ---- 1. inputs -> vectors ---------------------------------------------------
    def _encode(self, query: Query) -> _Encoded:
        item_ids = [i for q in query.inputs for i in q.item_ids]
        stored = self.port.item_vectors(item_ids) if item_ids else {}
        item_modality = {i: m["modality"] for i, m in self.port.items(item_ids).items()} if item_ids else {}
        vectors, modalities, infos, payloads, tokens = [], [], [], [], []
        for q in query.inputs:
            info: dict[str, Any] = {"kind": q.kind, "label": q.label, "weight": q.weight}
            payload, toks = None, None
            if q.kind == "item":
                missing = [i for i in q.item_ids if i not in stored]
                if missing:
                    raise QueryError(f"item {missing[0]} does not exist (it may have been removed by a later indexer "
                                     "run)", "unknown_item", 404)
                vec = fuse(np.stack([stored[i] for i in q.item_ids]))
                modality = item_modality.get(q.item_ids[0], "text")
            elif q.kind == "vector":
                vec = self._check_vector(q.value)
                modality = q.modality or "text"
            else:
                payload = _Lazy(q)
                vec, extra, toks = self.resources.encode(q, payload, self._reranker_covering(query, q.kind) is not None)
                info.update(extra)
                modality = q.kind
            vectors.append(vec)
            modalities.append(modality)
            infos.append(info)
            payloads.append(payload)
            tokens.append(toks)
        return _Encoded(np.stack(vectors).astype(np.float32), [q.weight for q in query.inputs], modalities, infos,
                        payloads, frozenset(item_ids), tokens)

    def _check_vector(self, value: Any) -> np.ndarray:
        try:
            vec = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise QueryError("a query vector must be a list of numbers") from None
        if vec.shape[0] != self.model.dim:
            raise QueryError(f"the query vector has {vec.shape[0]} numbers; this index's model ({self.model.name}) "
                             f"uses {self.model.dim}: send a vector encoded by {self.model.name}", "bad_vector")
        if not np.all(np.isfinite(vec)) or not np.any(vec):
            raise QueryError("the query vector must be finite and not all zeros", "bad_vector")
        return l2_normalize(vec)

    # ---- 3. re-ranking ------------------------------------------------------------
    def _reranker_for(self, query: Query, enc: _Encoded) -> Reranker | None:
        """The re-ranker when this query can use it; decided before the pool is widened or tokens encoded."""
        if query.inputs[0].kind == "vector":
            return None
        return self._reranker_covering(query, enc.modalities[0])

    def _reranker_covering(self, query: Query, modality: str) -> Reranker | None:
        """The re-ranker when the query (one input standing for ``modality``) may be re-ranked on a target."""
        if not query.rerank or query.rerank_weight == 0 or not query.single:
            return None
        reranker = self.resources.reranker
        if reranker is None:
            return None
        targets = [m for m in self.searcher.indices if query.target in (m, "all")]
        return reranker if any(reranker.covers(modality, t) for t in targets) else None

    def _rerank(self, query: Query, enc: _Encoded, reranker: Reranker,
                hits: list[Candidate]) -> tuple[list[Candidate], dict[int, str]]:
        q = query.inputs[0]
        modality = enc.modalities[0]
        if q.kind == "item":
            views = self.port.tokens([q.item_ids[0]]).get(q.item_ids[0], {})
            view = QUERY_VIEW.get(modality)
            qviews = {view: views[view]} if view in views else None
        else:
            qviews = ({QUERY_VIEW[modality]: enc.tokens[0]} if enc.tokens[0] is not None  # from the encoding pass
                      else self.resources.query_tokens(modality, enc.payloads[0]()))
        stage = dict.fromkeys((h.id for h in hits), "first")
        if not qviews:
            return hits, stage
        head, tail = hits[:query.rerank_k], hits[query.rerank_k:]
        delta = corrections(head, [(modality, qviews, q.weight)], reranker, self.port.tokens([h.id for h in head]),
                            query.rerank_weight)
        head = [replace(h, score=h.score + delta[h.id]) if h.id in delta else h for h in head]
        stage.update(dict.fromkeys(delta, "rerank"))
        return head + tail, stage

    # ---- 4. calibration -------------------------------------------------------------
    def _calibrate(self, hits: list[Candidate], stage: dict[int, str], enc: _Encoded) -> list[Hit]:
        cal = self.resources.calibration
        inputs = list(zip(enc.modalities, enc.weights))
        out: list[Hit] = []
        groups: dict[tuple[str, str], list[Candidate]] = {}
        for h in hits:
            groups.setdefault((h.modality, stage.get(h.id, "first")), []).append(h)
        for (target, st), group in groups.items():
            rel = cal.relevance([h.score for h in group], inputs, target, st)
            out += [Hit(h.id, h.modality, float(r), float(h.score), stage=st) for h, r in zip(group, rel)]
        # the re-ranked head stays above the tail it was chosen from, per modality
        floor: dict[str, float] = {}
        for h in out:
            if stage.get(h.id) == "rerank":
                floor[h.modality] = min(floor.get(h.modality, 1.0), h.score)
        for h in out:
            if stage.get(h.id) != "rerank" and h.modality in floor:
                h.score = min(h.score, floor[h.modality])
        out.sort(key=lambda h: (-h.score, stage.get(h.id) != "rerank", -h.similarity, h.id))
        return out

    # ---- near-duplicates (optional) ---------------------------------------------------
    def _dedup(self, hits: list[Hit], threshold: float) -> list[Hit]:
        """Keep a hit only if no better hit of its modality has a stored vector within ``threshold`` cosine
        (clip-retrieval's ``deduplicate``: near-duplicate pictures shown once)."""
        drop: set[int] = set()
        for modality, index in self.searcher.indices.items():
            ids = [h.id for h in hits if h.modality == modality]
            if len(ids) < 2:
                continue
            try:
                vecs = l2_normalize(index.vectors(np.asarray(ids, dtype=np.int64)))
            except KeyError:  # removed since this snapshot: keep them all
                continue
            sim = vecs @ vecs.T
            keep = np.ones(len(ids), dtype=bool)
            for i in range(len(ids)):
                if keep[i]:
                    keep[i + 1:] &= sim[i, i + 1:] < threshold
            drop |= {i for i, k in zip(ids, keep) if not k}
        return [h for h in hits if h.id not in drop]

    # ---- 5. hybrid --------------------------------------------------------------------
    def _hybrid(self, hits: list[Hit], words: str, terms: list[str], query: Query,
                exclude: frozenset[int]) -> tuple[list[Hit], dict]:
        n = query.offset + query.k + 1
        target = None if query.target == "all" else query.target
        try:
            keyword = self.port.keyword_search(words, target, max(n, HYBRID_POOL) + len(exclude))
        except KeywordIndexMissing as exc:
            raise QueryError(str(exc), "keyword_index_missing", 503) from None
        keyword_ids = [i for i, _ in keyword if i not in exclude]
        lists = [[h.id for h in hits], keyword_ids]
        top = rrf(lists, normalize=True)[:n]
        by_id = {h.id: h for h in hits}
        missing = [i for i, _ in top if i not in by_id]
        modality = {i: m["modality"] for i, m in self.port.items(missing).items()} if missing else {}
        where = list_ranks(lists)
        out = []
        for i, score in top:
            base = by_id.get(i)
            if base is None and i not in modality:
                continue  # removed since the keyword index was read
            hit = replace(base, score=float(score)) if base else Hit(i, modality[i], float(score), 0.0)
            hit.ranks = {"vector": where[i][0], "keyword": where[i][1]}
            out.append(hit)
        return out, {"terms": terms, "keyword_hits": len(keyword_ids), "rrf_k": RRF_K}


class _Lazy:
    """An image/audio/text input's payload, decoded on first use (paths through :mod:`retrieval.decoders`)."""

    def __init__(self, q: Input) -> None:
        self.q = q
        self._value: Any = None
        self._done = False

    def __call__(self) -> Any:
        if not self._done:
            self._value = _decode(self.q)
            self._done = True
        return self._value


def _decode(q: Input) -> Any:
    if q.kind == "text":
        if not isinstance(q.value, str) or not q.value.strip():
            raise QueryError("the text query is empty; type some words", "empty_query")
        return q.value
    if isinstance(q.value, (str, Path)):
        path = Path(q.value)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return decoders.load_image(path) if q.kind == "image" else decoders.load_audio(path)
    return q.value
