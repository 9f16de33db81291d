"""Audio decoding with bounded memory: PyAV decodes, torchaudio's sinc resampler runs block by block.

* :func:`stream_audio` -> mono float32 chunks at 16 kHz; refuses absurd sample rates, over-long
  recordings and decodes past a deadline. :func:`load_audio` joins them.
* :func:`split_segments` cuts a clip into overlapping windows; :func:`stream_segments` yields the same
  windows while decoding (one window in memory, whatever the file's length) and skips silent ones.

Used through :mod:`retrieval.decoders`, the one I/O boundary, by the indexer and the web upload path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .decode_errors import DecodeError
from .decode_errors import check_regular as _regular
from .decode_errors import short_error as _short

SAMPLE_RATE = 16_000
SEGMENT_SECONDS = 30.0
SEGMENT_OVERLAP_SECONDS = 5.0
MAX_AUDIO_SECONDS = 4 * 3600  # 4 h of 16 kHz float32 is ~0.9 GB in memory
MIN_SAMPLE_RATE = 4_000  # below this a recording has no speech band left (a 1 Hz header is damage)
MAX_SAMPLE_RATE = 768_000  # the highest rate real converters write
MAX_RESAMPLE_KERNEL = 1_000_000  # p * q of the resampling ratio p/q: the kernel is ~q * (p + 2 width) floats (4 MB)
SILENCE_DBFS = -60.0  # a window quieter than this (RMS) holds nothing to hear: not indexed
MAX_DECODE_SECONDS = 600.0  # one file's decode may take at most this long


@dataclass(frozen=True)
class AudioSegment:
    start: float
    end: float
    samples: np.ndarray


class _BlockResampler:
    """torchaudio's sinc resampler applied block by block, so memory is bounded by the block, not the file.

    The ratio is reduced to ``p/q``; when ``p * q`` would make the kernel huge (a rate that shares no
    factor with 16 kHz, such as 96,001 Hz: a 16,000 x 96,000 kernel, ~6 GB), it is replaced by the
    nearest ratio with a small kernel (96,001 -> 6/1: a 0.001 % change of speed, inaudible). Blocks
    start at multiples of ``p`` with ``pad`` real samples of context on each side, so the output is
    the same as resampling the whole signal at once (tested).
    """

    def __init__(self, source_rate: int, target_rate: int, block_s: float = 20.0) -> None:
        import torchaudio.transforms as T

        ratio = Fraction(source_rate, target_rate)
        limit = ratio.denominator
        while ratio.numerator * ratio.denominator > MAX_RESAMPLE_KERNEL and limit > 1:
            limit //= 2
            ratio = Fraction(source_rate, target_rate).limit_denominator(limit)
        self.p, self.q = ratio.numerator, ratio.denominator
        self.identity = self.p == self.q
        self.resample = None if self.identity else T.Resample(self.p, self.q)
        width = 0 if self.identity else int(self.resample.width)
        self.pad = self.p * -(-(width + 2) // self.p)
        self.block = self.p * max(1, int(block_s * source_rate) // self.p)
        self.buf = np.zeros(self.pad, np.float32)  # index 0 = `pad` samples before the next block

    def _run(self, x: np.ndarray, n_out: int) -> np.ndarray:
        import torch

        out = self.resample(torch.from_numpy(x)).numpy()
        a = self.pad * self.q // self.p
        return out[a:a + n_out]

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        if self.identity:
            yield samples
            return
        self.buf = np.concatenate([self.buf, samples])
        while len(self.buf) >= 2 * self.pad + self.block:
            yield self._run(self.buf[: 2 * self.pad + self.block], self.block * self.q // self.p)
            self.buf = self.buf[self.block:]

    def flush(self) -> Iterator[np.ndarray]:
        if self.identity:
            return
        rest = len(self.buf) - self.pad
        if rest > 0:
            x = np.concatenate([self.buf, np.zeros(self.pad, np.float32)])
            yield self._run(x, -(-rest * self.q // self.p))
        self.buf = np.zeros(0, np.float32)


def stream_audio(
    path: Path, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_AUDIO_SECONDS,
    max_decode_s: float = MAX_DECODE_SECONDS,
) -> Iterator[np.ndarray]:
    """Mono float32 chunks in [-1, 1] at ``sample_rate``, decoded and resampled a block at a time.

    Memory is bounded by a few seconds of audio whatever the file's length or rate; refuses sample
    rates outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], recordings over ``max_seconds`` and decodes
    that take longer than ``max_decode_s`` (a damaged file the demuxer crawls through).
    """
    import av

    path = Path(path)
    _regular(path)
    deadline = time.monotonic() + max_decode_s
    max_out = int(max_seconds * sample_rate)
    produced = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise DecodeError(f"{path}: no audio stream found (damaged, or not audio at all); check that it "
                                  f"plays, or re-encode it (e.g. `ffmpeg -i in -ar 16000 out.flac`)")
            stream = container.streams.audio[0]
            source_rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            _check_rate(path, source_rate)
            mixer = av.AudioResampler(format="fltp", layout="mono", rate=source_rate)
            resampler = _BlockResampler(source_rate, sample_rate)

            def emit(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                nonlocal produced
                for chunk in chunks:
                    if len(chunk):
                        produced += len(chunk)
                        if produced > max_out:
                            raise DecodeError(f"{path}: recording is longer than {max_seconds / 3600:g} h "
                                              f"({max_seconds:g} s); split it into shorter files")
                        yield np.clip(chunk, -1.0, 1.0).astype(np.float32, copy=False)
                if time.monotonic() > deadline:
                    raise DecodeError(f"{path}: decoding took longer than {max_decode_s:g} s; the file is "
                                      f"probably damaged: re-encode it (e.g. `ffmpeg -i in -ar 16000 out.flac`)")

            for frame in container.decode(stream):
                for out in mixer.resample(frame):
                    yield from emit(resampler.push(out.to_ndarray().reshape(-1).astype(np.float32)))
            for out in mixer.resample(None):
                yield from emit(resampler.push(out.to_ndarray().reshape(-1).astype(np.float32)))
            yield from emit(resampler.flush())
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError(f"{path}: ran out of memory while decoding; re-encode it at 16 kHz mono") from None
    except Exception as exc:
        raise DecodeError(f"{path}: not a readable audio file ({_short(exc)}); check that it plays, "
                          f"or re-encode it (e.g. `ffmpeg -i in -ar 16000 out.flac`)") from None
    if produced == 0:
        raise DecodeError(f"{path}: audio has no samples (empty recording)")


def _check_rate(path: Path, rate: int) -> None:
    if not rate:
        raise DecodeError(f"{path}: audio stream declares no sample rate; re-encode it (e.g. "
                          f"`ffmpeg -i in -ar 16000 out.flac`)")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DecodeError(f"{path}: sample rate {rate:,} Hz is outside the {MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz "
                          f"range of real recordings (damaged header?); re-encode it at 16 kHz "
                          f"(e.g. `ffmpeg -i in -ar 16000 out.flac`)")


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate``; refuses recordings over ``max_seconds``."""
    return np.concatenate(list(stream_audio(path, sample_rate, max_seconds))).astype(np.float32, copy=False)


def split_segments(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    window: float = SEGMENT_SECONDS,
    overlap: float = SEGMENT_OVERLAP_SECONDS,
) -> list[AudioSegment]:
    """Whole clip if it fits one window, else overlapping windows with their times."""
    total = len(audio) / sample_rate
    if total <= window:
        return [AudioSegment(0.0, round(total, 3), audio)]
    hop = window - overlap
    segments = []
    start = 0.0
    while True:
        end = min(start + window, total)
        a, b = int(start * sample_rate), int(end * sample_rate)
        segments.append(AudioSegment(round(start, 3), round(end, 3), audio[a:b]))
        if end >= total:
            break
        start += hop
        if total - start < overlap:  # the tail is already inside the last window
            break
    return segments


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dB relative to full scale (-inf for digital silence)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


@dataclass
class StreamStats:
    seconds: float = 0.0  # decoded length
    windows: int = 0  # windows cut, silent ones included
    silent: int = 0  # windows under the silence level, not yielded


def stream_segments(
    path: Path, sample_rate: int = SAMPLE_RATE, window: float = SEGMENT_SECONDS,
    overlap: float = SEGMENT_OVERLAP_SECONDS, max_seconds: float = MAX_AUDIO_SECONDS,
    silence_dbfs: float | None = SILENCE_DBFS, stats: StreamStats | None = None,
) -> Iterator[AudioSegment]:
    """The windows :func:`split_segments` cuts, decoded a window at a time (memory: one window, whatever the
    file's length); windows whose level is under ``silence_dbfs`` are skipped (counted in ``stats``)."""
    stats = stats if stats is not None else StreamStats()
    hop = window - overlap
    buf, offset, pending, produced, start = np.zeros(0, np.float32), 0, [], 0, 0.0

    def take(a: int, b: int) -> np.ndarray:
        nonlocal buf, pending
        if pending:
            buf, pending = np.concatenate([buf, *pending]), []
        return buf[a - offset:b - offset]

    def emit(seg_start: float, seg_end: float) -> AudioSegment | None:
        samples = take(int(seg_start * sample_rate), int(seg_end * sample_rate)).copy()
        stats.windows += 1
        if silence_dbfs is not None and level_dbfs(samples) < silence_dbfs:
            stats.silent += 1
            return None
        return AudioSegment(round(seg_start, 3), round(seg_end, 3), samples)

    for chunk in stream_audio(path, sample_rate, max_seconds):
        pending.append(chunk)
        produced += len(chunk)
        while produced / sample_rate > start + window:  # not the last window: the clip goes on past it
            seg = emit(start, start + window)
            if seg is not None:
                yield seg
            start += hop
            drop = int(start * sample_rate) - offset
            take(offset, offset)  # fold pending into buf
            buf, offset = buf[drop:], offset + drop
    total = produced / sample_rate
    stats.seconds = total
    if stats.windows == 0 and total <= window:
        seg = emit(0.0, total)
        if seg is not None:
            yield seg
        return
    while True:  # the tail, exactly as split_segments ends
        end = min(start + window, total)
        seg = emit(start, end)
        if seg is not None:
            yield seg
        if end >= total:
            break
        start += hop
        if total - start < overlap:
            break
