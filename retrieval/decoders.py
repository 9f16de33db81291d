"""Decoders: the only file I/O per modality. Bytes in, arrays (or text) out.

* :func:`sniff` decides a file's modality by content (magic bytes), using the
  extension only for plain text, which has no magic.
* :func:`load_image` -> RGB ``PIL.Image`` (EXIF orientation applied, transparency
  composited on white, pixel-count guard against decompression bombs).
* :func:`stream_audio` / :func:`load_audio` -> mono float32 at 16 kHz (PyAV decodes every container
  ffmpeg knows; torchaudio resamples block by block, bounded memory). :func:`split_segments` cuts long
  recordings into overlapping windows with their times; :func:`stream_segments` yields the same windows
  while decoding (one window in memory) and skips silent ones.
* :func:`load_video` -> keyframes and speech windows of a video (:mod:`retrieval.video`; MP4/MOV,
  Matroska/WebM and AVI are told from recordings by whether they hold a picture stream).
* :func:`load_text` -> ``str`` with the encoding detected (charset-normalizer);
  :func:`split_passages` cuts long notes into overlapping passages.

Every failure raises :class:`DecodeError` naming the file, what is wrong and what to do. The audio
functions live in :mod:`retrieval.audio_stream` and are re-exported here.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from .audio_stream import (  # noqa: F401  (re-exported: decoders is the one I/O boundary)
    MAX_AUDIO_SECONDS, MAX_DECODE_SECONDS, MAX_RESAMPLE_KERNEL, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SAMPLE_RATE,
    SEGMENT_OVERLAP_SECONDS, SEGMENT_SECONDS, SILENCE_DBFS, AudioSegment, StreamStats, _BlockResampler,
    level_dbfs, load_audio, split_segments, stream_audio, stream_segments,
)
from .decode_errors import DecodeError
from .decode_errors import check_regular as _regular
from .video import VIDEO_EXTENSIONS, Keyframe, Video, load_video  # noqa: F401  (re-exported)
from .video import is_container as _video_container
from .video import probe as _probe_video
from .decode_errors import short_error as _short

MAX_IMAGE_PIXELS = 64_000_000
MAX_TEXT_BYTES = 5_000_000
PASSAGE_WORDS = 160  # fits a 256-token text encoder with room for word pieces
PASSAGE_OVERLAP_WORDS = 40

IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".text"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".m4a", ".aac", ".mp4a"}


@dataclass(frozen=True)
class Passage:
    start: int  # character offsets into the note
    end: int
    text: str


def _head(path: Path, n: int = 64) -> bytes:
    """The first bytes of a regular file; b"" for anything else (never blocks on a FIFO or a device)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, n)
    finally:
        os.close(fd)


def sniff(path: Path) -> str | None:
    """``"image"``, ``"audio"``, ``"video"``, ``"text"``, or None for files we do not index.

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
    if _video_container(head):
        return _probe_video(path)  # "video", or "audio" for a container that holds only sound
    kind = _magic_modality(head)
    if kind == "audio?" and suffix in IMAGE_EXTENSIONS | TEXT_EXTENSIONS:
        kind = None  # a weak MPEG-frame match (any 3 bytes can pass it) loses to the extension
    if kind:
        return kind.rstrip("?")
    if suffix in TEXT_EXTENSIONS:
        return "text"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
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
        return "audio?"  # MPEG layer II/III frame header without an ID3 tag: a weak match
    if head[4:8] == b"ftyp" and head[8:12] in (b"M4A ", b"M4B ", b"mp42", b"isom", b"dash", b"3gp4"):
        return "audio"
    return None


# ---------------------------------------------------------------- images
def load_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS, target: int | None = None):
    """RGB image with EXIF orientation applied; refuses decompression bombs. ``target``: the caller only needs
    about ``target`` pixels a side (a thumbnail), so a JPEG is decoded at the smallest 1/2..1/8 scale that
    still covers it instead of at full size."""
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
                if target and img.format == "JPEG":
                    img.draft("RGB", (target, target))
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                rgb.info["photographic"] = looks_photographic(img)
                return rgb
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


def looks_photographic(img) -> bool:  # noqa: ANN001 - a PIL image
    from .model_fit import looks_photographic as check

    return check(img)


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


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
        raise DecodeError(f"{path}: text file is empty (or only blanks); nothing to index: write the note or "
                          f"delete it")
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
