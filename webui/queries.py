"""Parse a search request (JSON or multipart) into checked query parts.

Limits (Flask config, see :data:`webui.DEFAULT_CONFIG`): request size
(``MAX_CONTENT_LENGTH``, answered 413 by Flask before we read anything), inputs
per query, characters per text, image pixels, audio seconds, ``k`` and
``offset + k``. Uploads are typed by their bytes, never by the name or the MIME
type the browser sent; they are decoded from a private temporary file that is
deleted before the response.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from flask import Request
from werkzeug.datastructures import FileStorage

from retrieval import decoders
from retrieval.search import TARGETS

from .engine import QueryPart, sniff_upload, upload_key
from .errors import ApiError

AUDIO_DECODE_MARGIN = 2.0  # decode at most this many times the limit before refusing


def _int(value: Any, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ApiError(f"'{name}' must be a whole number", 400, "bad_parameter")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(f"'{name}' must be a whole number, got {str(value)[:40]!r}", 400, "bad_parameter") from None
    if not lo <= number <= hi:
        raise ApiError(f"'{name}' must be between {lo} and {hi}, got {number}", 400, "bad_parameter")
    return number


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_search(request: Request, config: dict) -> tuple[list[QueryPart], str, int, int]:
    """(parts, target, k, offset) from a JSON or multipart search request."""
    texts: list[Any]
    items: list[Any]
    files: list[FileStorage] = []
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError("the request body is not a JSON object; send e.g. {\"text\": \"a red apple\"}",
                           400, "bad_json")
        unknown = set(body) - {"text", "items", "target", "k", "offset"}
        if unknown:
            raise ApiError(f"unknown field(s) {', '.join(sorted(unknown))}; use text, items, target, k, offset",
                           400, "bad_parameter")
        texts, items = _as_list(body.get("text")), _as_list(body.get("items"))
        target, k, offset = body.get("target"), body.get("k"), body.get("offset")
    elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = request.form
        texts, items = form.getlist("text"), form.getlist("item")
        target, k, offset = form.get("target"), form.get("k"), form.get("offset")
        for name in request.files:
            if name != "file":
                raise ApiError(f"unexpected file field '{name}'; send every image or audio file as 'file'",
                               400, "bad_parameter")
        files = [f for f in request.files.getlist("file")]
    else:
        raise ApiError("send the query as JSON (application/json) or, with files, as multipart/form-data",
                       415, "unsupported_type")

    target = target or "all"
    if target not in TARGETS:
        raise ApiError(f"unknown target '{str(target)[:40]}'; use one of {', '.join(TARGETS)}", 400, "bad_parameter")
    k = _int(k, "k", config["DEFAULT_K"], 1, config["MAX_K"])
    offset = _int(offset, "offset", 0, 0, config["MAX_RESULTS"] - 1)
    if offset + k > config["MAX_RESULTS"]:
        raise ApiError(f"results stop at {config['MAX_RESULTS']}: offset + k must not exceed it", 400, "bad_parameter")

    parts: list[QueryPart] = []
    for t in texts:
        if not isinstance(t, str):
            raise ApiError("'text' must be a string or a list of strings", 400, "bad_parameter")
        t = t.strip()
        if not t:
            continue  # an empty box next to an upload is not an error; no input at all is (below)
        if len(t) > config["MAX_TEXT_CHARS"]:
            raise ApiError(f"a text input is {len(t)} characters; the limit is {config['MAX_TEXT_CHARS']}",
                           413, "too_large")
        parts.append(QueryPart("text", t, t, t[:60]))
    for i in items:
        iid = _int(i, "items", 0, 1, 2**62)
        parts.append(QueryPart("item", iid, str(iid), f"item {iid}"))
    for f in files:
        parts.append(decode_upload(f, config))
    if not parts:
        raise ApiError("the query is empty: type some words, add an image or an audio file, or record from "
                       "the microphone", 400, "empty_query")
    if len(parts) > config["MAX_INPUTS"]:
        raise ApiError(f"a query combines at most {config['MAX_INPUTS']} inputs; got {len(parts)}", 400, "too_many_inputs")
    return parts, target, k, offset


def _label(f: FileStorage) -> str:
    name = os.path.basename((f.filename or "").replace("\\", "/"))
    return "".join(ch for ch in name if ch.isprintable())[:80] or "upload"


def decode_upload(f: FileStorage, config: dict) -> QueryPart:
    """Type an uploaded file by content, check its limits, decode it to what the encoders take."""
    label = _label(f)
    data = f.read()
    if not data:
        raise ApiError(f"{label} is empty", 400, "empty_file")
    fd, name = tempfile.mkstemp(prefix="webui-upload-")  # no extension: only the content can type it
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        kind = sniff_upload(data[:64], tmp)
        if kind is None:
            raise ApiError(f"{label} is neither an image (JPEG, PNG, WebP, GIF, BMP, TIFF) nor audio (WAV, FLAC, "
                           "MP3, OGG, M4A, WebM) by its content", 415, "unsupported_type")
        if kind == "image":
            value = _decode_image(tmp, label, config["MAX_IMAGE_PIXELS"])
        else:
            value = _decode_audio(tmp, label, config["MAX_AUDIO_SECONDS"])
    finally:
        tmp.unlink(missing_ok=True)
    return QueryPart(kind, value, upload_key(data), label)


def _clean(exc: Exception, tmp: Path, label: str) -> str:
    return str(exc).replace(str(tmp), label)


def _decode_image(tmp: Path, label: str, max_pixels: int):
    from PIL import Image

    too_big = f"{label} is over the {max_pixels / 1e6:g} Mpx limit for a query image; downscale it"
    try:  # the header gives the size without decoding the pixels
        with Image.open(tmp) as img:
            w, h = img.size
    except Image.DecompressionBombError:  # Pillow's own hard limit, far above ours
        raise ApiError(too_big, 413, "too_large") from None
    except Exception:
        w = h = 0  # let the decoder say what is wrong
    if w * h > max_pixels:
        raise ApiError(f"{label} is {w}x{h} = {w * h / 1e6:.1f} Mpx, over the {max_pixels / 1e6:g} Mpx limit for a "
                       "query image; downscale it", 413, "too_large")
    try:
        return decoders.load_image(tmp, max_pixels=max_pixels)
    except decoders.DecodeError as exc:
        raise ApiError(_clean(exc, tmp, label), 422, "undecodable") from None


def _decode_audio(tmp: Path, label: str, max_seconds: float):
    limit_msg = f"{label} is longer than the {max_seconds:g} s limit for a query; trim it"
    try:
        audio = decoders.load_audio(tmp, max_seconds=max_seconds * AUDIO_DECODE_MARGIN)
    except decoders.DecodeError as exc:
        if "longer than" in str(exc):  # the decoder stopped early at twice our limit
            raise ApiError(limit_msg, 413, "too_large") from None
        raise ApiError(_clean(exc, tmp, label), 422, "undecodable") from None
    if len(audio) > max_seconds * decoders.SAMPLE_RATE:
        raise ApiError(limit_msg, 413, "too_large")
    return audio
