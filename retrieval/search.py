"""Search: encode query inputs, fuse them, and look up the per-modality indices.

One input is a plain nearest-neighbour lookup (score = cosine). Several inputs
(weights < 0 mean "not this") are answered in two stages: candidates from the
ANN for the fused vector and for each positive input on its own, then each
candidate scored by attention over the inputs (``retrieval.fusion``).

Pure library code: the first stage of the query API (:mod:`retrieval.service`),
which re-ranks, calibrates and presents these hits for every front end. It
returns item ids and cosine-unit scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import decoders
from .encoders import MODALITIES, Model, create_model
from .fusion import DEFAULT_TAU, attention_fuse_scores, fuse
from .index import VectorIndex
from .query import TARGETS
CANDIDATE_FACTOR = 4  # a multi-input query scores max(CANDIDATE_FACTOR * k, CANDIDATE_MIN) ANN hits per lookup
CANDIDATE_MIN = 100


@dataclass(frozen=True)
class QueryInput:
    """One query input: text, or a path to an image/audio file (weight < 0 = "not this")."""

    modality: str
    value: str
    weight: float = 1.0


@dataclass(frozen=True)
class Hit:
    id: int
    modality: str
    score: float


def decode_input(q: QueryInput) -> Any:
    """What the encoder takes for one input: the text itself, or the decoded image/audio file."""
    if q.modality == "text":
        if not q.value.strip():
            raise ValueError("the text query is empty; type some words")
        return q.value
    if q.modality == "image":
        return decoders.load_image(Path(q.value))
    if q.modality == "audio":
        return decoders.load_audio(Path(q.value))
    raise ValueError(f"unknown query modality '{q.modality}' (use text, image or audio)")


class Searcher:
    def __init__(self, indices: dict[str, VectorIndex], model: Model | None = None) -> None:
        if not indices:
            raise FileNotFoundError("no index found; run `python -m indexer add PATH` first")
        names = {i.manifest.model for i in indices.values()}
        if len(names) != 1:
            raise RuntimeError(f"indices were built with different models ({', '.join(sorted(names))}); rebuild them")
        self.model = model or create_model(names.pop())
        for index in indices.values():
            index.check_model(self.model.name, self.model.checksums)
        self.indices = indices

    def encode_input(self, q: QueryInput) -> np.ndarray:
        return self.model.encode(q.modality, [decode_input(q)])[0]

    def encode_inputs(self, inputs: Sequence[QueryInput]) -> np.ndarray:
        """(N, D) unit vectors, one per input, in order."""
        if not inputs:
            raise ValueError("give at least one query input (--text, --image or --audio)")
        return np.stack([self.encode_input(q) for q in inputs])

    def query_vector(self, inputs: Sequence[QueryInput]) -> np.ndarray:
        """The fused lookup vector of ``inputs`` (weighted sum, re-normalised)."""
        return fuse(self.encode_inputs(inputs), [q.weight for q in inputs])

    def search_vector(self, vector: np.ndarray, target: str = "all", k: int = 10,
                      exclude: set[int] | frozenset[int] = frozenset()) -> list[Hit]:
        if target not in TARGETS and target not in self.indices:  # an index name: video-frame, video-speech
            raise ValueError(f"unknown target '{target}'; use one of {', '.join(TARGETS)}")
        modalities = [m for m in MODALITIES if m in self.indices] if target == "all" else [target]
        hits: list[Hit] = []
        for modality in modalities:
            index = self.indices.get(modality)
            if index is None or index.count == 0:
                continue
            scores, ids = index.search(vector[None, :], k + len(exclude))
            hits += [Hit(int(i), modality, float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0 and int(i) not in exclude]
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    def search_inputs(self, vectors: np.ndarray, weights: Sequence[float] | None = None, target: str = "all",
                      k: int = 10, exclude: set[int] | frozenset[int] = frozenset(),
                      tau: float = DEFAULT_TAU) -> list[Hit]:
        """Top-``k`` hits for weighted query vectors (N, D); weight < 0 = "not this", 0 = ignored.

        One positive input and no negatives is exactly :meth:`search_vector`. Otherwise the
        candidates of each searched modality are the union of the ANN top-``n`` for the fused
        vector and for each positive input alone (``n = max(4k, 100)``), scored by
        :func:`retrieval.fusion.attention_fuse_scores` against the index's reference sample.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        w = np.ones(len(vectors)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(vectors),):
            raise ValueError(f"got {w.size} weights for {len(vectors)} query inputs")
        keep = w != 0
        vectors, w = vectors[keep], w[keep]
        lookup = fuse(vectors, w)  # also refuses a query without a positive input
        if len(vectors) == 1:
            return self.search_vector(vectors[0], target, k, exclude)
        if target not in TARGETS and target not in self.indices:
            raise ValueError(f"unknown target '{target}'; use one of {', '.join(TARGETS)}")
        modalities = [m for m in MODALITIES if m in self.indices] if target == "all" else [target]
        queries = np.vstack([lookup[None, :], vectors[w > 0]])
        n = max(CANDIDATE_FACTOR * k, CANDIDATE_MIN) + len(exclude)
        hits: list[Hit] = []
        for modality in modalities:
            index = self.indices.get(modality)
            if index is None or index.count == 0:
                continue
            _, ids = index.search(queries, n)
            candidates = np.array(sorted({int(i) for i in ids.ravel() if i >= 0} - set(exclude)), dtype=np.int64)
            if len(candidates) == 0:
                continue
            scores = attention_fuse_scores(vectors, w, index.vectors(candidates), tau, index.reference_sample())
            hits += [Hit(int(i), modality, float(s)) for i, s in zip(candidates, scores)]
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits[:k]

    def search(self, inputs: Sequence[QueryInput], target: str = "all", k: int = 10) -> list[Hit]:
        return self.search_inputs(self.encode_inputs(inputs), [q.weight for q in inputs], target, k)
