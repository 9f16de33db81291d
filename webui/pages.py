"""HTML pages: the search page (driven by static/app.js), an item page, the index status page."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from .engine import Engine
from .errors import ApiError
from .views import item_json, stats_json

bp = Blueprint("pages", __name__)


def engine() -> Engine:
    return current_app.extensions["webui.engine"]


def _limits() -> dict:
    c = current_app.config
    return {"maxBytes": c["MAX_CONTENT_LENGTH"], "maxAudioSeconds": c["MAX_AUDIO_SECONDS"],
            "maxInputs": c["MAX_INPUTS"], "maxTextChars": c["MAX_TEXT_CHARS"], "k": c["DEFAULT_K"]}


@bp.get("/")
def index():
    return render_template("index.html", limits=_limits())


@bp.get("/items/<id:item_id>")
def item(item_id: int):
    try:
        data = item_json(engine(), item_id)
    except ApiError as exc:
        return render_template("error.html", status=exc.status, message=exc.message), exc.status
    return render_template("item.html", item=data)


@bp.get("/status")
def status():
    return render_template("status.html", stats=stats_json(engine()))
