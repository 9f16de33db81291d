"""The OpenAPI 3.1 document of the JSON API (served at ``/api/openapi.json``).

Written by hand next to the routes; ``tests/test_webui_api.py`` checks that every
``/api`` route and method is documented (and nothing else is) and validates the
routes' real responses against the schemas below.
"""

from __future__ import annotations

from functools import lru_cache

from retrieval.search import TARGETS

from .thumbnails import SIZES

NULL_NUMBER = {"type": ["number", "null"]}
NULL_STRING = {"type": ["string", "null"]}
NULL_INT = {"type": ["integer", "null"]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {
        400: "Bad input (empty query, unknown target, bad number, malformed JSON)",
        404: "Unknown item, or its file is gone",
        413: "Upload over a limit (request size, image pixels, audio seconds, text length)",
        415: "Wrong content type, or an upload that is neither an image nor audio by its content",
        422: "Input that cannot be decoded or encoded (corrupt file, modality the model lacks, no speech)",
        503: "Nothing indexed yet, or the catalog database is unreachable",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
           "description": "The item's id (a search hit's `id`). Files are served by id only, never by path."}

SCHEMAS: dict = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["status", "code", "message"],
            "properties": {"status": {"type": "integer"}, "code": {"type": "string"},
                           "message": {"type": "string", "description": "What went wrong and what to do"}},
        }},
    },
    "SearchRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "text": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                     "description": "Words; several texts are several inputs of the query"},
            "items": {"type": "array", "items": {"type": "integer"},
                      "description": "Indexed items whose stored vectors join the query (\"more like this\"); "
                                     "they are left out of the results"},
            "target": {"type": "string", "enum": list(TARGETS), "default": "all"},
            "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            "offset": {"type": "integer", "minimum": 0, "default": 0},
        },
    },
    "SearchForm": {
        "type": "object",
        "properties": {
            "text": {"type": "array", "items": {"type": "string"}},
            "item": {"type": "array", "items": {"type": "integer"}},
            "file": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                     "description": "Images (JPEG, PNG, WebP, GIF, BMP, TIFF) and audio (WAV, FLAC, MP3, OGG, M4A, "
                                    "WebM), typed by content"},
            "target": {"type": "string", "enum": list(TARGETS)},
            "k": {"type": "integer"}, "offset": {"type": "integer"},
        },
    },
    "Hit": {
        "type": "object", "required": ["id", "rank", "modality", "score", "path", "name"],
        "properties": {
            "id": {"type": "integer"}, "rank": {"type": "integer", "description": "0-based over all pages"},
            "modality": {"type": "string", "enum": ["image", "audio", "text"]},
            "score": {"type": "number", "description": "Cosine similarity to the fused query"},
            "path": {"type": "string"}, "name": {"type": "string"},
            "text": {"type": "string", "description": "Note excerpt holding the query words, or the transcript "
                                                       "(of the matching sentence for long recordings)"},
            "marks": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                      "description": "[start, end) character ranges of `text` that are query words"},
            "start": {"type": "number", "description": "Seconds: where the matching part starts"},
            "end": {"type": "number"},
            "window": {"type": "array", "items": {"type": "number"}, "description": "The indexed 30 s window"},
            "width": NULL_INT, "height": NULL_INT,
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["hits", "offset", "k", "has_more", "next_offset", "target", "query", "model", "revision"],
        "properties": {
            "hits": {"type": "array", "items": _ref("Hit")},
            "offset": {"type": "integer"}, "k": {"type": "integer"}, "has_more": {"type": "boolean"},
            "next_offset": NULL_INT, "target": {"type": "string"},
            "query": {"type": "object", "required": ["inputs", "words"], "properties": {
                "inputs": {"type": "array", "items": {"type": "object", "required": ["kind", "label"], "properties": {
                    "kind": {"type": "string", "enum": ["text", "image", "audio", "item"]},
                    "label": {"type": "string"},
                    "transcript": {"type": "string", "description": "What the speech recogniser heard"}}}},
                "words": {"type": "array", "items": {"type": "string"}}}},
            "model": {"type": "string"}, "revision": {"type": "integer"},
            "timings_ms": {"type": "object", "properties": {"encode": {"type": "number"}, "search": {"type": "number"}}},
        },
    },
    "Item": {
        "type": "object", "required": ["id", "modality", "path", "name", "file", "urls", "parts"],
        "properties": {
            "id": {"type": "integer"}, "modality": {"type": "string", "enum": ["image", "audio", "text"]},
            "path": {"type": "string"}, "name": {"type": "string"},
            "start": NULL_NUMBER, "end": NULL_NUMBER, "text": NULL_STRING,
            "file": {"type": "object", "required": ["size", "sha256", "exists"], "properties": {
                "size": {"type": "integer"}, "sha256": NULL_STRING, "indexed_at": NULL_STRING,
                "exists": {"type": "boolean"}}},
            "urls": {"type": "object", "required": ["page", "api", "media"],
                     "properties": {k: {"type": "string"} for k in ("page", "api", "media", "thumbnail")}},
            "parts": {"type": "array", "description": "All items (windows, passages) of the same file",
                      "items": {"type": "object", "required": ["id"], "properties": {
                          "id": {"type": "integer"}, "start": NULL_NUMBER, "end": NULL_NUMBER}}},
            "segments": {"type": "array", "items": {"type": "object", "properties": {
                "start": {"type": "number"}, "end": {"type": "number"}, "text": {"type": "string"}}}},
            "width": NULL_INT, "height": NULL_INT, "asr_logprob": {"type": "number"},
            "chars": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["data_dir", "indexed", "model", "revision", "items", "files", "last_run", "errors", "indices"],
        "properties": {
            "data_dir": {"type": "string"}, "indexed": {"type": "boolean"}, "model": NULL_STRING,
            "revision": {"type": "integer"},
            "items": {"type": "object", "required": ["image", "audio", "text"],
                      "properties": {m: {"type": "integer"} for m in ("image", "audio", "text")}},
            "files": {"type": "object", "required": ["ok", "error"],
                      "properties": {"ok": {"type": "integer"}, "error": {"type": "integer"},
                                     "by_modality": {"type": "object"}}},
            "last_run": {"type": ["object", "null"], "properties": {
                "started_at": NULL_STRING, "finished_at": NULL_STRING, "summary": {"type": ["object", "null"]}}},
            "errors": {"type": "object", "required": ["total", "shown"], "properties": {
                "total": {"type": "integer"},
                "shown": {"type": "array", "items": {"type": "object", "required": ["path", "error"], "properties": {
                    "path": {"type": "string"}, "error": NULL_STRING}}}}},
            "indices": {"type": "object"},
            "modalities": {"type": "array", "items": {"type": "string"}},
            "hint": {"type": "string"},
        },
    },
    "Health": {
        "type": "object", "required": ["status", "indexed", "model", "revision", "items"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "indexed": {"type": "boolean"},
                       "model": NULL_STRING, "revision": {"type": "integer"}, "items": {"type": "integer"}},
    },
}


@lru_cache(maxsize=1)
def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cross-modal search API", "version": "1.0.0",
                 "description": "Search images, recordings and notes in one embedding space with words, images "
                                "and speech. Every error is JSON: {\"error\": {\"status\", \"code\", \"message\"}}."},
        "paths": {
            "/api/search": {"post": {
                "summary": "Search with one or several inputs fused into one query",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("SearchRequest")},
                    "multipart/form-data": {"schema": _ref("SearchForm")}}},
                "responses": {"200": _json(_ref("SearchResponse"), "One page of hits, best first"),
                              **_errors(400, 404, 413, 415, 422, 503)},
            }},
            "/api/items/{item_id}": {"get": {
                "summary": "An item's metadata, transcript and the other parts of its file",
                "parameters": [ITEM_ID],
                "responses": {"200": _json(_ref("Item"), "The item"), **_errors(404, 503)},
            }},
            "/api/items/{item_id}/media": {"get": {
                "summary": "The item's file (byte ranges supported); notes as UTF-8 text",
                "parameters": [ITEM_ID],
                "responses": {"200": {"description": "The file", "content": {
                    "image/*": {}, "audio/*": {}, "text/plain": {}}},
                    "206": {"description": "A byte range of the file"}, **_errors(404, 422, 503)},
            }},
            "/api/items/{item_id}/thumbnail": {"get": {
                "summary": "A cached WebP thumbnail of an image item",
                "parameters": [ITEM_ID, {"name": "size", "in": "query", "required": False,
                                         "schema": {"type": "integer", "enum": list(SIZES), "default": 256}}],
                "responses": {"200": {"description": "WebP image", "content": {"image/webp": {}}},
                              "304": {"description": "Not modified (ETag)"}, **_errors(400, 404, 422, 503)},
            }},
            "/api/stats": {"get": {
                "summary": "Index status: model, counts per modality, last run, files that failed",
                "responses": {"200": _json(_ref("Stats"), "Status"), **_errors(503)},
            }},
            "/api/health": {"get": {
                "summary": "Liveness: the catalog answers",
                "responses": {"200": _json(_ref("Health"), "Healthy"), **_errors(503)},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }},
        },
        "components": {"schemas": SCHEMAS},
    }
