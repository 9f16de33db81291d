"""Decoders: the only file I/O per modality. Bytes in, arrays (or text) out.

* :func:`sniff` decides a file's modality by content (magic bytes), using the
  extension only for plain text, which has no magic.
* :func:`load_image` -> RGB ``PIL.Image`` (EXIF orientation applied, transparency
  composited on white, pixel-count guard against decompression bombs).
* :func:`stream_audio` / :func:`load_audio` -> mono float32 at 16 kHz (PyAV decodes every container
  ffmpeg knows; torchaudio resamples block by block, bounded memory). :func:`split_segments` cuts long
  recordings into overlapping windows with their times.
* :func:`load_text` -> ``str`` with the encoding detected (charset-normalizer);
  :func:`split_passages` cuts long notes into overlapping passages.

Every failure raises :class:`DecodeError` naming the file and what is wrong.
"""

from __future__ import annotations

import os
import re
import stat
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16_000
MAX_IMAGE_PIXELS = 64_000_000
SEGMENT_SECONDS = 30.0
SEGMENT_OVERLAP_SECONDS = 5.0
MAX_TEXT_BYTES = 5_000_000
MAX_AUDIO_SECONDS = 4 * 3600  # 4 h of 16 kHz float32 is ~0.9 GB in memory
MIN_SAMPLE_RATE = 4_000  # below this a recording has no speech band left (a 1 Hz header is damage)
MAX_SAMPLE_RATE = 768_000  # the highest rate real converters write
MAX_RESAMPLE_KERNEL = 1_000_000  # p * q of the resampling ratio p/q: the kernel is ~q * (p + 2 width) floats (4 MB)
MAX_DECODE_SECONDS = 600.0  # one file's decode (any modality) may take at most this long
PASSAGE_WORDS = 160  # fits a 256-token text encoder with room for word pieces
PASSAGE_OVERLAP_WORDS = 40

IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".text"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".m4a", ".aac", ".mp4a"}


class DecodeError(ValueError):
    """A file could not be decoded; the message names the file and the problem."""


@dataclass(frozen=True)
class Passage:
    start: int  # character offsets into the note
    end: int
    text: str


@dataclass(frozen=True)
class AudioSegment:
    start: float
    end: float
    samples: np.ndarray


def _head(path: Path, n: int = 64) -> bytes:
    """The first bytes of a regular file; b"" for anything else (never blocks on a FIFO or a device)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, n)
    finally:
        os.close(fd)


def _regular(path: Path) -> None:
    """Refuse what is not a regular file before a decoder opens it (a FIFO would block, a device never ends)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(f"{path}: not a regular file; only regular files can be decoded")


def sniff(path: Path) -> str | None:
    """``"image"``, ``"audio"``, ``"text"``, or None for files we do not index.

    Content decides for images and audio; a known media extension whose content
    matches nothing still returns its modality so the decoder reports why.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        head = _head(path)
    except OSError:
        head = b""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) and suffix in TEXT_EXTENSIONS:
        return "text"  # UTF-16 byte-order mark
    kind = _magic_modality(head)
    if kind:
        return kind
    if suffix in TEXT_EXTENSIONS:
        return "text"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    return None


def _magic_modality(head: bytes) -> str | None:
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio"
    if head.startswith((b"fLaC", b"OggS", b"ID3")):
        return "audio"
    if len(head) > 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) in (0x02, 0x04) \
            and (head[2] >> 4) not in (0, 15) and ((head[2] >> 2) & 3) != 3:
        return "audio"  # MPEG layer II/III frame header without an ID3 tag
    if head[4:8] == b"ftyp" and head[8:12] in (b"M4A ", b"M4B ", b"mp42", b"isom", b"dash", b"3gp4"):
        return "audio"
    return None


# ---------------------------------------------------------------- images
def load_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS):
    """RGB image with EXIF orientation applied; refuses decompression bombs."""
    from PIL import Image, ImageOps

    path = Path(path)
    _regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format not in IMAGE_FORMATS:
                    raise DecodeError(f"{path}: unsupported image format {img.format}")
                w, h = img.size
                if w * h > max_pixels:
                    raise DecodeError(
                        f"{path}: image is {w}x{h} = {w * h:,} pixels, over the {max_pixels:,} limit; downscale it"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"{path}: refused as a decompression bomb ({exc}); downscale it if it is a real "
                          f"picture") from None
    except MemoryError:
        raise DecodeError(f"{path}: ran out of memory decoding the image; downscale or re-save it") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        raise DecodeError(f"{path}: not a readable image, truncated or damaged ({_short(exc)}); check that it "
                          f"opens in an image viewer, or re-save it") from None


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# ---------------------------------------------------------------- audio
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
                raise DecodeError(f"{path}: no audio stream found; is it a video or a damaged file?")
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


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__


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


# ---------------------------------------------------------------- text
def load_text(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Text with its encoding detected; never raises on odd encodings."""
    path = Path(path)
    _regular(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise DecodeError(f"{path}: text file is over the {max_bytes:,} byte limit; split it into smaller notes")
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16 and (b"\x00" in data[:4096] or data.count(b"\x00") > len(data) // 100):
        raise DecodeError(f"{path}: looks binary, not text (NUL bytes); if it is a note, save it as UTF-8 text")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = _guess_legacy_encoding(data)
    # NUL cannot be stored by Postgres (and is never meant in a note): a few stray ones are dropped
    text = text.replace("\r\n", "\n").replace("\x00", "").strip()
    if not text:
        raise DecodeError(f"{path}: text file is empty")
    return text


def split_passages(
    text: str, words: int = PASSAGE_WORDS, overlap: int = PASSAGE_OVERLAP_WORDS
) -> list[Passage]:
    """Whole note if short, else overlapping word windows with their character offsets."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if len(spans) <= words:
        return [Passage(0, len(text), text)]
    out = []
    hop = words - overlap
    for first in range(0, len(spans), hop):
        last = min(first + words, len(spans)) - 1
        a, b = spans[first][0], spans[last][1]
        out.append(Passage(a, b, text[a:b]))
        if last == len(spans) - 1:
            break
    return out


def _guess_legacy_encoding(data: bytes) -> str:
    """Best charset-normalizer guess; among equally plausible ones prefer Windows-1252."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        return data.decode("cp1252", errors="replace")
    best = matches[0]
    tied = [m for m in matches if m.chaos == best.chaos and m.coherence == best.coherence]
    preferred = next((m for m in tied if m.encoding in ("cp1252", "latin_1", "iso8859_15")), best)
    return str(preferred)
