"""Speech by ASR cascade: Whisper (faster-whisper) transcript -> a text tower.

The transcript, its segments (with times) and the ASR's mean log-probability are
returned as per-item notes so the indexer can store them as metadata. Audio without
speech (silence, noise, music: :func:`has_speech`, voice-activity detection) is not
transcribed, so Whisper's hallucinated "You" never becomes a transcript.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import Tower
from .device import torch_device

SAMPLE_RATE = 16_000


class WhisperAsr:
    """faster-whisper over a local CTranslate2 model folder."""

    def __init__(self, model_dir: Path, beam_size: int = 5) -> None:
        from faster_whisper import WhisperModel

        device = "cuda" if torch_device().startswith("cuda") else "cpu"
        compute_type = "float16" if device == "cuda" else "int8"
        threads = int(os.environ.get("RETRIEVAL_ASR_THREADS", os.cpu_count() or 1))
        self.model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        self.beam_size = beam_size

    def transcribe(self, audio: np.ndarray) -> dict[str, Any]:
        """Transcript, segments and mean log-probability; nothing for audio without speech (Whisper would
        hallucinate "You" or "Thank you." on silence and noise), which is not decoded at all."""
        if not has_speech(np.asarray(audio, dtype=np.float32)):
            return {"transcript": "", "segments": [], "asr_logprob": None}
        segments, _info = self.model.transcribe(
            np.asarray(audio, dtype=np.float32),
            language="en",
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            # word-level alignment moves each segment's start/end onto its first/last word;
            # plain segment timestamps often swallow the silence before a sentence
            word_timestamps=True,
        )
        segs = [
            {"start": round(float(s.start), 2), "end": round(float(s.end), 2), "text": s.text.strip(),
             "avg_logprob": round(float(s.avg_logprob), 4),
             # [word, start, end] per word, from the same alignment: a transcript can seek to a word
             "words": [[w.word.strip(), round(float(w.start), 2), round(float(w.end), 2)]
                       for w in (s.words or []) if w.word.strip()]}
            for s in segments
        ]
        trim_to_speech(np.asarray(audio, dtype=np.float32), segs)
        for seg in segs:  # words inside their (trimmed) sentence: alignment lets the first word start in silence
            seg["words"] = [[w, min(max(a, seg["start"]), seg["end"]), max(min(b, seg["end"]), seg["start"])]
                            for w, a, b in seg["words"]]
        text = " ".join(s["text"] for s in segs if s["text"]).strip()
        logprob = float(np.mean([s["avg_logprob"] for s in segs])) if segs else float("-inf")
        return {"transcript": text, "segments": segs, "asr_logprob": round(logprob, 4) if segs else None}


SILENCE_DBFS = -60.0  # as retrieval.decoders.SILENCE_DBFS


def has_speech(audio: np.ndarray) -> bool:
    """Whether ``audio`` (16 kHz mono) holds speech: loud enough, and Silero voice-activity detection
    (faster-whisper's ``faster_whisper.vad``, ~0.1 s per 30 s on a CPU) finds at least one stretch of it."""
    if len(audio) == 0:
        return False
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms <= 0 or 20 * np.log10(rms) < SILENCE_DBFS:
        return False
    from faster_whisper.vad import get_speech_timestamps

    return bool(get_speech_timestamps(audio, sampling_rate=SAMPLE_RATE))


FRAME_S = 0.02
SPEECH_OVER_FLOOR_DB = 12.0  # a frame is speech when it is this much louder than the clip's noise floor
EDGE_PAD_S = 0.05


def trim_to_speech(audio: np.ndarray, segments: list[dict[str, Any]]) -> None:
    """Shrink each segment's [start, end] to the frames louder than the noise floor (in place).

    Word alignment still lets a sentence's last word run on into the silence after it (by a second, at
    times); the clip's own loudness says where speech stops. Never widens a segment; a segment with no
    loud frame keeps its times."""
    n = len(audio) // int(FRAME_S * SAMPLE_RATE)
    if n < 10 or not segments:
        return
    frames = audio[: n * int(FRAME_S * SAMPLE_RATE)].reshape(n, -1)
    level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    floor, peak = np.percentile(level, [10, 90])
    if peak - floor < 2 * SPEECH_OVER_FLOOR_DB:  # no clear silence in this clip: nothing to trim by
        return
    loud = level > floor + SPEECH_OVER_FLOOR_DB
    for seg in segments:
        a, b = int(seg["start"] / FRAME_S), min(n, int(np.ceil(seg["end"] / FRAME_S)))
        idx = np.flatnonzero(loud[a:b])
        if len(idx) == 0:
            continue
        seg["start"] = round(max(seg["start"], (a + idx[0]) * FRAME_S - EDGE_PAD_S), 2)
        seg["end"] = round(min(seg["end"], (a + idx[-1] + 1) * FRAME_S + EDGE_PAD_S), 2)


class AsrCascadeSpeech(Tower):
    modality = "audio"

    def __init__(self, asr: WhisperAsr, text: Tower) -> None:
        self.asr = asr
        self.text = text
        self.dim = text.dim

    def _embed(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        notes = [self.asr.transcribe(audio) for audio in batch]
        raw, _ = self.text._embed([n["transcript"] for n in notes])
        return raw, notes
