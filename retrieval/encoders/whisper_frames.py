"""Whisper tiny.en encoder frames for the learned speech head.

The CTranslate2 Whisper encoder accepts inputs shorter than Whisper's 30 s: we pad
(or cut) each window to ``WINDOW_S`` seconds, which is ~10x cheaper than 30 s. The
same padding is used in training and at run time. Longer audio is cut into
consecutive windows whose frames are concatenated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_S = 6.0
MEL_PER_S = 100  # Whisper: 10 ms hop
FRAMES_PER_S = 50  # encoder output after the stride-2 convolution
TAIL_FRAMES = 5  # keep a little of the padding after the speech ends
MAX_WINDOWS = 10  # at most 60 s of audio feed the head (the cascade sees it all)


class WhisperFrames:
    """Encoder frames (T, 384) float32 per clip from a faster-whisper ``WhisperModel``."""

    def __init__(self, whisper_model: Any) -> None:
        self.model = whisper_model
        self.n_mel = int(WINDOW_S * MEL_PER_S)

    def _windows(self, audio: np.ndarray) -> list[tuple[np.ndarray, int]]:
        win = int(WINDOW_S * SAMPLE_RATE)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = max(1, min(MAX_WINDOWS, math.ceil(len(audio) / win)))
        out = []
        for i in range(n):
            chunk = audio[i * win:(i + 1) * win]
            keep = min(self.n_mel // 2, math.ceil(len(chunk) / SAMPLE_RATE * FRAMES_PER_S) + TAIL_FRAMES)
            padded = np.zeros(win, np.float32)  # zero samples, as Whisper pads (its log-mel clamp sees them)
            padded[: len(chunk)] = chunk
            mel = np.ascontiguousarray(self.model.feature_extractor(padded, padding=0)[:, : self.n_mel], dtype=np.float32)
            out.append((mel, max(1, keep)))
        return out

    def frames(self, batch: Sequence[np.ndarray], max_batch: int = 8) -> list[np.ndarray]:
        import ctranslate2

        jobs = [(i, mel, keep) for i, audio in enumerate(batch) for mel, keep in self._windows(audio)]
        parts: list[list[np.ndarray]] = [[] for _ in batch]
        for start in range(0, len(jobs), max_batch):
            chunk = jobs[start:start + max_batch]
            x = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack([m for _, m, _ in chunk])))
            enc = np.array(self.model.model.encode(x, to_cpu=True), dtype=np.float32)
            for (i, _, keep), f in zip(chunk, enc):
                parts[i].append(f[:keep])
        return [np.concatenate(p, axis=0) for p in parts]
