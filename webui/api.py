"""The JSON API blueprint (``/api``); the OpenAPI document in :mod:`webui.openapi` describes it."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from retrieval import decoders
from retrieval.query import Result

from . import openapi
from .engine import Engine, media_type
from .errors import ApiError
from .queries import parse_search
from .slow import looks_like_image
from .thumbnails import SIZES, ThumbnailCache
from .views import item_json, load_item, stats_json

bp = Blueprint("api", __name__, url_prefix="/api")


def engine() -> Engine:
    return current_app.extensions["webui.engine"]


@bp.post("/search")
def search():
    if request.mimetype == "multipart/form-data" and request.files:  # audio or an image: the slow gate's
        return _upload_gate().run(_search)
    return _search()


def _upload_gate():
    """Pictures only: the picture gate; anything with a recording (or unknown) waits at the slow one."""
    heads = []
    for _, f in request.files.items(multi=True):
        heads.append(f.stream.read(16))
        f.stream.seek(0)
    images = heads and all(looks_like_image(h) for h in heads)
    return current_app.extensions["webui.slow_image" if images else "webui.slow"]


def _search():
    query = parse_search(request, current_app.config)
    return jsonify(result_json(engine().service().search(query)))


def result_json(result: Result) -> dict:
    """The search response (see the SearchResponse schema in :mod:`webui.openapi`)."""
    out = {
        "hits": [h.to_dict() for h in result.hits], "offset": result.offset, "k": result.k,
        "has_more": result.has_more, "next_offset": result.offset + result.k if result.has_more else None,
        "target": result.target, "query": {"inputs": result.inputs, "words": result.words},
        "model": result.model, "revision": result.revision, "timings_ms": result.timings_ms,
        "rerank": result.rerank, "calibrated": result.calibrated,
    }
    if result.hybrid is not None:
        out["hybrid"] = result.hybrid
    if result.notices:
        out["notices"] = result.notices
    return out


@bp.get("/items/<id:item_id>")
def item(item_id: int):
    return jsonify(item_json(engine(), item_id))


def _source(item_id: int) -> tuple[dict, Path]:
    """An item and its file on disk: the path comes from the catalog, never from the request, and the file
    must still be the regular file that was indexed (else 404)."""
    from indexer.sources import describe as describe_source, verify_source

    row = load_item(engine(), item_id)
    path = Path(row["file"]["path"])
    if not path.is_file():
        raise ApiError(f"the file of item {item_id} is no longer at {path}; re-run `python -m indexer add` on its "
                       "folder", 404, "file_missing")
    if not verify_source(path, row["file"]):  # same device/inode, size and mtime as when indexed
        raise ApiError(f"the file of item {item_id} at {path} {describe_source(path)}, so it is not served; re-run "
                       "`python -m indexer add` on its folder", 404, "file_changed")
    return row, path


@bp.get("/items/<id:item_id>/media")
def media(item_id: int):
    row, path = _source(item_id)
    if row["modality"] == "text":  # any detected encoding, served as UTF-8
        try:
            text = decoders.load_text(path)
        except decoders.DecodeError as exc:
            raise ApiError(str(exc), 422, "undecodable") from None
        resp = Response(text, mimetype="text/plain")  # Content-Type: text/plain; charset=utf-8
    else:
        resp = send_file(path, mimetype=media_type(path, row["modality"]), conditional=True,
                         download_name=path.name, max_age=3600)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp


@bp.get("/items/<id:item_id>/thumbnail")
def thumbnail(item_id: int):
    size = request.args.get("size", "256")
    if size not in {str(s) for s in SIZES}:
        raise ApiError(f"size must be one of {', '.join(map(str, SIZES))}", 400, "bad_parameter")
    if load_item(engine(), item_id)["modality"] == "video":
        return _keyframe(item_id)
    row, path = _source(item_id)
    if row["modality"] != "image":
        raise ApiError(f"item {item_id} is {row['modality']}; thumbnails exist for images only", 404, "no_thumbnail")
    sha = row["file"]["sha256"] or ""
    etag = f"{sha[:32]}-{size}"
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": "public, max-age=86400"})
    cache: ThumbnailCache = current_app.extensions["webui.thumbnails"]
    try:
        data = cache.get(path, sha, int(size)) if sha else None
    except decoders.DecodeError as exc:
        raise ApiError(str(exc), 422, "undecodable") from None
    if data is None:
        raise ApiError(f"item {item_id} has no recorded checksum; re-run the indexer", 404, "no_thumbnail")
    resp = Response(data, mimetype="image/webp")
    resp.headers["ETag"] = f'"{etag}"'
    resp.headers["Cache-Control"] = "public, max-age=86400"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _keyframe(item_id: int) -> Response:
    """A video item's stored keyframe JPEG (a speech window's: the keyframe on screen when it starts)."""
    from indexer import repository as repo

    with engine().session() as s:
        row = repo.item_detail(s, item_id)
        frame = item_id
        if row is not None and row["start"] is not None:
            frames = [p for p in repo.items_of_file(s, row["file"]["id"]) if p["view"] == "frame"]
            if frames and not any(p["id"] == item_id for p in frames):
                frame = ([p for p in frames if p["start"] <= row["start"]] or frames[:1])[-1]["id"]
        data = repo.thumbnail(s, frame)
    if data is None:
        raise ApiError(f"item {item_id} has no keyframe thumbnail", 404, "no_thumbnail")
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "public, max-age=86400"  # an item's keyframe never changes (new file: new ids)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.get("/stats")
def stats():
    return jsonify(stats_json(engine()))


@bp.get("/health")
def health():
    eng = engine()
    state = eng.read_state()  # a database error becomes a 503 JSON error
    snap = eng.snapshot()
    return jsonify({"status": "ok", "indexed": snap.service is not None, "model": state[0] if state else None,
                    "revision": state[1] if state else 0, "items": sum(snap.counts.values())})


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.document())

