"""Bad requests never cause a 5xx: a hand-written probe list through the Flask test client, and the real gunicorn
server's own limits (request line, header size) answered as JSON.

Every probe must get a 4xx with the API's JSON error (``{"error": {"status", "code", "message"}}``), no trace.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402
from webui.limits import GUNICORN_REQUEST_LINE, MAX_HEADER_BYTES, MAX_URL_BYTES  # noqa: E402

BIG = str(2**63)
NESTED = "[" * 1000 + "]" * 1000


@pytest.fixture(scope="module")
def notes_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe_notes")
    shutil.copytree(wt.FIXTURES / "notes", root / "notes")
    wt.index_folder(root / "notes", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def client(notes_data):
    return create_app({"DATA_DIR": str(notes_data), "TESTING": False}).test_client()


def _json(body: str) -> dict:
    return {"data": body, "content_type": "application/json"}


def _form(**fields) -> dict:
    return {"data": fields, "content_type": "multipart/form-data"}


PROBES = [  # (method, url, request keyword arguments, expected status)
    ("GET", f"/api/items/{BIG}", {}, 404),
    ("GET", f"/api/items/{BIG}/media", {}, 404),
    ("GET", f"/api/items/{BIG}/thumbnail", {}, 404),
    ("GET", f"/api/items/{'9' * 40}", {}, 404),
    ("GET", f"/items/{BIG}", {"headers": {"Accept": "application/json"}}, 404),
    ("POST", "/api/search", _json('{"text": "dog", "k": Infinity}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "k": 1e400}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "k": NaN}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "offset": 1e400}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "offset": -Infinity}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "k": 1.5}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "target": {}}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "target": []}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "target": 0}'), 400),
    ("POST", "/api/search", _json('{"items": [1e400]}'), 400),
    ("POST", "/api/search", _json(f'{{"items": [{BIG}]}}'), 400),
    ("POST", "/api/search", _json('{"inputs": [{"item": Infinity}]}'), 400),
    ("POST", "/api/search", _json('{"inputs": [{"text": "dog", "weight": Infinity}]}'), 400),
    ("POST", "/api/search", _json('{"text": ' + NESTED + "}"), 400),
    ("POST", "/api/search", _json(NESTED), 400),
    ("POST", "/api/search", _json('{"text": "\\ud800"}'), 400),
    ("POST", "/api/search", _json('{"text": ["dog", "\\udfff cat"]}'), 400),
    ("POST", "/api/search", _json('{"text": "dog\\u0000"}'), 400),
    ("POST", "/api/search", _json('{"text": "dog", "hybrid": "maybe"}'), 400),
    ("POST", "/api/search", {"data": b"\xff\xfe\x00garbage", "content_type": "application/json"}, 400),
    ("POST", "/api/search", _form(text="dog", k="1.5"), 400),
    ("POST", "/api/search", _form(text="dog", k="Infinity"), 400),
    ("POST", "/api/search", _form(text="dog", k="1e400"), 400),
    ("POST", "/api/search", _form(text="dog", offset="9" * 5000), 400),
    ("POST", "/api/search", _form(item=BIG), 400),
    ("POST", "/api/search", _form(text="dog", inputs=NESTED), 400),
    ("POST", "/api/search", _form(text="dog", inputs='[{"file": Infinity}]'), 400),
    ("POST", "/api/search", _form(text="dog", inputs='[{"file": 1e400}]'), 400),
    ("TRACE", "/", {}, 405),
    ("TRACE", "/api/health", {}, 405),
    ("POST", "/", {}, 405),
    ("PUT", "/status", {}, 405),
    ("DELETE", "/items/1", {}, 405),
    ("PATCH", "/", {}, 405),
    ("PUT", "/api/search", {}, 405),
    ("GET", "/api/stats?" + "x" * (MAX_URL_BYTES + 1), {}, 414),
    ("GET", "/api/health", {"headers": {"X-Long": "y" * (MAX_HEADER_BYTES + 1)}}, 431),
]


@pytest.mark.parametrize("method, url, kwargs, status", PROBES, ids=[f"{m} {u[:40]} {k.get('data', '')!s:.40}"
                                                                     for m, u, k, _ in PROBES])
def test_bad_request_is_a_4xx_json_error(client, method, url, kwargs, status):
    resp = client.open(url, method=method, **kwargs)
    assert resp.status_code < 500, (resp.status_code, resp.data[:300])
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert resp.mimetype == "application/json", resp.data[:300]
    err = resp.get_json()["error"]
    assert err["status"] == status and err["code"] and err["message"]
    assert "Traceback" not in resp.data.decode("utf-8", "replace")
    if status == 405:
        assert resp.headers.get("Allow")


def test_page_routes_still_answer_html_to_browsers(client):
    resp = client.get(f"/items/{BIG}")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert client.get("/").status_code == 200


def test_integral_numbers_still_work(client):
    for body in ({"text": "Apollo", "k": 2.0}, {"text": "Apollo", "k": 2}):
        resp = client.post("/api/search", json=body)
        assert resp.status_code == 200 and len(resp.get_json()["hits"]) == 2, resp.get_json()
    resp = client.post("/api/search", data={"text": "Apollo", "k": " 2 "}, content_type="multipart/form-data")
    assert resp.status_code == 200 and len(resp.get_json()["hits"]) == 2


def test_multipart_schema_has_the_json_bounds(client):
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    form, body = schemas["SearchForm"]["properties"], schemas["SearchRequest"]["properties"]
    for name in ("k", "offset"):
        for key in ("type", "minimum", "maximum"):
            assert form[name][key] == body[name][key], (name, key)
    assert form["item"]["items"]["minimum"] == 1 and form["target"]["enum"] == body["target"]["enum"]


def _raw(url: str, method: str, path: str, headers: dict | None = None) -> tuple[int, str, dict]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_real_server_answers_long_urls_and_headers_as_json(notes_data, tmp_path):
    server = wt.start_server(notes_data, tmp_path, workers=1, threads=2)
    try:
        for path, headers, status in [
            ("/api/stats?" + "x" * (MAX_URL_BYTES + 10), None, 414),  # Flask's limit
            ("/api/stats?" + "x" * (GUNICORN_REQUEST_LINE + 10), None, 414),  # gunicorn's own
            ("/api/health", {"X-Long": "y" * (MAX_HEADER_BYTES + 10)}, 431),
            ("/api/health", {"X-Long": "y" * 20_000}, 431),
        ]:
            got, ctype, body = _raw(server.url, "GET", path, headers)
            assert (got, ctype.split(";")[0]) == (status, "application/json"), (path[:30], got, ctype)
            assert body["error"]["status"] == status and "limit" in body["error"]["message"]
        assert _raw(server.url, "TRACE", "/")[:2] == (405, "application/json")
    finally:
        server.stop()
