"""The one encoder interface: ``encode(batch) -> float32 (N, D)`` unit vectors.

Every tower implements ``_embed`` (raw vectors, plus optional per-item notes such
as an ASR transcript); :meth:`Tower.encode` is the single place where vectors are
L2-normalised. Towers that feed the re-ranker also implement
:meth:`Tower.encode_tokens`: per-item token features (image patches, speech
frames pooled to a few dozen, text word pieces) projected into the same joint
space, unit length each, with the item's pooled vector first. :meth:`Tower.encode_with_tokens` gives both
for one batch: the bundled towers compute them in one forward pass (``_embed_with_tokens``); any other tower
falls back to ``encode`` + ``encode_tokens``. Inputs per modality: ``str`` for text, RGB ``PIL.Image.Image`` for
images, mono 16 kHz float32 ``numpy`` arrays for audio (see ``retrieval.decoders``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
import threading
from typing import Any, Callable, Sequence

import numpy as np

MODALITIES = ("image", "audio", "text")


class ModelError(RuntimeError):
    """A model cannot be created or used (unknown name, bad weights, offline)."""


@dataclass
class Encoded:
    """Unit vectors for a batch and optional per-item metadata (e.g. transcripts)."""

    vectors: np.ndarray
    notes: list[dict[str, Any] | None] = field(default_factory=list)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class Tower(ABC):
    """One modality's encoder into the model's joint space."""

    modality: str
    dim: int

    @abstractmethod
    def _embed(self, batch: Sequence[Any]) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
        """Raw (unnormalised) vectors (N, dim) and per-item notes (or Nones)."""

    def encode_with_notes(self, batch: Sequence[Any]) -> Encoded:
        if len(batch) == 0:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), [])
        raw, notes = self._embed(batch)
        return self._encoded(raw, notes, len(batch))

    def _encoded(self, raw: np.ndarray, notes: Sequence[dict[str, Any] | None] | None, n: int) -> Encoded:
        vectors = l2_normalize(raw)
        if vectors.shape != (n, self.dim):
            raise ModelError(f"{type(self).__name__} returned shape {vectors.shape}, expected ({n}, {self.dim})")
        return Encoded(vectors, list(notes) if notes else [None] * n)

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        return self.encode_with_notes(batch).vectors

    def has_tokens(self) -> bool:
        return type(self)._tokens is not Tower._tokens

    def _tokens(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Raw (T_i, dim) token features per item (pooled vector first); towers without tokens do not override it."""
        raise ModelError(f"{type(self).__name__} has no token features (re-ranking needs them)")

    def encode_tokens(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Per item: (T_i, dim) float32 unit-length token features in the joint space, the pooled vector first."""
        if len(batch) == 0:
            return []
        return [l2_normalize(t) for t in self._tokens(batch)]

    def _embed_with_tokens(self, batch: Sequence[Any]) -> tuple[np.ndarray, list[dict[str, Any] | None],
                                                                 list[np.ndarray]]:
        """Raw vectors, notes and raw token features of one batch. Towers whose forward pass yields both
        override this to run it once; the default runs the tower twice."""
        raw, notes = self._embed(batch)
        return raw, notes, self._tokens(batch)

    def encode_with_tokens(self, batch: Sequence[Any]) -> tuple[Encoded, list[np.ndarray]]:
        """``encode_with_notes(batch)`` and ``encode_tokens(batch)`` together (what indexing needs), in one
        forward pass where the tower allows; the same values as the two calls, within float tolerance."""
        if len(batch) == 0:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), []), []
        if not self.has_tokens():
            self._tokens(batch)  # raises: this tower has no token features
        raw, notes, tokens = self._embed_with_tokens(batch)
        return self._encoded(raw, notes, len(batch)), [l2_normalize(t) for t in tokens]


class Model:
    """A named set of towers sharing one embedding space.

    Towers are given as zero-argument factories and built on first use, so a
    text-only run never loads the speech recogniser. Weight files are verified
    by the registry before the model is handed out.
    """

    def __init__(self, name: str, dim: int, towers: dict[str, Callable[[], Tower]], checksums: dict[str, str]) -> None:
        self.name = name
        self.dim = dim
        self.checksums = checksums
        self._factories = dict(towers)
        self._towers: dict[str, Tower] = {}
        self._lock = threading.RLock()  # a cascade tower builds the text tower it feeds

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self._factories)

    def tower(self, modality: str) -> Tower:
        if modality not in self._factories:
            raise ModelError(
                f"model '{self.name}' has no {modality} encoder (it encodes: {', '.join(self.modalities)}); "
                f"use a model that does, e.g. --model openclip:ViT-B-32/laion2b_s34b_b79k for images"
            )
        with self._lock:
            if modality not in self._towers:
                self._towers[modality] = self._factories[modality]()
            return self._towers[modality]

    def encode(self, modality: str, batch: Sequence[Any]) -> np.ndarray:
        return self.tower(modality).encode(batch)

    def encode_tokens(self, modality: str, batch: Sequence[Any]) -> list[np.ndarray]:
        return self.tower(modality).encode_tokens(batch)

    def encode_with_tokens(self, modality: str, batch: Sequence[Any]) -> tuple[Encoded, list[np.ndarray]]:
        return self.tower(modality).encode_with_tokens(batch)
