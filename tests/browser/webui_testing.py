"""Shared by the web UI tests (Flask client and browser): indexed archives and real servers.

Archives are indexed through the real pipeline once per pytest process and
cached here, so `tests/test_webui_api.py` and `tests/browser/` share them (both
import this module by the same name). Servers are the real `python -m webui`
(gunicorn) on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
DEMO = REPO / "demo"

_ARCHIVES: dict[str, Path] = {}


def index_folder(folder: Path, data_dir: Path, model: str | None = None, database_url: str | None = None) -> dict:
    """`indexer add` through the real pipeline, in this process (the model stays loaded for the app)."""
    from indexer.catalog import Catalog
    from indexer.pipeline import AddOptions, add

    catalog = Catalog(data_dir, database_url=database_url)
    try:
        return add([folder], catalog, AddOptions(model=model, progress=False)).as_dict(with_timings=False)
    finally:
        catalog.close()


def speech_archive(tmp_path_factory) -> Path:
    """Spoken clips, notes, the long meeting recording and one broken image, indexed with the default model."""
    if "speech" not in _ARCHIVES:
        root = tmp_path_factory.mktemp("webui_speech")
        archive = root / "archive"
        for name in ("speech", "notes", "long"):
            shutil.copytree(FIXTURES / name, archive / name, ignore=shutil.ignore_patterns("*.json"))
        shutil.copy(FIXTURES / "corrupt" / "truncated.png", archive / "broken.png")  # shows up as an error
        summary = index_folder(archive, root / "data")
        assert summary["added"] == 15 and summary["errors"] == 1, summary
        _ARCHIVES["speech"] = root / "data"
    return _ARCHIVES["speech"]


def shape_images(folder: Path, n: int = 8) -> list[Path]:
    """Distinct coloured-shape images (the same recipe as tests/test_search.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = ["red", "green", "blue", "orange", "purple", "black", "yellow", "cyan"]
    paths = []
    for i in range(n):
        img = Image.new("RGB", (96, 96), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle((8 + 4 * i, 8, 60 + 3 * i, 50 + 5 * i), fill=colours[i % 8])
        draw.ellipse((50 - 4 * i, 40, 90, 90 - 3 * i), fill=colours[(i + 3) % 8])
        path = folder / f"shape_{i}.png"
        img.save(path)
        paths.append(path)
    return paths


def image_archive(tmp_path_factory, tiny_openclip: Path) -> Path:
    """Generated images and two notes indexed with the tiny random-weight OpenCLIP model."""
    if "image" not in _ARCHIVES:
        root = tmp_path_factory.mktemp("webui_images")
        shape_images(root / "archive" / "photos")
        (root / "archive" / "notes").mkdir()
        (root / "archive" / "notes" / "shapes.txt").write_text("Coloured rectangles and circles on white.")
        (root / "archive" / "notes" / "garden.txt").write_text("Tomatoes and basil grow in the garden.")
        summary = index_folder(root / "archive", root / "data", model=f"openclip:{tiny_openclip}")
        assert summary["added"] == 10 and summary["errors"] == 0, summary
        _ARCHIVES["image"] = root / "data"
    return _ARCHIVES["image"]


def demo_has_images() -> bool:
    """Whether the bundled default model encodes images and the demo archive is there."""
    from retrieval.encoders import create_model

    return (DEMO / "images").is_dir() and "image" in create_model().modalities


def demo_archive(tmp_path_factory) -> Path:
    """The committed demo archive, indexed with the default model."""
    if "demo" not in _ARCHIVES:
        root = tmp_path_factory.mktemp("webui_demo")
        summary = index_folder(DEMO, root / "data")
        assert summary["added"] > 0, summary
        _ARCHIVES["demo"] = root / "data"
    return _ARCHIVES["demo"]


# ---------------------------------------------------------------- real servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # gunicorn: graceful stop of the arbiter and its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(data_dir: Path, log_dir: Path, workers: int = 1, threads: int = 4, env: dict | None = None,
                 timeout: float = 180) -> Server:
    """`python -m webui` on a free port; returns once /api/health answers."""
    port = free_port()
    log = log_dir / f"webui-{port}.log"
    full_env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webui", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--threads", str(threads)],
            cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"python -m webui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if get_json(server.url + "/api/health", timeout=2)["status"] == "ok":
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise AssertionError(f"python -m webui did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def wait_until(pg, expression: str, timeout: float = 60) -> None:
    """Poll a JS expression from here: page.wait_for_function evaluates strings in the page, which its CSP forbids."""
    deadline = time.monotonic() + timeout
    while not pg.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(0.1)
