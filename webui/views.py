"""Read models shared by the JSON API and the HTML pages: an item, the index status."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from indexer import repository as repo
from indexer.notices import notices
from retrieval.encoders import MODALITIES

from .engine import Engine
from .errors import ApiError

STATUS_ERRORS_SHOWN = 100
WORDS = re.compile(r"\w")  # ASR segments that are only punctuation are not shown


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value is not None else None)


def item_urls(item_id: int, modality: str) -> dict[str, str]:
    urls = {"page": f"/items/{item_id}", "api": f"/api/items/{item_id}", "media": f"/api/items/{item_id}/media"}
    if modality in ("image", "video"):  # a video item's: its keyframe's (or, for speech, the scene's)
        urls["thumbnail"] = f"/api/items/{item_id}/thumbnail"
    return urls


def load_item(engine: Engine, item_id: int) -> dict:
    """The raw catalog row of an item (with its file's path), or a 404 ApiError."""
    with engine.session() as s:
        row = repo.item_detail(s, item_id)
        if row is None:
            raise ApiError(f"item {item_id} does not exist (it may have been removed by a later indexer run); "
                           "search again", 404, "unknown_item")
        row["parts"] = repo.items_of_file(s, row["file"]["id"])
        if row["modality"] == "video":  # the transcript of every speech window of the file
            row["speech"] = {i: m["extra"] for i, m in
                             repo.item_hits(s, [p["id"] for p in row["parts"] if p["view"] == "speech"]).items()}
    return row


def item_json(engine: Engine, item_id: int) -> dict:
    row = load_item(engine, item_id)
    f, extra = row["file"], row["extra"]
    out: dict[str, Any] = {
        "id": row["id"], "modality": row["modality"], "path": f["path"], "name": Path(f["path"]).name,
        "start": row["start"], "end": row["end"], "text": row["content"],
        "file": {"size": f["size"], "sha256": f["sha256"], "indexed_at": _iso(f["indexed_at"]),
                 "exists": Path(f["path"]).is_file()},
        "urls": item_urls(row["id"], row["modality"]),
        "parts": [{"id": p["id"], "start": p["start"], "end": p["end"]} for p in row["parts"]],
    }
    if row["modality"] == "image":
        out["width"], out["height"] = extra.get("width"), extra.get("height")
    if row["modality"] == "audio":
        out["segments"] = [_segment_json(s) for s in extra.get("segments") or [] if WORDS.search(s.get("text") or "")]
        if extra.get("asr_logprob") is not None:
            out["asr_logprob"] = extra["asr_logprob"]
    if row["modality"] == "text" and extra.get("chars"):
        out["chars"] = extra["chars"]
    if row["modality"] == "video":
        out.update(_video_json(row))
    return out


def _segment_json(seg: dict) -> dict:
    """A transcript sentence with its times and, where the catalog has them, its words' times."""
    out = {"start": seg.get("start"), "end": seg.get("end"), "text": (seg.get("text") or "").strip()}
    if seg.get("words"):
        out["words"] = [{"word": w, "start": a, "end": b} for w, a, b in seg["words"]]
    return out


def _video_json(row: dict) -> dict:
    """A video item's file: its keyframes (the strip) and its transcript with times (overlapping speech
    windows hear the same sentence twice: each is listed once)."""
    parts = row["parts"]
    frames = [p for p in parts if p["view"] == "frame"]
    segments: list[dict] = []
    for p in parts:
        if p["view"] == "speech":
            for seg in (row["speech"].get(p["id"]) or {}).get("segments") or []:
                if WORDS.search(seg.get("text") or "") and not (segments and seg["start"] < segments[-1]["end"] - 0.1):
                    segments.append(_segment_json(seg))
    return {"view": row.get("view"), "duration": (row["extra"] or {}).get("duration") or (frames[-1]["end"] if frames else None),
            "keyframes": [{"id": p["id"], "start": p["start"], "end": p["end"],
                           "thumbnail": f"/api/items/{p['id']}/thumbnail"} for p in frames],
            "segments": segments}


def _catalog_counts(engine: Engine) -> dict:
    """Items per modality, files per status and the first errors: GROUP BYs over the whole catalog (660 ms at
    1M items), so :func:`stats_json` keeps them per catalog revision (every write bumps it)."""
    with engine.session() as s:
        counts = repo.item_counts(s)
        files = repo.file_counts(s)
        total_errors, errors = repo.file_errors_page(s, STATUS_ERRORS_SHOWN)
    return {"items": counts,
            "files": {"ok": sum(files.get("ok", {}).values()), "error": sum(files.get("error", {}).values()),
                      "by_modality": {m: n for m, n in files.get("ok", {}).items()}},
            "errors": {"total": total_errors, "shown": [{"path": p, "error": e} for p, e in errors]}}


def stats_json(engine: Engine) -> dict:
    out: dict[str, Any] = {"data_dir": str(engine.data_dir), "indexed": False, "model": None, "revision": 0,
                           "items": {m: 0 for m in MODALITIES}, "files": {"ok": 0, "error": 0},
                           "last_run": None, "errors": {"total": 0, "shown": []}, "indices": {}}
    state = engine.read_state()
    if state is None or state[0] is None:
        out["hint"] = f"nothing is indexed yet; run `python -m indexer add PATH --data-dir {engine.data_dir}`"
        return out
    out["model"], out["revision"] = state
    with engine.session() as s:
        run = repo.last_run(s)  # one row by primary key: read every time (a run that changed nothing bumps no revision)
        last = None if run is None else {"started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
                                          "summary": run.summary}
    kept = engine.kept_for_revision("stats", state[1], lambda: _catalog_counts(engine))
    out["items"].update(kept["items"])
    videos = sum(n for m, n in kept["items"].items() if m.startswith("video-"))
    if videos:  # the Video tab's count (its segments are counted per index too: video-frame, video-speech)
        out["items"]["video"] = videos
    out["indexed"] = sum(kept["items"].values()) > 0
    out["files"] = kept["files"]
    out["last_run"] = last
    out["errors"] = kept["errors"]

    def photo_notices() -> list[str]:
        with engine.session() as s:
            return notices(s, out["model"])

    out["notices"] = engine.kept_for_revision("notices", state[1], photo_notices)
    snap = engine.snapshot()
    if snap.service is not None:
        out["indices"] = {m: {"count": i.count, "factory": i.manifest.factory, "dim": i.manifest.dim}
                          for m, i in snap.service.searcher.indices.items()}
        out["modalities"] = list(snap.service.model.modalities)  # what a query may contain
    return out
