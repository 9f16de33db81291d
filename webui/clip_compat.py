"""clip-retrieval compatible back end: the routes clip-retrieval's front end and ``ClipClient`` call.

Request and response JSON follow clip-retrieval 2.45.0's ``clip_back.py``:

- ``GET /indices-list`` -> ``["<name>"]``: one index, the data directory (its name is config
  ``CLIP_INDEX_NAME``, default the data directory's folder name);
- ``POST /knn-service`` ``{"text" | "image" (base64) | "image_url" | "embedding_input", "modality",
  "num_images", "num_result_ids", "indice_name", ...}`` -> ``[{"id", "similarity", ...metadata}, ...]``:
  ``num_result_ids`` hits best first, the first ``num_images`` with metadata;
- ``POST /metadata`` ``{"ids": [...], "indice_name"}`` -> ``[{"id", "metadata": {...} | null}, ...]``.

Metadata of a hit: ``caption`` (a note's excerpt, a recording's sentence, an image's file name), ``url``
(an image's thumbnail on this server, absolute, so a front end served elsewhere shows it), ``media``,
``modality``, ``path``, ``score`` (calibrated relevance) and ``start``/``end`` for recordings.
``similarity`` is our ``similarity`` (cosine; plus the re-ranker's correction for re-ranked hits).

What differs, on purpose: ``modality`` is the target (``image``, ``text``, also ``audio`` and ``all``);
``image`` may hold any image or audio file, typed by its content as uploads are; ``image_url`` is only
taken when it is a media or thumbnail URL of this server (a result's ``url``: "search similar" in the
front end), never fetched; ``num_result_ids`` above ``MAX_RESULTS`` (1000) is cut to it; ``deduplicate``
drops hits within cosine 0.94 of a better one (as clip back; so fewer than ``num_result_ids`` may come
back); ``use_mclip``, ``use_safety_model``, ``use_violence_detector`` and ``aesthetic_*`` are accepted and
have no effect (there are no such models here). Unknown fields and bad values are a 400 saying which.

Every search goes through the query API (:meth:`retrieval.service.SearchService.search`); this module
only parses and serialises. Responses carry ``Access-Control-Allow-Origin: *`` as clip back's do.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import FileStorage

from indexer import repository as repo
from retrieval.query import Hit, Input, Query

from .engine import Engine
from .errors import ApiError
from .queries import json_body, text_input, vector_input
from .uploads import decode_uploads

bp = Blueprint("clip", __name__)

ROUTES = ("/indices-list", "/knn-service", "/metadata")
MODALITIES = ("image", "text", "audio", "all")
CAPTION_CHARS = 300
DEDUP_COSINE = 0.94  # clip back's near-duplicate threshold (KnnService.get_non_uniques)
KNN_FIELDS = ("text", "image", "image_url", "embedding_input", "embedding_modality", "modality", "num_images",
              "num_result_ids", "indice_name", "use_mclip", "deduplicate", "use_safety_model",
              "use_violence_detector", "aesthetic_score", "aesthetic_weight")
SWITCHES = ("use_mclip", "deduplicate", "use_safety_model", "use_violence_detector")
OWN_ITEM_URL = re.compile(r"/api/items/([1-9][0-9]{0,18})/(?:thumbnail|media)")


def _engine() -> Engine:
    return current_app.extensions["webui.engine"]


def index_name() -> str:
    """The one index this server offers (config ``CLIP_INDEX_NAME``, else the data directory's name)."""
    return str(current_app.config.get("CLIP_INDEX_NAME") or Path(current_app.config["DATA_DIR"]).name or "archive")


@bp.after_request
def _cors(resp: Response) -> Response:
    """clip back answers any origin (flask_cors): its front end is often served from another host."""
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
    return resp


@bp.get("/indices-list")
def indices_list() -> Response:
    return jsonify([index_name()])


@bp.post("/knn-service")
def knn_service() -> Response:
    body = _body(KNN_FIELDS)
    if body.get("image") is not None and not (isinstance(body.get("text"), str) and body["text"].strip()):
        # an upload: decoded and encoded behind the slow gate, on its lower-priority threads
        return current_app.extensions["webui.slow_image"].run(lambda: _knn(body))
    return _knn(body)


def _knn(body: dict) -> Response:
    _check_index(body.get("indice_name"))
    modality = body.get("modality") or "image"
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise ApiError(f"'modality' must be one of {', '.join(MODALITIES)} (what to search), got "
                       f"{str(modality)[:40]!r}", 400, "bad_parameter")
    limit = int(current_app.config["MAX_RESULTS"])
    num_images = _count(body.get("num_images"), "num_images", 0, required=True)
    num_result_ids = min(_count(body.get("num_result_ids"), "num_result_ids", 1, default=num_images or 1), limit)
    _check_options(body)
    query = Query((_query_input(body),), target=modality, k=num_result_ids,
                  details_top=min(num_images, num_result_ids),
                  dedup=DEDUP_COSINE if body.get("deduplicate") else None)
    result = _engine().service().search(query)
    base = request.host_url.rstrip("/")
    out = []
    for n, hit in enumerate(result.hits):
        row = _hit_metadata(hit, base) if n < num_images else {}
        out.append({**row, "id": hit.id, "similarity": round(float(hit.similarity), 6)})
    return jsonify(out)


@bp.post("/metadata")
def metadata() -> Response:
    body = _body(("ids", "indice_name"))
    _check_index(body.get("indice_name"))
    ids = body.get("ids")
    limit = int(current_app.config["MAX_RESULTS"])
    if not isinstance(ids, list) or len(ids) > limit or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
        raise ApiError(f"'ids' must be a list of at most {limit} item ids (whole numbers >= 1, the 'id' of "
                       "/knn-service results)", 400, "bad_parameter")
    with _engine().session() as s:
        rows = repo.item_hits(s, ids) if ids else {}  # one batched read
    base = request.host_url.rstrip("/")
    return jsonify([{"id": i, "metadata": _row_metadata(rows[i], base) if i in rows else None} for i in ids])


# ---------------------------------------------------------------- parsing
def _body(fields: tuple[str, ...]) -> dict:
    """The JSON object of the request, whatever its Content-Type (clip's front end sends text/plain)."""
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError("the request body is not a JSON object; send e.g. {\"text\": \"a red apple\", "
                       "\"modality\": \"image\", \"num_images\": 20}", 400, "bad_json")
    unknown = set(body) - set(fields)
    if unknown:
        raise ApiError(f"unknown field(s) {', '.join(sorted(unknown))[:200]}; use {', '.join(fields)}",
                       400, "bad_parameter")
    return body


def _check_index(name: Any) -> None:
    if name is not None and name != index_name():
        raise ApiError(f"unknown index {str(name)[:60]!r}; this server has one, {index_name()!r} "
                       "(GET /indices-list)", 400, "unknown_index")


def _count(value: Any, name: str, lo: int, default: int | None = None, required: bool = False) -> int:
    if value is None and not required:
        return int(default or 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < lo \
            or (isinstance(value, float) and not value.is_integer()):
        raise ApiError(f"'{name}' must be a whole number >= {lo}, got {str(value)[:40]!r}", 400, "bad_parameter")
    return int(min(value, 2**31))


def _check_options(body: dict) -> None:
    """The switches are true/false (null: off); the aesthetic options (no effect here) numbers or ""."""
    for name in SWITCHES:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise ApiError(f"'{name}' must be true or false", 400, "bad_parameter")
    for name in ("aesthetic_score", "aesthetic_weight"):
        value = body.get(name)
        if value is None or value == "":
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            raise ApiError(f"'{name}' must be a number or \"\"", 400, "bad_parameter") from None


def _query_input(body: dict) -> Input:
    """The one input clip back would use: text first, then image, image URL, embedding."""
    text = text_input(body["text"], 1.0, "text", current_app.config) if body.get("text") is not None else None
    if text is not None:
        return text
    if body.get("image") is not None:
        return _image_input(body["image"])
    if body.get("image_url") is not None:
        return _item_of_url(body["image_url"])
    if body.get("embedding_input") is not None:
        return vector_input(body["embedding_input"], "embedding_input", current_app.config["MAX_VECTOR_DIM"],
                            modality=body.get("embedding_modality"))
    raise ApiError("the query is empty: send 'text', 'image' (base64), 'image_url' (a result's url) or "
                   "'embedding_input'", 400, "empty_query")


def _image_input(value: Any) -> Input:
    if not isinstance(value, str) or not value:
        raise ApiError("'image' must be the file's bytes as a base64 string", 400, "bad_parameter")
    try:
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError("'image' is not valid base64; send the file's bytes base64-encoded", 400, "bad_parameter") \
            from None
    upload = FileStorage(io.BytesIO(data), filename="image")
    return decode_uploads([(upload, 1.0)], current_app.config)[0]


def _item_of_url(value: Any) -> Input:
    """A result's ``url`` from this server -> that item ("more like this"); any other URL is refused."""
    parts = urlsplit(value) if isinstance(value, str) else None
    match = OWN_ITEM_URL.fullmatch(parts.path) if parts else None
    if match is None or (parts.netloc and parts.netloc != request.host):
        raise ApiError("'image_url' must be the url of a result from this server (other addresses are not "
                       "fetched); send the image itself as base64 in 'image'", 400, "bad_parameter")
    item_id = int(match.group(1))
    return Input("item", item_id, key=str(item_id), label=f"item {item_id}")


# ---------------------------------------------------------------- serialising
def _urls(item_id: int, modality: str, base: str) -> dict[str, str]:
    out = {"media": f"{base}/api/items/{item_id}/media"}
    if modality == "image":
        out["url"] = f"{base}/api/items/{item_id}/thumbnail"
    return out


def _hit_metadata(hit: Hit, base: str) -> dict:
    caption = hit.text if hit.text and hit.modality != "image" else hit.name
    out: dict[str, Any] = {"caption": (caption or "")[:CAPTION_CHARS], "modality": hit.modality, "path": hit.path,
                           "score": round(float(hit.score), 4), **_urls(hit.id, hit.modality, base)}
    if hit.start is not None:
        out["start"], out["end"] = hit.start, hit.end
    return out


def _row_metadata(row: dict, base: str) -> dict:
    name = Path(row["path"]).name
    caption = row.get("content") if row["modality"] != "image" and row.get("content") else name
    out: dict[str, Any] = {"caption": (caption or "")[:CAPTION_CHARS], "modality": row["modality"],
                           "path": row["path"], **_urls(row["id"], row["modality"], base)}
    if row.get("start") is not None:
        out["start"], out["end"] = row["start"], row["end"]
    return out
