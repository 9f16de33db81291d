"""The README's curl examples, parsed from README.md and replayed as written through the Flask test client
against the demo archive the README's quick start indexes: each must answer 200 with what it says."""

from __future__ import annotations

import io
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402

README = wt.REPO / "README.md"


def curl_lines() -> list[str]:
    return [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("curl ")]


def as_request(line: str) -> tuple[str, str, dict]:
    """(method, path, test-client keyword arguments) of one curl command line; unknown options fail."""
    args = shlex.split(line)[1:]
    method, url, headers, data, form = None, None, {}, None, []
    while args:
        arg = args.pop(0)
        if arg == "-s":
            continue
        if arg == "-X":
            method = args.pop(0)
        elif arg == "-H":
            name, value = args.pop(0).split(":", 1)
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = args.pop(0)
        elif arg == "-F":
            form.append(args.pop(0).split("=", 1))
        elif not arg.startswith("-") and url is None:
            url = arg
        else:
            raise AssertionError(f"the README's curl line uses {arg!r}, which this test does not replay: {line}")
    assert url, line
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    kwargs: dict = {"headers": headers}
    if form:
        fields: dict[str, list] = {}
        for name, value in form:
            if value.startswith("@"):
                file = wt.REPO / value[1:]
                fields.setdefault(name, []).append((io.BytesIO(file.read_bytes()), file.name))
            else:
                fields.setdefault(name, []).append(value)
        kwargs.update(data=fields, content_type="multipart/form-data")
    elif data is not None:
        kwargs.update(data=data, content_type=headers.pop("Content-Type", "application/x-www-form-urlencoded"))
    return method or ("POST" if form or data is not None else "GET"), path, kwargs


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return create_app({"DATA_DIR": str(wt.demo_archive(tmp_path_factory)), "TESTING": True}).test_client()


def test_readme_has_curl_examples_of_every_upload_field():
    lines = curl_lines()
    assert len(lines) >= 5
    for field in ("audio=@", "image=@", "file=@", "application/json"):
        assert any(field in line for line in lines), field


@pytest.mark.parametrize("line", curl_lines())
def test_readme_curl_example_works_as_written(client, line):
    method, path, kwargs = as_request(line)
    resp = client.open(path, method=method, **kwargs)
    assert resp.status_code == 200, (line, resp.get_json())
    body = resp.get_json()
    if path == "/api/search":
        assert body["hits"], line
        kinds = [i["kind"] for i in body["query"]["inputs"]]
        for field, kind in (("audio=@", "audio"), ("image=@", "image"), ("file=@", "image")):
            if field in line:
                assert kind in kinds, (line, kinds)
        if "a-red-apple.wav" in line:
            assert "apple" in body["hits"][0]["name"], body["hits"][:3]
        if "banana-google.png" in line:
            assert body["hits"][0]["name"] == "banana-google.png", body["hits"][:3]
