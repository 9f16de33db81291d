"""Uploaded query files: typed by content, checked against the limits before decoding, decoded small.

Memory per request is bounded in three steps: the caller checks the number of
inputs before any file is read (:func:`webui.queries.parse_search`); every upload's
kind and image size come from its header, and the request's images together must
stay under ``MAX_REQUEST_PIXELS``; then each image is decoded and immediately
downscaled to ``UPLOAD_IMAGE_SIDE`` px (JPEG through ``Image.draft``, so its DCT
decodes at 1/2..1/8 scale; others full size, one at a time) — the towers see
224 px at most. After large decodes the C heap is trimmed so the process hands
the pages back to the OS. Files are decoded from private temporary files (no
extension: only the content can type them) deleted before the response.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.datastructures import FileStorage

from retrieval import decoders
from retrieval.query import Input

from .engine import sniff_upload, upload_key
from .errors import ApiError

AUDIO_DECODE_MARGIN = 2.0  # decode at most this many times the limit before refusing
TRIM_AFTER_PIXELS = 4_000_000  # give the heap back after decoding images this large


@dataclass
class _Staged:
    label: str
    weight: float
    key: str
    tmp: Path
    kind: str
    pixels: int = 0


def decode_uploads(files: list[tuple[FileStorage, float]], config: dict) -> list[Input]:
    """The inputs of ``(upload, weight)`` pairs, every limit checked before the first pixel is decoded."""
    staged: list[_Staged] = []
    decoded = 0
    try:
        for f, weight in files:
            staged.append(_stage(f, weight, config["MAX_IMAGE_PIXELS"]))
        total = sum(s.pixels for s in staged)
        if total > config["MAX_REQUEST_PIXELS"]:
            raise ApiError(f"the images of this query are {total / 1e6:.1f} Mpx in all; the limit is "
                           f"{config['MAX_REQUEST_PIXELS'] / 1e6:g} Mpx in all per query: send fewer or smaller "
                           "images", 413, "too_large")
        out = []
        for s in staged:
            if s.kind == "image":
                value = _decode_image(s, int(config["UPLOAD_IMAGE_SIDE"]))
                decoded += s.pixels
            else:
                value = _decode_audio(s, config["MAX_AUDIO_SECONDS"])
            out.append(Input(s.kind, value, s.weight, key=s.key, label=s.label))
        return out
    finally:
        for s in staged:
            s.tmp.unlink(missing_ok=True)
        if decoded > TRIM_AFTER_PIXELS:
            release_memory()


def _label(f: FileStorage) -> str:
    name = os.path.basename((f.filename or "").replace("\\", "/"))
    return "".join(ch for ch in name if ch.isprintable())[:80] or "upload"


def _stage(f: FileStorage, weight: float, max_pixels: int) -> _Staged:
    """Copy an upload to a private file, type it by content and read an image's size from its header."""
    label = _label(f)
    data = f.read()
    if not data:
        raise ApiError(f"{label} is empty", 400, "empty_file")
    fd, name = tempfile.mkstemp(prefix="webui-upload-")
    tmp = Path(name)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    staged = _Staged(label, weight, upload_key(data), tmp, "")
    staged.kind = sniff_upload(data[:64], tmp) or ""
    del data
    if not staged.kind:
        tmp.unlink(missing_ok=True)
        raise ApiError(f"{label} is neither an image (JPEG, PNG, WebP, GIF, BMP, TIFF) nor audio (WAV, FLAC, "
                       "MP3, OGG, M4A, WebM) by its content", 415, "unsupported_type")
    if staged.kind == "image":
        staged.pixels = _image_pixels(staged, max_pixels)
    return staged


def _image_pixels(s: _Staged, max_pixels: int) -> int:
    from PIL import Image

    try:  # the header gives the size without decoding the pixels
        with Image.open(s.tmp) as img:
            w, h = img.size
    except Image.DecompressionBombError:  # Pillow's own hard limit, far above ours
        s.tmp.unlink(missing_ok=True)
        raise ApiError(f"{s.label} is over the {max_pixels / 1e6:g} Mpx limit for a query image; downscale it",
                       413, "too_large") from None
    except Exception:
        return 0  # let the decoder say what is wrong
    if w * h > max_pixels:
        s.tmp.unlink(missing_ok=True)
        raise ApiError(f"{s.label} is {w}x{h} = {w * h / 1e6:.1f} Mpx, over the {max_pixels / 1e6:g} Mpx limit for "
                       "a query image; downscale it", 413, "too_large")
    return w * h


def _clean(exc: Exception, tmp: Path, label: str) -> str:
    return str(exc).replace(str(tmp), label)


# EXIF orientation -> the transpose that undoes it (as PIL.ImageOps.exif_transpose)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}


def _decode_image(s: _Staged, side: int) -> Any:
    """An RGB image at most ``side`` px on its longer side: EXIF orientation applied, transparency on white."""
    from PIL import Image

    try:
        with Image.open(s.tmp) as img:
            if img.format not in decoders.IMAGE_FORMATS:
                raise ApiError(f"{s.label}: unsupported image format {img.format}", 422, "undecodable")
            orientation = img.getexif().get(0x0112, 1)
            img.draft("RGB", (side, side))  # JPEG: decode at a reduced scale (no-op for other formats)
            img.load()
            if img.mode not in ("RGB", "RGBA", "L", "LA"):  # palette/1-bit/16-bit: resample in a real colour mode
                img = img.convert("RGBA" if img.mode in ("P", "PA") and "transparency" in img.info
                                  or img.mode == "PA" else "RGB")
            img.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
            if orientation in _ORIENTATION:
                img = img.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
            if img.mode in ("RGBA", "LA"):
                rgba = img.convert("RGBA")
                return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            return img.convert("RGB")
    except ApiError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        raise ApiError(f"{s.label}: not a readable image ({type(exc).__name__}: {_clean(exc, s.tmp, s.label)})",
                       422, "undecodable") from None


def _decode_audio(s: _Staged, max_seconds: float) -> Any:
    limit_msg = f"{s.label} is longer than the {max_seconds:g} s limit for a query; trim it"
    try:
        audio = decoders.load_audio(s.tmp, max_seconds=max_seconds * AUDIO_DECODE_MARGIN)
    except decoders.DecodeError as exc:
        if "longer than" in str(exc):  # the decoder stopped early at twice our limit
            raise ApiError(limit_msg, 413, "too_large") from None
        raise ApiError(_clean(exc, s.tmp, s.label), 422, "undecodable") from None
    if len(audio) > max_seconds * decoders.SAMPLE_RATE:
        raise ApiError(limit_msg, 413, "too_large")
    return audio


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them after large frees); a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
