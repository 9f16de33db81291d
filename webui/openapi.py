"""The OpenAPI 3.1 document of the JSON API (served at ``/api/openapi.json``).

Written by hand next to the routes; ``tests/test_webui_api.py`` checks that every
``/api`` route and method is documented (and nothing else is) and validates the
routes' real responses against the schemas below.
"""

from __future__ import annotations

from functools import lru_cache

from retrieval.fusion import MAX_WEIGHT
from retrieval.search import TARGETS

from .thumbnails import SIZES

# the default limits (webui.DEFAULT_CONFIG: MAX_K, MAX_RESULTS - 1), the same for JSON and multipart
K = {"type": "integer", "minimum": 1, "maximum": 100}
OFFSET = {"type": "integer", "minimum": 0, "maximum": 999}
ID = {"type": "integer", "minimum": 1, "maximum": 2**62}
NULL_NUMBER = {"type": ["number", "null"]}
NULL_STRING = {"type": ["string", "null"]}
NULL_INT = {"type": ["integer", "null"]}
VECTOR = {"type": "array", "minItems": 1, "maxItems": 4096,  # webui.DEFAULT_CONFIG MAX_VECTOR_DIM
          "items": {"type": "number", "minimum": -1e6, "maximum": 1e6},
          "description": "A raw query vector in the index's model space (its length must be the model's "
                         "dimension, e.g. 384 for the bundled model, else 400 `bad_vector`); normalised to unit "
                         "length before the search. Never re-ranked (there are no query tokens)"}
VECTOR_MODALITY = {"type": "string", "enum": ["image", "audio", "text"], "default": "text",
                   "description": "What the vector was encoded from (picks the score calibration)"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {
        400: "Bad input (empty query, only \"not this\" inputs, unknown target, bad number or weight, malformed JSON, "
             "a query vector whose length is not the model's)",
        404: "Unknown item, or its file is gone",
        413: "Upload over a limit (request size, image pixels, audio seconds, text length)",
        415: "Wrong content type, or an upload that is neither an image nor audio by its content",
        422: "Input that cannot be decoded or encoded (corrupt file, modality the model lacks, no speech)",
        503: "Nothing indexed yet, the catalog database is unreachable, (hybrid) the catalog predates "
             "keyword search, or (audio and image uploads) the server is busy with them: retry after the "
             "`Retry-After` seconds",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


ITEM_ID = {"name": "item_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
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
            "items": {"type": "array", "items": ID,
                      "description": "Indexed items whose stored vectors join the query (\"more like this\"); "
                                     "they are left out of the results"},
            "not_text": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                         "description": "\"Not this\" words (weight -1): items about them are pushed down"},
            "not_items": {"type": "array", "items": ID,
                          "description": "\"Not like this\" items (weight -1); also left out of the results"},
            "vector": VECTOR, "vector_modality": VECTOR_MODALITY,
            "inputs": {"type": "array", "items": _ref("WeightedInput"),
                       "description": "Inputs with explicit weights, in addition to the fields above"},
            "target": {"type": "string", "enum": list(TARGETS), "default": "all"},
            "k": {**K, "default": 20, "description": "Hits per page; offset + k must not exceed 1000"},
            "offset": {**OFFSET, "default": 0},
            "hybrid": {"type": "boolean", "default": False,
                       "description": "Also match the typed words in transcripts, notes and file names (full-text "
                                      "search), fused with the vector hits by reciprocal rank fusion (k = 60). "
                                      "Without typed words it equals vector search"},
            "rerank": {"type": "boolean", "default": True,
                       "description": "Re-rank the first-stage top 100 with the model's cross-attention re-ranker "
                                      "(single-input queries, when the model has one; false = first-stage order)"},
        },
    },
    "WeightedInput": {
        "type": "object", "additionalProperties": False,
        "anyOf": [{"required": ["text"]}, {"required": ["item"]}, {"required": ["vector"]}, {"required": ["file"]}],
        "description": "One query input and its weight. Exactly one of text, item, vector, file (a vector may add "
                       "the modality it was encoded from). Several inputs are scored "
                       "by attention fusion: a hit must match every positive input; negative weights (\"not this\") "
                       "push down items that resemble the input",
        "properties": {
            "text": {"type": "string"}, "item": ID, "vector": VECTOR, "modality": VECTOR_MODALITY,
            "file": {"type": "integer", "minimum": 0, "maximum": 7,
                     "description": "Multipart only: the position (0-based) of a `file` upload this weight is for"},
            "weight": {"type": "number", "minimum": -MAX_WEIGHT, "maximum": MAX_WEIGHT, "not": {"const": 0},
                       "default": 1, "description": "Non-zero; negative = \"not this\""},
        },
    },
    "SearchForm": {
        "type": "object",
        "properties": {
            "text": {"type": "array", "items": {"type": "string"}},
            "item": {"type": "array", "items": ID},
            "not_text": {"type": "array", "items": {"type": "string"}, "description": "\"Not this\" words"},
            "not_item": {"type": "array", "items": ID, "description": "\"Not like this\" items"},
            "not_file": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                         "description": "\"Not like this\" images and audio (weight -1), typed by content"},
            "inputs": {"type": "string", "contentMediaType": "application/json",
                       "description": "JSON list of WeightedInput objects (e.g. [{\"file\": 0, \"weight\": 0.5}])"},
            "vector": {"type": "string", "contentMediaType": "application/json",
                       "description": "A raw query vector as a JSON list of numbers (as `vector` in JSON)"},
            "vector_modality": VECTOR_MODALITY,
            "file": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                     "description": "Images (JPEG, PNG, WebP, GIF, BMP, TIFF) and audio (WAV, FLAC, MP3, OGG, M4A, "
                                    "WebM), typed by content"},
            "image": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                      "description": "Same as `file` (typed by content too); counted after the `file` parts"},
            "audio": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                      "description": "Same as `file` (typed by content too); counted after `file` and `image`"},
            "target": {"type": "string", "enum": list(TARGETS), "default": "all"},
            "k": {**K, "default": 20}, "offset": {**OFFSET, "default": 0},
            "hybrid": {"type": "string", "enum": ["1", "0", "true", "false", "on", "off", "yes", "no", ""],
                       "description": "As `hybrid` in JSON"},
            "rerank": {"type": "string", "enum": ["1", "0", "true", "false", "on", "off", "yes", "no", ""],
                       "description": "As `rerank` in JSON (absent = on)"},
        },
    },
    "Hit": {
        "type": "object", "required": ["id", "rank", "modality", "score", "path", "name"],
        "properties": {
            "id": {"type": "integer"}, "rank": {"type": "integer", "description": "0-based over all pages"},
            "modality": {"type": "string", "enum": ["image", "audio", "text", "video"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "Relevance in [0, 1], comparable across modalities and query kinds: the "
                                     "similarity calibrated per (query kind, target modality, re-ranked or not) on "
                                     "held-out data (see `calibrated`); in hybrid mode the RRF score normalised to "
                                     "(0, 1] (1 = first in both lists)"},
            "similarity": {"type": "number", "description": "What the score was calibrated from: the cosine "
                                                             "similarity (several inputs: the attention-fused score "
                                                             "in the same units; the re-ranked top 100: plus the "
                                                             "re-ranker's correction)"},
            "path": {"type": "string"}, "name": {"type": "string"},
            "text": {"type": "string", "description": "Note excerpt holding the query words, or the transcript "
                                                       "(of the matching sentence for long recordings)"},
            "marks": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                      "description": "[start, end) character ranges of `text` that are query words"},
            "start": {"type": "number", "description": "Seconds: where the matching part starts (a video: the "
                                                        "matched moment, a keyframe's scene or the sentence said)"},
            "end": {"type": "number"},
            "view": {"type": "string", "enum": ["frame", "speech", "both"],
                     "description": "Video hits: whether the moment matched what is shown (its keyframe), what "
                                    "is said (its speech window), or both (relevance >= 0.5 for each); the "
                                    "score fuses both views: hi + lo * (1 - hi)"},
            "window": {"type": "array", "items": {"type": "number"}, "description": "The indexed 30 s window"},
            "width": NULL_INT, "height": NULL_INT,
            "ranks": {"type": "object", "description": "Hybrid: 1-based rank in the vector and keyword lists "
                                                       "(null: not in that list)",
                      "required": ["vector", "keyword"],
                      "properties": {"vector": NULL_INT, "keyword": NULL_INT}},
            "matched": {"type": "array", "items": {"type": "string"},
                        "description": "Hybrid: query words the item's text or file name holds (stemmed match)"},
            "name_marks": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                           "description": "Hybrid: [start, end) ranges of `name` that are matched words"},
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
                "inputs": {"type": "array", "items": {"type": "object", "required": ["kind", "label", "weight"], "properties": {
                    "kind": {"type": "string", "enum": ["text", "image", "audio", "item", "vector"]},
                    "label": {"type": "string"},
                    "weight": {"type": "number", "description": "The input's weight (negative = \"not this\")"},
                    "transcript": {"type": "string", "description": "What the speech recogniser heard"}}}},
                "words": {"type": "array", "items": {"type": "string"}}}},
            "model": {"type": "string"}, "revision": {"type": "integer"},
            "notices": {"type": "array", "items": {"type": "string"},
                        "description": "Said once per result, e.g. that the index holds photographs the bundled "
                                       "pictogram model cannot rank, and how to index them instead"},
            "calibrated": {"type": "boolean", "description": "Whether scores are calibrated relevances (false: the "
                                                             "model has no calibration; scores are cosines clipped "
                                                             "to [0, 1])"},
            "timings_ms": {"type": "object", "properties": {"encode": {"type": "number"}, "search": {"type": "number"}}},
            "rerank": {"type": "object", "required": ["applied", "k"], "properties": {
                "applied": {"type": "boolean", "description": "Whether the top K were re-ranked (the model has a "
                                                              "re-ranker and it was not switched off)"},
                "k": {"type": "integer", "description": "How many first-stage hits were re-ranked (0 = none)"}}},
            "hybrid": {"type": "object", "description": "Present when hybrid search was asked for",
                       "required": ["terms", "keyword_hits", "rrf_k"], "properties": {
                           "terms": {"type": "array", "items": {"type": "string"},
                                     "description": "Keywords searched (empty: no typed words, vector search only)"},
                           "keyword_hits": {"type": "integer", "description": "Items that matched a keyword (up to "
                                                                              "the fusion pool of 1000)"},
                           "rrf_k": {"type": "number"}}},
        },
    },
    "Item": {
        "type": "object", "required": ["id", "modality", "path", "name", "file", "urls", "parts"],
        "properties": {
            "id": {"type": "integer"}, "modality": {"type": "string", "enum": ["image", "audio", "text", "video"]},
            "path": {"type": "string"}, "name": {"type": "string"},
            "view": {"type": ["string", "null"], "enum": ["frame", "speech", None]},
            "keyframes": {"type": "array", "description": "Video: every keyframe of the file, in time order",
                          "items": {"type": "object", "required": ["id", "start", "end", "thumbnail"],
                                    "properties": {"id": {"type": "integer"}, "start": {"type": "number"},
                                                   "end": {"type": "number"}, "thumbnail": {"type": "string"}}}},
            "duration": {"type": "number"},
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
                "start": {"type": "number"}, "end": {"type": "number"}, "text": {"type": "string"},
                "words": {"type": "array", "description": "each word of the sentence with its times (seconds)",
                          "items": {"type": "object", "required": ["word", "start", "end"], "properties": {
                              "word": {"type": "string"}, "start": {"type": "number"},
                              "end": {"type": "number"}}}}}}},
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
    "KnnRequest": {
        "type": "object", "additionalProperties": False, "required": ["num_images"],
        "description": "clip-retrieval 2.45.0's /knn-service request. One query input is used, in this order: "
                       "text, image, image_url, embedding_input",
        "properties": {
            "text": NULL_STRING,
            "image": {"type": ["string", "null"], "contentEncoding": "base64",
                      "description": "An image (or audio) file's bytes, base64; typed by content"},
            "image_url": {"type": ["string", "null"], "description": "Only a result's `url` from this server "
                                                                      "(\"search similar\"); nothing is fetched"},
            "embedding_input": {**VECTOR, "type": ["array", "null"]},
            "embedding_modality": VECTOR_MODALITY,
            "modality": {"type": ["string", "null"], "enum": ["image", "text", "audio", "all", None],
                         "default": "image", "description": "What to search (clip: the image or the text index)"},
            "num_images": {"type": "integer", "minimum": 0, "maximum": 10000,
                           "description": "How many of the hits carry metadata (the rest: id and similarity)"},
            "num_result_ids": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000,
                               "description": "How many hits (default num_images); more than 1000 are cut to 1000"},
            "indice_name": {"type": ["string", "null"], "description": "The name GET /indices-list gives (null: it)"},
            "deduplicate": {"type": ["boolean", "null"], "description": "Drop hits within cosine 0.94 of a better "
                                                                        "one (as clip back)"},
            **{name: {"type": ["boolean", "null"], "description": "Accepted; no effect here"}
               for name in ("use_mclip", "use_safety_model", "use_violence_detector")},
            "aesthetic_score": {"type": ["string", "integer", "null"], "description": "Accepted; no effect here"},
            "aesthetic_weight": {"type": ["string", "number", "null"], "description": "Accepted; no effect here"},
        },
    },
    "KnnHit": {
        "type": "object", "required": ["id", "similarity"],
        "properties": {
            "id": {"type": "integer"}, "similarity": {"type": "number"},
            "caption": {"type": "string"}, "url": {"type": "string", "description": "Thumbnail (images)"},
            "media": {"type": "string"}, "modality": {"type": "string"}, "path": {"type": "string"},
            "score": {"type": "number"}, "start": {"type": "number"}, "end": {"type": "number"},
        },
    },
    "MetadataRequest": {
        "type": "object", "additionalProperties": False, "required": ["ids"],
        "properties": {"ids": {"type": "array", "maxItems": 1000, "items": ID}, "indice_name": NULL_STRING},
    },
    "MetadataResponse": {
        "type": "array", "items": {"type": "object", "required": ["id", "metadata"], "properties": {
            "id": {"type": "integer"},
            "metadata": {"type": ["object", "null"], "description": "As a KnnHit's metadata fields; null: no such item"}}},
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
                    "image/*": {}, "audio/*": {}, "video/*": {}, "text/plain": {}}},
                    "206": {"description": "A byte range of the file"}, **_errors(404, 422, 503)},
            }},
            "/api/items/{item_id}/thumbnail": {"get": {
                "summary": "A cached WebP thumbnail of an image item; a video keyframe's stored JPEG (the "
                           "size parameter is ignored for keyframes)",
                "parameters": [ITEM_ID, {"name": "size", "in": "query", "required": False,
                                         "schema": {"type": "integer", "enum": list(SIZES), "default": 256}}],
                "responses": {"200": {"description": "WebP image (JPEG for a video keyframe)",
                                      "content": {"image/webp": {}, "image/jpeg": {}}},
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
            "/indices-list": {"get": {
                "summary": "clip-retrieval compatible: the index names (one: this data directory)",
                "responses": {"200": _json({"type": "array", "items": {"type": "string"}}, "Index names")},
            }},
            "/knn-service": {"post": {
                "summary": "clip-retrieval compatible search (its front end and ClipClient work unchanged)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("KnnRequest")}}},
                "responses": {"200": _json({"type": "array", "items": _ref("KnnHit")}, "Hits, best first"),
                              **_errors(400, 404, 413, 415, 422, 503)},
            }},
            "/metadata": {"post": {
                "summary": "clip-retrieval compatible: metadata of result ids",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MetadataRequest")}}},
                "responses": {"200": _json(_ref("MetadataResponse"), "Per id, in order"), **_errors(400, 503)},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }},
        },
        "components": {"schemas": SCHEMAS},
    }
