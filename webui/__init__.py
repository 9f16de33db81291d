"""Web UI and JSON API over a data directory built by the indexer.

``create_app(test_config=None)`` is the Flask app factory (the Flask tutorial's
pattern). Configuration, in order: :data:`DEFAULT_CONFIG`, then ``WEBUI_*``
environment variables (``WEBUI_DATA_DIR``, ``WEBUI_MAX_AUDIO_SECONDS``, ...
values parsed as JSON where they are), then ``test_config`` (its ``None``
values do not override).

Each process creates one app, hence one :class:`~webui.engine.Engine`: the
catalog, the FAISS indices and the model are loaded once and shared by the
worker's threads. ``python -m webui`` serves it with gunicorn (several worker
processes, each with a few threads, reading the same data directory); see
:mod:`webui.server`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter

from indexer.db import data_dir_from

from . import errors
from .engine import Engine
from .fast_json import OrjsonProvider
from .slow import SlowGate
from .thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "DATA_DIR": None,  # None: $RETRIEVAL_DATA_DIR, else ./data (as for the CLIs)
    "DATABASE_URL": None,  # None: $DATABASE_URL, else the SQLite file in the data dir
    "THUMBNAIL_DIR": None,  # None: DATA_DIR/thumbnails
    "MAX_CONTENT_LENGTH": 25 * 1000 * 1000,  # bytes per request, all uploads together
    "MAX_IMAGE_PIXELS": 50_000_000,  # per uploaded image (a 50 Mpx phone photo passes)
    "MAX_REQUEST_PIXELS": 100_000_000,  # all uploaded images of one query together (checked before decoding)
    "UPLOAD_IMAGE_SIDE": 1024,  # uploads are downscaled to this while decoding (the towers take <= 224 px)
    "MAX_AUDIO_SECONDS": 120.0,  # per uploaded or recorded clip: a spoken query, not a podcast
    "MAX_TEXT_CHARS": 1000,  # per text input
    "MAX_INPUTS": 8,  # inputs fused into one query
    "CLIP_INDEX_NAME": None,  # the index name of the clip-retrieval compatible routes (None: the data dir's name)
    "MAX_VECTOR_DIM": 4096,  # numbers in a raw query vector (its length must also be the index's)
    "DEFAULT_K": 20,
    "MAX_K": 100,
    "MAX_RESULTS": 1000,  # offset + k
    "RELOAD_CHECK_SECONDS": 2.0,  # how often a worker asks the catalog for a newer revision
    "WARMUP": True,  # load the indices and the text tower when the app is created
    "SLOW_SLOTS": 1,  # audio / image-upload queries running at once per process (webui.slow)
    "SLOW_QUEUE": 1,  # more that may wait for a slot; beyond: 503 + Retry-After
    "SLOW_WAIT_SECONDS": 2.0,  # how long one waits before its 503
    "SLOW_NICE": 10,  # slow queries run on threads this much nicer, so typed ones get the cores first (0: off)
    "TOKEN": None,  # $WEBUI_TOKEN: writing requests need "Authorization: Bearer <token>" (webui.security)
    "TORCH_THREADS": None,  # intra-op threads per worker process (None: torch's default)
}


MAX_ITEM_ID = 2**63 - 1  # ids are SQL BIGINTs; a larger number in a URL is a 404, not an overflow


class ItemIdConverter(IntegerConverter):
    """``<id:item_id>``: an item id in a URL, 1 .. 2**63 - 1 (anything else does not match: 404)."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 (werkzeug's name)
        super().__init__(map, min=1, max=MAX_ITEM_ID)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)  # keys in the order they are built; orjson: ~10x faster for 100 hits
    app.config.from_mapping(DEFAULT_CONFIG)
    app.config.from_prefixed_env("WEBUI")
    if "WEBUI_TOKEN" in os.environ:  # a string as written (from_prefixed_env would parse "123" as a number)
        app.config["TOKEN"] = os.environ["WEBUI_TOKEN"]
    if test_config is not None:
        app.config.update({k: v for k, v in test_config.items() if v is not None or k not in app.config})
    data_dir = data_dir_from(app.config["DATA_DIR"])
    app.config["DATA_DIR"] = str(data_dir)
    if app.config["TORCH_THREADS"]:
        import torch

        torch.set_num_threads(int(app.config["TORCH_THREADS"]))

    engine = Engine(data_dir, app.config["DATABASE_URL"], float(app.config["RELOAD_CHECK_SECONDS"]))
    app.extensions["webui.engine"] = engine
    for gate in ("webui.slow", "webui.slow_image"):  # recordings (Whisper) and pictures: one gate each
        app.extensions[gate] = SlowGate(int(app.config["SLOW_SLOTS"]), int(app.config["SLOW_QUEUE"]),
                                        float(app.config["SLOW_WAIT_SECONDS"]), int(app.config["SLOW_NICE"]))
    app.extensions["webui.thumbnails"] = ThumbnailCache(Path(app.config["THUMBNAIL_DIR"] or data_dir / "thumbnails"))

    from . import api, clip_compat, limits, pages, security

    app.url_map.converters["id"] = ItemIdConverter
    app.register_blueprint(api.bp)
    app.register_blueprint(clip_compat.bp)
    app.register_blueprint(pages.bp)
    errors.register(app)
    limits.register(app)
    security.register(app)

    if app.config["WARMUP"]:
        try:
            engine.warm_up()
        except Exception as exc:  # an empty or unreachable catalog must not stop the server
            log.warning("warm-up skipped: %s", exc)
    return app
