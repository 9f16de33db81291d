"""Slow queries (audio, image uploads) have their own per-process gate: text is answered while it is full, and
an audio query beyond its capacity gets 503 with Retry-After (not a thread held for minutes)."""

from __future__ import annotations

import io
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402
from webui.slow import SlowBusy  # noqa: E402

CLIP = (wt.FIXTURES / "speech" / "dog_park.wav").read_bytes()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow_notes")
    shutil.copytree(wt.FIXTURES / "notes", root / "notes")
    wt.index_folder(root / "notes", root / "data")
    app = create_app({"DATA_DIR": str(root / "data"), "TESTING": True, "SLOW_SLOTS": 1, "SLOW_QUEUE": 1,
                      "SLOW_WAIT_SECONDS": 0.5})
    assert _audio(app.test_client()).status_code == 200  # Whisper loaded before the timing below
    return app


def _audio(client):
    return client.post("/api/search", data={"file": (io.BytesIO(CLIP), "q.wav"), "target": "text"},
                       content_type="multipart/form-data")


def _text(client, words: str = "a dog in the park"):
    t0 = time.perf_counter()
    resp = client.post("/api/search", json={"text": words, "k": 3})
    return resp, time.perf_counter() - t0


def _swallow_busy(gate) -> None:
    try:
        with gate.enter():
            pass
    except SlowBusy:  # gave up after SLOW_WAIT_SECONDS, as a waiting request would
        pass


def _busy(resp) -> None:
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == "busy" and int(resp.headers["Retry-After"]) >= 1


def test_text_answers_while_the_slow_gate_is_full_and_more_audio_is_503(app):
    gate = app.extensions["webui.slow"]
    client = app.test_client()
    release = threading.Event()
    inside = threading.Barrier(3)

    def hold() -> None:  # occupy the slot and the queue place as two slow requests would
        with gate.enter():
            inside.wait()
            release.wait(30)

    def queued() -> None:
        inside.wait()
        try:
            with gate.enter():
                pass
        except SlowBusy:  # gave up after SLOW_WAIT_SECONDS, as a waiting request would
            pass

    holder, waiter = threading.Thread(target=hold), threading.Thread(target=queued)
    holder.start(), waiter.start()
    inside.wait()
    time.sleep(0.05)  # the second one now waits in the queue
    try:
        t0 = time.perf_counter()
        _busy(_audio(client))  # no place left: refused at once
        assert time.perf_counter() - t0 < 0.4
        # a picture waits at its own gate, not behind Whisper: answered while the recordings' gate is full
        png = (wt.REPO / "demo" / "images" / "dog-face-google.png").read_bytes()
        pic = client.post("/api/search", data={"file": (io.BytesIO(png), "x.png"), "target": "text"},
                          content_type="multipart/form-data")
        assert pic.status_code == 200, pic.get_json()
        pictures, held, free = app.extensions["webui.slow_image"], threading.Barrier(2), threading.Event()

        def hold_picture_slot() -> None:
            with pictures.enter():
                held.wait()
                free.wait(30)

        holders = [threading.Thread(target=hold_picture_slot) for _ in range(2)]  # one runs, one waits in queue
        holders[0].start()
        held.wait()
        held.reset()
        try:
            holders[1] = threading.Thread(target=lambda: _swallow_busy(pictures))
            holders[1].start()
            time.sleep(0.05)
            _busy(client.post("/api/search", data={"file": (io.BytesIO(png), "x.png")},  # its own gate full: 503
                              content_type="multipart/form-data"))
        finally:
            free.set()
            for t in holders:
                t.join()
        for words in ("a dog in the park", "rain tomorrow", "the stock market"):
            resp, _ = _text(client, words)  # answered while the slot and the queue place are still held
            assert resp.status_code == 200 and resp.get_json()["hits"], resp.get_json()
        form = client.post("/api/search", data={"text": "rain"}, content_type="multipart/form-data")
        assert form.status_code == 200  # a form without files is fast
    finally:
        release.set()
        holder.join(), waiter.join()
    assert _audio(client).status_code == 200


def test_real_audio_queries_beyond_capacity_wait_then_get_503(app):
    results: list[int] = []
    headers: list[str | None] = []

    def one() -> None:
        resp = _audio(app.test_client())
        results.append(resp.status_code)
        headers.append(resp.headers.get("Retry-After"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    resp, _ = _text(app.test_client())
    for t in threads:
        t.join()
    assert resp.status_code == 200 and resp.get_json()["hits"]
    assert results.count(200) >= 1 and results.count(503) >= 1, results
    assert all(h for code, h in zip(results, headers) if code == 503)


def test_slow_queries_run_on_lower_priority_threads_in_the_request_context(app):
    """Whisper and the image tower run on the gate's own threads, niced by SLOW_NICE (the threads they start
    inherit it), so a typed query gets the cores first; the request's context goes with them."""
    import os

    from flask import request

    from webui.slow import SlowGate

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = priority()
    gate = SlowGate(1, 0, 0.5, nice=7)
    with app.test_request_context("/api/search?k=3"):
        inside, path, tid = gate.run(lambda: (priority(), request.path, threading.get_native_id()))
    assert tid != threading.get_native_id() and path == "/api/search"
    assert inside == min(19, base + 7) and priority() == base  # the request thread keeps its priority
    with pytest.raises(ZeroDivisionError):  # an error in the slow part reaches the request's error handling
        gate.run(lambda: 1 / 0)
    assert app.extensions["webui.slow"].nice == app.config["SLOW_NICE"] == 10
    with pytest.raises(ValueError, match="SLOW_NICE"):
        SlowGate(1, 0, 0.5, nice=40)
