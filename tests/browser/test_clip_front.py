"""clip-retrieval's own front end, unchanged, against our `python -m webui`: type a query, see our pictures.

The front end is the built ``front/build/`` inside the PyPI wheel ``clip-retrieval==2.45.0``, fetched with
``pip download --no-deps`` into a cache folder (never installed here, never in requirements.txt) and
checked against its SHA-256. Its files are served as they are by a small static HTTP server on another
port; the page is pointed at our server with its own ``?back=`` parameter (front/src/clip-front.js), so
every request it makes is cross-origin, as with clip back. The peer's ``ClipClient`` (a single module of
the same wheel) is run against the same server.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import webui_testing as wt

CHROMIUM = "/usr/bin/chromium"
PEER = "clip-retrieval==2.45.0"
WHEEL = "clip_retrieval-2.45.0-py3-none-any.whl"
WHEEL_SHA256 = "07f52947727b75fa0b22f0f938f352c90ea0f4fa3d4c0b2e3d284a42c1a497e4"
CACHE = Path(os.environ.get("PEER_CACHE_DIR", Path.home() / ".cache" / "retrieval-tests" / "peers"))


def peer_wheel() -> Path:
    """The clip-retrieval 2.45.0 wheel, downloaded once into the cache (PyPI through pip), hash checked."""
    import hashlib

    wheel = CACHE / WHEEL
    if not wheel.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                               "-q", PEER, "-d", str(CACHE)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not wheel.is_file():
            pytest.fail(f"could not download {PEER} from PyPI (`pip download --no-deps {PEER}`):\n{proc.stderr[-2000:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        wheel.unlink()
        pytest.fail(f"{wheel} has SHA-256 {digest}, not the one of {PEER}'s wheel on PyPI; run again to re-download")
    return wheel


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Path:
    """The wheel's front/build/ and clip_retrieval/clip_client.py, unzipped as they are."""
    out = tmp_path_factory.mktemp("clip_peer")
    with zipfile.ZipFile(peer_wheel()) as z:
        for name in z.namelist():
            if name.startswith("front/build/") or name == "clip_retrieval/clip_client.py":
                z.extract(name, out)
    assert (out / "front" / "build" / "index.html").is_file()
    return out


@pytest.fixture(scope="module")
def front_url(peer):
    """A static HTTP server of front/build/ on a free port of 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(peer / "front" / "build"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the standard library's name)
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Our real server over the demo pictures and notes (bundled model)."""
    root = tmp_path_factory.mktemp("clip_front_archive")
    for name in ("images", "notes"):
        shutil.copytree(wt.DEMO / name, root / "archive" / name)
    assert wt.index_folder(root / "archive", root / "data")["errors"] == 0
    srv = wt.start_server(root / "data", tmp_path_factory.mktemp("logs"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


def test_clip_retrievals_front_end_shows_our_pictures(browser, front_url, server):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # its index.html names vendor/webcomponents-loader.js, which the wheel does not ship (a 404 it always has)
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    calls: list[str] = []
    posted: list[str | None] = []
    page.on("request", lambda req: (calls.append(req.url), posted.append(req.post_data))
            if req.url.startswith(server.url) else None)
    try:
        page.goto(f"{front_url}/?back={server.url}")
        options = page.locator("clip-front select option")  # the index list came from our /indices-list
        options.first.wait_for(state="attached")
        assert options.first.get_attribute("value") == "data"
        page.locator("clip-front #searchBar").fill("a dog")
        page.locator("clip-front #searchBar").press("Enter")
        pictures = page.locator("clip-front #products img.pic")
        pictures.nth(5).wait_for()
        first = pictures.first
        assert first.get_attribute("src").startswith(f"{server.url}/api/items/")
        assert first.get_attribute("title") in ("dog-face-google.png", "dog-face-twitter.png")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first.element_handle())
        shown = page.locator("clip-front #products figure figcaption").all_inner_texts()
        assert {shown[0].strip(), shown[1].strip()} == {"dog-face-google.png", "dog-face-twitter.png"}
        assert any(u == f"{server.url}/knn-service" for u in calls)

        # "search similar" on a result: the front end sends the result's url back as image_url (an item query,
        # which leaves the item itself out)
        clicked = first.get_attribute("title")
        page.locator("clip-front #products figure").first.hover()
        page.locator("clip-front #products figure .subImageSearch").first.click()
        page.locator("clip-front #filter img[width='100px']").wait_for()  # it shows the query picture
        page.wait_for_function("([el, clicked]) => { const pics = el.shadowRoot.querySelectorAll('#products img.pic');"
                               " return pics.length > 5 && pics[0].title !== clicked; }",
                               arg=[page.locator("clip-front").element_handle(), clicked])
        similar = page.locator("clip-front #products img.pic").first.get_attribute("title")
        assert similar.startswith("dog-face") and similar != clicked
        assert any('"image_url":"http' in (r or "") for r in posted)
    finally:
        page.close()
    assert not problems, problems


def test_clip_retrievals_client_queries_our_server(peer, server):
    spec = importlib.util.spec_from_file_location("clip_client", peer / "clip_retrieval" / "clip_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    client = module.ClipClient(url=f"{server.url}/knn-service", indice_name="data", num_images=5)
    by_text = client.query(text="a red apple")
    assert len(by_text) == 5 and by_text[0]["caption"].startswith("red-apple-") and by_text[0]["url"]
    by_image = client.query(image=str(wt.DEMO / "images" / "rocket-google.png"))
    assert by_image[0]["caption"] == "rocket-google.png"
    assert client.query(embedding_input=[0.0] * 383 + [1.0])  # any 384-d vector
