"""Uploads cannot blow up a worker's memory: counts are checked before any file is read, big images are
downscaled while decoding, the decoded pixels of one request are bounded, and the memory is given back.

Memory is this process's own (the Flask app runs in it): peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) and RSS after the request, from ``/proc/self/status``.
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402

MB = 1024 * 1024


def big_png(width: int, height: int, colour: bytes = b"\x20\x80\xe0") -> bytes:
    """A flat-colour RGB PNG of ``width`` x ``height``, written row by row (small file, huge image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + colour * width
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := current RSS


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("upload_notes")
    shutil.copytree(wt.FIXTURES / "notes", root / "notes")
    wt.index_folder(root / "notes", root / "data")
    app = create_app({"DATA_DIR": str(root / "data"), "TESTING": True})
    c = app.test_client()
    small = big_png(64, 64)  # load the image tower once, outside the measurements
    assert c.post("/api/search", data={"file": (io.BytesIO(small), "s.png")},
                  content_type="multipart/form-data").status_code == 200
    return c


def _post(client, files: list[bytes], **fields):
    data = {"file": [(io.BytesIO(b), f"big{i}.png") for i, b in enumerate(files)], **fields}
    return client.post("/api/search", data=data, content_type="multipart/form-data")


def _measure(client, files: list[bytes], **fields) -> tuple[object, float, float]:
    """(response, peak RSS growth MB, RSS growth MB after the response)."""
    before = _status_kb("VmRSS")
    _reset_peak()
    resp = _post(client, files, **fields)
    peak = _status_kb("VmHWM") - before
    after = _status_kb("VmRSS") - before
    return resp, peak / 1024, after / 1024


def test_big_images_are_downscaled_while_decoding_and_memory_is_given_back(client):
    png = big_png(7000, 7000)  # 49 Mpx: 147 MB as RGB pixels, 143 KB as a file
    assert len(png) < 200_000
    resp, peak, kept = _measure(client, [png, big_png(7000, 7000, b"\xe0\x20\x20")], target="text", k="3")
    assert resp.status_code == 200, resp.get_json()
    assert [i["kind"] for i in resp.get_json()["query"]["inputs"]] == ["image", "image"]
    # one full-size decode at a time (147 MB), downscaled to <= 1024 px before the next; nothing big kept
    assert peak < 330, f"peak RSS grew {peak:.0f} MB for two 49 Mpx uploads"
    assert kept < 60, f"RSS stayed {kept:.0f} MB higher after the request"


def test_pixels_per_request_are_bounded_before_decoding(client):
    png = big_png(7000, 7000)
    resp, peak, kept = _measure(client, [png] * 3)  # 147 Mpx in one request
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "too_large"
    assert "Mpx in all" in resp.get_json()["error"]["message"]
    assert peak < 40, f"refusing took {peak:.0f} MB"


def test_input_count_is_checked_before_any_file_is_read(client):
    png = big_png(7000, 7000)
    resp, peak, _ = _measure(client, [png] * 16)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "too_many_inputs"
    assert peak < 40, f"refusing took {peak:.0f} MB"
    resp = _post(client, [png] * 8, text="one more")
    assert resp.status_code == 400 and "at most 8 inputs; got 9" in resp.get_json()["error"]["message"]
