"""Video hits: what is shown (keyframes) and what is said (speech windows) of one moment, fused.

A video is two sets of segments in two indices (:data:`retrieval.index.VIDEO_INDICES`): keyframes
embedded by the image tower, speech windows by the speech tower. For a query:

1. candidates: the top ``pool`` segments of each index (the first stage of every other modality);
2. every segment of each candidate video is scored exactly (cosine, or attention fusion for
   several inputs, as :class:`retrieval.search.Searcher` scores), so a moment's other view is
   known even when it was not in its index's top ``pool``;
3. each score is calibrated as the modality its tower embeds (a keyframe as a picture, ``q->image``;
   a speech window as a recording, ``q->audio``: :mod:`retrieval.calibration`), so a moment's
   relevance means what an image's or a clip's relevance means and the "all" view can merge them;
4. a moment is a keyframe's span; its speech relevance is the best of the speech windows whose
   words (ASR sentence times, else the window) are heard during it, and the two are fused by :func:`fuse_views`, ``hi + w * lo * (1 - hi)``
   (a noisy-or on the weaker view, :data:`FUSION_WEIGHT` ``w`` = 1: chosen on the fixture videos,
   README "Video"): never below the better view alone, so a moment both seen and said outranks
   one only seen or only said;
5. a view *matched* when its relevance is at least 0.5 (even odds: calibration is
   class-balanced); ``view`` is ``both``, ``frame`` or ``speech`` (the better one when neither
   reaches it). A speech-led moment's ``start``/``end`` are narrowed to the ASR sentence that
   overlaps it; otherwise they are the keyframe's span (the scene).

One hit per video: its best moment (the item page lists the others). The hit's id is the
keyframe item's, so its thumbnail is the matched second's frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .calibration import Calibration
from .fusion import DEFAULT_TAU, attention_fuse_scores
from .index import VectorIndex
from .ports import MetadataPort
from .query import Hit

FUSION_WEIGHT = 1.0
MATCHED = 0.5
TOWER_TARGET = {"frame": "image", "speech": "audio"}


@dataclass
class Moment:
    """A video's best moment: the hit, where it is, which views matched and what is said there."""

    hit: Hit
    start: float
    end: float
    view: str
    speech_id: int | None = None  # the speech window heard there (its transcript is the hit's text)
    text: str | None = None


def fuse_views(frame: np.ndarray | float, speech: np.ndarray | float, weight: float = FUSION_WEIGHT) -> np.ndarray:
    """One relevance from a moment's frame and speech relevances: ``hi + weight * lo * (1 - hi)``."""
    f, s = np.asarray(frame, dtype=np.float64), np.asarray(speech, dtype=np.float64)
    hi, lo = np.maximum(f, s), np.minimum(f, s)
    return hi + weight * lo * (1.0 - hi)


def _heard(speech: dict, start: float, end: float) -> bool:
    """Whether words of a speech window are heard during [start, end): its ASR sentences when it has
    them (a 10 s window spans scenes it says nothing in), else the window itself."""
    spans = speech.get("spans") or [[speech["start"], speech["end"]]]
    return any(a < end and b > start for a, b in spans)


def _scores(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, weights: Sequence[float],
            port: MetadataPort) -> np.ndarray:
    try:
        vecs = index.vectors(ids)
    except KeyError:  # removed since this snapshot: the stored ones
        stored = port.item_vectors([int(i) for i in ids])
        vecs = np.stack([stored.get(int(i), np.zeros(vectors.shape[1], np.float32)) for i in ids])
    w = np.asarray(weights, dtype=np.float64)
    if len(vectors) == 1 and w[0] > 0:
        return vecs @ vectors[0]
    return attention_fuse_scores(vectors, w, vecs, DEFAULT_TAU, index.reference_sample())


def video_moments(indices: dict[str, VectorIndex], port: MetadataPort, calibration: Calibration,
                  candidates: Sequence[int], vectors: np.ndarray, weights: Sequence[float],
                  modalities: Sequence[str], exclude: frozenset[int] = frozenset(),
                  weight: float = FUSION_WEIGHT) -> list[Moment]:
    """The best moment of each video that holds one of ``candidates`` (segment ids from either video
    index), best first. ``modalities``: per query input, what it was encoded from (calibration)."""
    if not candidates:
        return []
    vectors = np.asarray(vectors, dtype=np.float32)
    keep = np.asarray(weights, dtype=np.float64) != 0
    vectors, weights = vectors[keep], [w for w, k in zip(weights, keep) if k]
    modalities = [m for m, k in zip(modalities, keep) if k]
    meta = port.items(list(candidates))
    files = sorted({m["file_id"] for m in meta.values() if m.get("file_id") is not None})
    segments = port.file_segments(files) if files else {}
    inputs = list(zip(modalities, weights))
    rel: dict[int, float] = {}
    sim: dict[int, float] = {}
    for view, target in TOWER_TARGET.items():
        index = indices.get(f"video-{view}")
        ids = np.asarray([s["id"] for segs in segments.values() for s in segs if s["view"] == view], np.int64)
        if index is None or len(ids) == 0:
            continue
        raw = _scores(index, ids, vectors, weights, port)
        r = calibration.relevance(raw, inputs, target)
        sim.update(zip(ids.tolist(), raw.tolist()))
        rel.update(zip(ids.tolist(), r.tolist()))
    best: list[tuple[float, int, dict, float, float, dict | None]] = []
    for fid, segs in segments.items():
        frames = [s for s in segs if s["view"] == "frame" and s["id"] in rel and s["id"] not in exclude]
        speech = [s for s in segs if s["view"] == "speech" and s["id"] in rel]
        top = None
        for fr in frames:
            said = [sp for sp in speech if _heard(sp, fr["start"], fr["end"])]
            sp = max(said, key=lambda x: rel[x["id"]]) if said else None
            f_rel, s_rel = rel[fr["id"]], rel[sp["id"]] if sp else 0.0
            score = float(fuse_views(f_rel, s_rel, weight))
            if top is None or score > top[0]:
                top = (score, fid, fr, f_rel, s_rel, sp)
        if top is not None:
            best.append(top)
    best.sort(key=lambda t: (-t[0], t[2]["id"]))
    out = []
    for score, _fid, fr, f_rel, s_rel, sp in best:
        view = ("both" if min(f_rel, s_rel) >= MATCHED else "frame" if f_rel >= s_rel else "speech")
        hit = Hit(fr["id"], "video", score, max(sim[fr["id"]], sim[sp["id"]] if sp else -1.0))
        hit.start, hit.end, hit.view = fr["start"], fr["end"], view
        out.append(Moment(hit, fr["start"], fr["end"], view, sp["id"] if sp else None))
    return out


def narrow(moment: Moment, speech_meta: dict | None) -> None:
    """Fill a moment's transcript from its speech window; a speech-led moment's times become the ASR
    sentence's that overlaps the keyframe span (the first one, else the window's)."""
    if not speech_meta:
        return
    segs = [s for s in (speech_meta.get("extra") or {}).get("segments") or [] if (s.get("text") or "").strip()]
    inside = [s for s in segs if s["start"] < moment.end and s["end"] > moment.start]
    if inside:
        moment.text = " ".join(s["text"].strip() for s in inside)
    elif speech_meta.get("content"):
        moment.text = speech_meta["content"]
    if moment.view == "speech":
        if inside:
            moment.start, moment.end = float(inside[0]["start"]), float(inside[-1]["end"])
        elif speech_meta.get("start") is not None:
            moment.start, moment.end = float(speech_meta["start"]), float(speech_meta["end"])
