"""Search: encode query inputs, fuse them, and look up the per-modality indices.

Pure library code: it returns item ids and scores; the application layer (CLI,
web app) joins them with metadata from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import decoders
from .encoders import MODALITIES, Model, create_model
from .fusion import fuse
from .index import VectorIndex

TARGETS = (*MODALITIES, "all")


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
        if q.modality == "text":
            if not q.value.strip():
                raise ValueError("the text query is empty; type some words")
            return self.model.encode("text", [q.value])[0]
        if q.modality == "image":
            return self.model.encode("image", [decoders.load_image(Path(q.value))])[0]
        if q.modality == "audio":
            return self.model.encode("audio", [decoders.load_audio(Path(q.value))])[0]
        raise ValueError(f"unknown query modality '{q.modality}' (use text, image or audio)")

    def query_vector(self, inputs: Sequence[QueryInput]) -> np.ndarray:
        if not inputs:
            raise ValueError("give at least one query input (--text, --image or --audio)")
        vectors = np.stack([self.encode_input(q) for q in inputs])
        return fuse(vectors, [q.weight for q in inputs])

    def search_vector(self, vector: np.ndarray, target: str = "all", k: int = 10,
                      exclude: set[int] | frozenset[int] = frozenset()) -> list[Hit]:
        if target not in TARGETS:
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

    def search(self, inputs: Sequence[QueryInput], target: str = "all", k: int = 10) -> list[Hit]:
        return self.search_vector(self.query_vector(inputs), target, k)
