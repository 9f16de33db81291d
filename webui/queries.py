"""Parse a search request (JSON or multipart) into a checked :class:`~retrieval.query.Query`.

Limits (Flask config, see :data:`webui.DEFAULT_CONFIG`): request size
(``MAX_CONTENT_LENGTH``, answered 413 by Flask before we read anything), inputs
per query (checked before any upload is read), characters per text, ``k`` and
``offset + k``; image pixels and audio seconds are :mod:`webui.uploads`' (uploads
are typed by their bytes, never by the name or the MIME type the browser sent).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Request
from werkzeug.datastructures import FileStorage

import numpy as np

from retrieval.encoders import MODALITIES
from retrieval.fusion import MAX_WEIGHT
from retrieval.query import TARGETS, Input, Query

from . import fast_json
from .errors import ApiError
from .uploads import decode_uploads


WHOLE = re.compile(r"\s*[+-]?[0-9]{1,20}\s*")  # a form field's whole number (no 1.5, 1e3, 5_000, Infinity)


FILE_FIELDS = ("file", "image", "audio")  # multipart upload fields; all typed by content ("image" may hold audio)


def _int(value: Any, name: str, default: int, lo: int, hi: int) -> int:
    """A whole number within [lo, hi]: a JSON integer (or integral float like 2.0) or a form's digits."""
    if value is None or value == "":
        return default
    bad = ApiError(f"'{name}' must be a whole number between {lo} and {hi}, got {str(value)[:40]!r}",
                   400, "bad_parameter")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, float):  # JSON 1.5, 1e400 (inf), Infinity, NaN
        if not math.isfinite(value) or not value.is_integer():
            raise bad
        value = int(value)
    elif isinstance(value, str):
        if not WHOLE.fullmatch(value):
            raise bad
        value = int(value)
    elif not isinstance(value, int):
        raise bad
    if not lo <= value <= hi:
        raise ApiError(f"'{name}' must be between {lo} and {hi}, got {value}", 400, "bad_parameter")
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _weight(value: Any, where: str) -> float:
    """A per-input weight: a finite non-zero number within [-MAX_WEIGHT, MAX_WEIGHT] (negative = "not this")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value == 0 or abs(value) > MAX_WEIGHT:
        raise ApiError(f"'{where}' must be a non-zero number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g} "
                       f"(negative = \"not this\"), got {str(value)[:40]!r}", 400, "bad_parameter")
    return float(value)


def vector_input(value: Any, where: str, max_dim: int, weight: float = 1.0, modality: Any = None) -> Input:
    """A raw query vector: a JSON list of 1..``max_dim`` finite numbers (its length is checked against the
    index's model by the query API, which answers a clear 400 naming both lengths)."""
    if not isinstance(value, list) or not value:
        raise ApiError(f"'{where}' must be a non-empty list of numbers (a query vector in the index's model "
                       f"space), got {type(value).__name__}", 400, "bad_vector")
    if len(value) > max_dim:
        raise ApiError(f"'{where}' has {len(value)} numbers; query vectors have at most {max_dim}", 400, "bad_vector")
    if not set(map(type, value)) <= {int, float}:  # exact types: no bool, no str (7x faster than isinstance)
        raise ApiError(f"'{where}' must hold only numbers", 400, "bad_vector")
    vec = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(vec)) or not np.all(np.abs(vec) < 3.4e38):
        raise ApiError(f"'{where}' must hold finite numbers (no NaN, Infinity or 1e400)", 400, "bad_vector")
    if modality is None or modality == "":
        modality = "text"
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise ApiError(f"the modality a vector was encoded from must be one of {', '.join(MODALITIES)}, got "
                       f"{str(modality)[:40]!r}", 400, "bad_parameter")
    return Input("vector", vec.astype(np.float32), weight, label=f"vector ({len(value)} numbers)", modality=modality)


def _weighted_inputs(value: Any, n_files: int, max_dim: int) -> tuple[list, list, list[Input], dict[int, float]]:
    """The ``inputs`` field: [{"text"|"item"|"vector"|"file": ..., "weight": w}, ...] -> texts, items, vector
    inputs, file weights.

    ``{"file": i}`` (multipart only) weighs the i-th (0-based) upload: the ``file`` parts, then ``image``, then
    ``audio``. A ``vector`` entry may say which ``modality`` it was encoded from (default text).
    """
    if value is None:
        return [], [], [], {}
    if not isinstance(value, list):
        raise ApiError("'inputs' must be a list of objects like {\"text\": \"red\", \"weight\": 0.5} or "
                       "{\"item\": 12, \"weight\": -1}", 400, "bad_parameter")
    texts, items, vectors, file_weights = [], [], [], {}
    kinds = ("text", "item", "vector", "file") if n_files else ("text", "item", "vector")
    for n, entry in enumerate(value):
        where = f"inputs[{n}]"
        keys = set(entry) - {"weight"} if isinstance(entry, dict) else set()
        if "vector" in keys:
            keys.discard("modality")
        if len(keys) != 1 or not keys <= set(kinds):
            hint = "" if n_files else " (\"file\" refers to a 'file' upload of a multipart request)"
            raise ApiError(f"'{where}' must be an object with one of {', '.join(kinds)} and optionally a weight"
                           f" (and, with a vector, the modality it was encoded from){hint}", 400, "bad_parameter")
        kind = keys.pop()
        weight = _weight(entry.get("weight", 1.0), f"{where}.weight")
        if kind == "text":
            texts.append((entry["text"], weight, f"{where}.text"))
        elif kind == "item":
            items.append((entry["item"], weight, f"{where}.item"))
        elif kind == "vector":
            vectors.append(vector_input(entry["vector"], f"{where}.vector", max_dim, weight, entry.get("modality")))
        else:
            index = _int(entry["file"], f"{where}.file", -1, 0, n_files - 1)
            if index < 0:
                raise ApiError(f"'{where}.file' must be the position (0-based) of a 'file' upload", 400, "bad_parameter")
            if index in file_weights:
                raise ApiError(f"'{where}' weighs file {index} a second time", 400, "bad_parameter")
            file_weights[index] = weight
    return texts, items, vectors, file_weights


def parse_search(request: Request, config: dict) -> Query:
    """The query of a JSON or multipart search request, its limits checked."""
    texts: list[tuple[Any, float, str]]  # (value, weight, field name for errors)
    items: list[tuple[Any, float, str]]
    files: list[tuple[FileStorage, float]] = []
    if request.mimetype == "application/json":
        body = json_body(request)
        if not isinstance(body, dict):
            raise ApiError("the request body is not a JSON object; send e.g. {\"text\": \"a red apple\"}",
                           400, "bad_json")
        fields = ("text", "items", "not_text", "not_items", "vector", "vector_modality", "inputs", "target", "k",
                  "offset", "hybrid", "rerank")
        unknown = set(body) - set(fields)
        if unknown:
            raise ApiError(f"unknown field(s) {', '.join(sorted(unknown))}; use {', '.join(fields)}",
                           400, "bad_parameter")
        texts = [(t, 1.0, "text") for t in _as_list(body.get("text"))]
        texts += [(t, -1.0, "not_text") for t in _as_list(body.get("not_text"))]
        items = [(i, 1.0, "items") for i in _as_list(body.get("items"))]
        items += [(i, -1.0, "not_items") for i in _as_list(body.get("not_items"))]
        more_texts, more_items, vectors, _ = _weighted_inputs(body.get("inputs"), 0, config["MAX_VECTOR_DIM"])
        if body.get("vector") is not None:
            vectors.insert(0, vector_input(body["vector"], "vector", config["MAX_VECTOR_DIM"],
                                           modality=body.get("vector_modality")))
        target, k, offset = body.get("target"), body.get("k"), body.get("offset")
    elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = request.form
        texts = [(t, 1.0, "text") for t in form.getlist("text")] + [(t, -1.0, "not_text") for t in form.getlist("not_text")]
        items = [(i, 1.0, "item") for i in form.getlist("item")] + [(i, -1.0, "not_item") for i in form.getlist("not_item")]
        target, k, offset = form.get("target"), form.get("k"), form.get("offset")
        for name in request.files:
            if name not in (*FILE_FIELDS, "not_file"):
                raise ApiError(f"unexpected file field '{name}'; send every image or audio file as 'file' "
                               "('image' and 'audio' work too; 'not_file' for \"not this\")", 400, "bad_parameter")
        files = [(f, 1.0) for name in FILE_FIELDS for f in request.files.getlist(name)]
        inputs = _form_json(form, "inputs", "[{\"file\": 0, \"weight\": 0.5}]")
        more_texts, more_items, vectors, file_weights = _weighted_inputs(inputs, len(files), config["MAX_VECTOR_DIM"])
        vector = _form_json(form, "vector", "[0.1, -0.2, ...]")
        if vector is not None:
            vectors.insert(0, vector_input(vector, "vector", config["MAX_VECTOR_DIM"],
                                           modality=form.get("vector_modality")))
        files = [(f, file_weights.get(n, w)) for n, (f, w) in enumerate(files)]
        files += [(f, -1.0) for f in request.files.getlist("not_file")]
    else:
        raise ApiError("send the query as JSON (application/json) or, with files, as multipart/form-data",
                       415, "unsupported_type")

    if target is None or target == "":
        target = "all"
    if not isinstance(target, str) or target not in TARGETS:
        raise ApiError(f"unknown target '{str(target)[:40]}'; use one of {', '.join(TARGETS)}", 400, "bad_parameter")
    k = _int(k, "k", config["DEFAULT_K"], 1, config["MAX_K"])
    offset = _int(offset, "offset", 0, 0, config["MAX_RESULTS"] - 1)
    if offset + k > config["MAX_RESULTS"]:
        raise ApiError(f"results stop at {config['MAX_RESULTS']}: offset + k must not exceed it", 400, "bad_parameter")

    texts += more_texts
    items += more_items
    parts: list[Input] = []
    for t, weight, field in texts:
        part = text_input(t, weight, field, config)
        if part is not None:  # an empty box next to an upload is not an error; no input at all is (below)
            parts.append(part)
    for i, weight, field in items:
        iid = _int(i, field, 0, 1, 2**62)
        parts.append(Input("item", iid, weight, key=str(iid), label=f"item {iid}"))
    parts += vectors
    if not parts and not files:
        raise ApiError("the query is empty: type some words, add an image or an audio file, or record from "
                       "the microphone", 400, "empty_query")
    if len(parts) + len(files) > config["MAX_INPUTS"]:  # before any upload is read
        raise ApiError(f"a query combines at most {config['MAX_INPUTS']} inputs; got {len(parts) + len(files)}",
                       400, "too_many_inputs")
    if not any(p.weight > 0 for p in parts) and not any(w > 0 for _, w in files):
        raise ApiError("every input is \"not this\" (negative weight); add at least one input to look for: words, "
                       "an image, an audio file or an item", 400, "no_positive_input")
    parts += decode_uploads(files, config)  # every other limit is checked: only now are files read
    return Query(tuple(parts), target=target, k=k, offset=offset, hybrid=parse_switch(request, "hybrid", False),
                 rerank=parse_switch(request, "rerank", True))


def text_input(value: Any, weight: float, field: str, config: dict) -> Input | None:
    """A typed text input, checked (None when it is only blanks)."""
    if not isinstance(value, str):
        raise ApiError(f"'{field}' must be a string or a list of strings", 400, "bad_parameter")
    t = value.strip()
    if "\x00" in t or not _utf8(t):
        raise ApiError(f"'{field}' holds a character that is not text (a NUL or a lone UTF-16 surrogate such as "
                       "\\ud800); send the words as valid UTF-8", 400, "bad_text")
    if not t:
        return None
    if len(t) > config["MAX_TEXT_CHARS"]:
        raise ApiError(f"a text input is {len(t)} characters; the limit is {config['MAX_TEXT_CHARS']}",
                       413, "too_large")
    return Input("text", t, weight, key=t, label=t[:60])


def _form_json(form: Any, name: str, example: str) -> Any:
    """A multipart field holding JSON (None when absent or empty)."""
    if not form.get(name):
        return None
    try:
        return json.loads(form[name])
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ApiError(f"the '{name}' field is not valid JSON; send e.g. {example}", 400, "bad_parameter") from None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_body(request: Request) -> Any:
    """The parsed JSON body, or None when it is not JSON (malformed, or nested too deep to parse)."""
    if "webui.json" not in request.environ:
        try:
            request.environ["webui.json"] = fast_json.loads(request.get_data(cache=True))
        except (ValueError, RecursionError):
            request.environ["webui.json"] = None
    return request.environ["webui.json"]


def parse_switch(request: Request, name: str, default: bool) -> bool:
    """A true/false field of a search request (absent = ``default``): JSON true/false; in a form 1/0,
    true/false, on/off, yes/no."""
    if request.mimetype == "application/json":
        body = json_body(request)
        value = body.get(name) if isinstance(body, dict) else None
        if value is None:
            return default
        if isinstance(value, bool):
            return value
    else:
        value = (request.form.get(name) or "").strip().lower()
        if value == "":
            return default
        if value in ("0", "false", "off", "no"):
            return False
        if value in ("1", "true", "on", "yes"):
            return True
    raise ApiError(f"'{name}' must be true or false, got {str(value)[:40]!r}", 400, "bad_parameter")
