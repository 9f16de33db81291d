"""Access: no unprotected public bind, the write token rule (one before_request for every writing route), and
nosniff + CSP headers on every response."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402
from webui.security import check_bind  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def notes_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("access_notes")
    shutil.copytree(wt.FIXTURES / "notes", root / "notes")
    wt.index_folder(root / "notes", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def token_app(notes_data):
    app = create_app({"DATA_DIR": str(notes_data), "TESTING": True, "TOKEN": TOKEN})

    @app.post("/api/_test/write")  # stands for the writing routes to come
    def _write():
        return {"written": True}

    return app


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_public_bind_without_token_exits_2_with_what_to_do(host, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WEBUI_TOKEN"}
    try:  # a server that starts instead of refusing would run until the timeout
        proc = subprocess.run([sys.executable, "-m", "webui", "--host", host, "--port", str(wt.free_port()),
                               "--data-dir", str(tmp_path)], cwd=wt.REPO, env=env, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m webui --host {host} served without a token instead of refusing")
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "WEBUI_TOKEN" in proc.stderr and "--public" in proc.stderr and "Traceback" not in proc.stderr


def test_bind_rules():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert check_bind(host, None, False) is None, host
    assert check_bind("0.0.0.0", None, False) and check_bind("0.0.0.0", "", False)
    assert check_bind("0.0.0.0", TOKEN, False) is None and check_bind("0.0.0.0", None, True) is None


def test_writing_needs_the_token_and_search_does_not(token_app):
    c = token_app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        resp = c.post("/api/_test/write", headers=headers)
        assert resp.status_code == 401 and resp.mimetype == "application/json", (headers, resp.data)
        assert resp.get_json()["error"]["code"] == "unauthorized" and "Bearer" in resp.headers["WWW-Authenticate"]
        assert "Authorization: Bearer" in resp.get_json()["error"]["message"]
    assert c.post("/api/_test/write", headers={"Authorization": f"Bearer {TOKEN}"}).get_json() == {"written": True}
    assert c.delete("/api/items/1").status_code == 401  # any non-read method, whatever the route
    assert c.delete("/api/items/1", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    assert c.post("/api/search", json={"text": "Apollo", "k": 1}).status_code == 200  # read-only POST
    assert c.get("/api/health").status_code == 200 and c.get("/").status_code == 200


def test_token_from_the_environment_stays_a_string(notes_data, monkeypatch):
    monkeypatch.setenv("WEBUI_TOKEN", "12345")  # from_prefixed_env would make it the number 12345
    app = create_app({"DATA_DIR": str(notes_data), "TESTING": True, "WARMUP": False})
    assert app.config["TOKEN"] == "12345"


def test_every_response_has_nosniff_and_a_csp(token_app):
    c = token_app.test_client()
    responses = [c.get("/"), c.get("/status"), c.get("/api/health"), c.get("/api/stats"), c.get("/api/openapi.json"),
                 c.post("/api/search", json={"text": "Apollo", "k": 1}), c.post("/api/search", json={}),
                 c.get("/api/nothing"), c.get("/no/page"), c.get("/static/app.js"), c.post("/api/_test/write"),
                 c.open("/", method="TRACE")]
    for resp in responses:
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", resp
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "default-src" in csp and "frame-ancestors 'none'" in csp, (resp, csp)
    assert "script-src 'self'" in responses[0].headers["Content-Security-Policy"]
    assert responses[2].headers["Content-Security-Policy"].startswith("default-src 'none'")
