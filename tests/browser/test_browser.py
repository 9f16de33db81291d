"""The search page in a real browser: Debian's Chromium driven by Playwright against `python -m webui`.

One Chromium per module (its fake microphone plays tests/fixtures/webui/red_apple_query.wav),
one fresh context per test, one real gunicorn server per archive. Any JavaScript error
on a page fails the test that caused it.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path

import pytest

import webui_testing as wt
from webui_testing import wait_until  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
QUERY_WAV = wt.FIXTURES / "webui" / "red_apple_query.wav"


@pytest.fixture(scope="module")  # module: the next browser module starts its own Playwright (one per thread at a time)
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={QUERY_WAV}",
        ])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory):
    data = wt.speech_archive(tmp_path_factory)
    # 6 results a page so the 17 items need "Load more"
    server = wt.start_server(data, tmp_path_factory.mktemp("logs"), env={"WEBUI_DEFAULT_K": "6"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_server(tmp_path_factory, tiny_openclip):
    server = wt.start_server(wt.image_archive(tmp_path_factory, tiny_openclip), tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    server = wt.start_server(wt.demo_archive(tmp_path_factory), tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


@pytest.fixture()
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["microphone"])
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(f"console: {msg.text}")
          if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    yield pg
    context.close()
    assert not problems, problems



def hits(pg) -> list[dict]:
    return pg.eval_on_selector_all("#results .hit", """cards => cards.map(c => ({
        id: +c.dataset.id, modality: c.dataset.modality, path: c.dataset.path,
        marks: [...c.querySelectorAll('mark')].map(m => m.textContent)}))""")


def wait_for_results(pg, count: int | None = None) -> list[dict]:
    pg.wait_for_selector('#results-panel[aria-busy="false"]')
    pg.wait_for_selector("#results .hit" if count is None else f"#results .hit:nth-child({count})")
    return hits(pg)


# ---------------------------------------------------------------- words
def test_type_a_query_and_see_results(speech_server, page):
    page.goto(speech_server.url + "/")
    page.wait_for_selector("#results .empty")  # the welcome says what is indexed
    assert "11 audio segments" in page.inner_text("#results")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a dog playing in the park")
    page.keyboard.press("Enter")
    found = wait_for_results(page)
    assert found[0]["path"].endswith("/dog_park.wav") and found[0]["modality"] == "audio"
    assert "dog" in [m.lower() for m in found[0]["marks"]]
    assert len(found) == 6 and re.match(r"6\+ results", page.inner_text("#message"))
    assert "q=a+dog+playing" in page.url

    page.click("#load-more")  # the next page is appended, nothing repeats
    more = wait_for_results(page, 12)
    assert [h["id"] for h in more[:6]] == [h["id"] for h in found] and len({h["id"] for h in more}) == 12

    page.click("#tab-text")
    wait_until(page, "document.querySelector('#results .hit')?.dataset.modality === 'text'")
    texts = wait_for_results(page)
    assert {h["modality"] for h in texts} == {"text"} and texts[0]["path"].endswith("/dogs.md")
    assert "target=text" in page.url
    page.focus("#tab-text")
    page.keyboard.press("ArrowLeft")  # arrow keys move between tabs
    wait_until(page, "document.querySelector('#results .hit')?.dataset.modality === 'audio'")
    assert page.get_attribute("#tab-audio", "aria-selected") == "true"
    assert {h["modality"] for h in wait_for_results(page)} == {"audio"}
    page.go_back()  # each search is a history entry: Back returns to the text results
    wait_until(page, "document.querySelector('#results .hit')?.dataset.modality === 'text'")
    assert page.get_attribute("#tab-text", "aria-selected") == "true" and page.input_value("#q") == "a dog playing in the park"


def test_empty_query_and_rejected_file_say_what_to_do(speech_server, page, tmp_path):
    page.goto(speech_server.url + "/")
    page.click("#search-button")
    assert "Type some words" in page.inner_text("#message")
    bogus = tmp_path / "not-really.wav"
    bogus.write_bytes(b"this is text, not a recording" * 10)
    page.set_input_files("#audio-file", str(bogus))
    page.wait_for_selector("#message.error")
    wait_until(page, "document.querySelector('#message').textContent.includes('neither an image')")
    assert page.locator("#results .hit").count() == 0


def test_phone_width_has_no_sideways_scrolling(speech_server, page):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(speech_server.url + "/?q=heavy+rain+tomorrow&target=audio")
    found = wait_for_results(page)
    assert found[0]["path"].endswith("/heavy_rain.wav")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = page.locator("#results .hit").first.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    page.goto(speech_server.url + f"/items/{found[0]['id']}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


# ---------------------------------------------------------------- item page
def test_open_an_item_page_and_find_more_like_it(speech_server, page):
    page.goto(speech_server.url + "/?q=when+does+the+violin+concert+start&target=audio")
    top = wait_for_results(page)[0]
    assert top["path"].endswith("/meeting.flac")
    page.click("#results .hit >> nth=0 >> a.name")
    page.wait_for_url(re.compile(rf"/items/{top['id']}\?t="))
    assert page.inner_text("h1") == "meeting.flac"
    assert "violin concert" in page.inner_text(".segments").lower()
    assert top["path"] in page.inner_text(".item-meta")
    # the player starts at the sentence that matched, not at the window's start
    start = float(re.search(r"t=([\d.]+)", page.url).group(1))
    wait_until(page, f"Math.abs(document.querySelector('#player').currentTime - {start}) < 0.5")
    wait_until(page, "(document.querySelector('.segments li.current')?.textContent || '').includes('violin')", 10)

    page.click("#more-like")
    page.wait_for_url(re.compile(rf"/\?like={top['id']}"))
    wait_until(page, "document.querySelector('#inputs').textContent.includes('Like: meeting.flac')")
    similar = wait_for_results(page)
    assert top["id"] not in [h["id"] for h in similar]


# ---------------------------------------------------------------- images
def test_upload_an_image_and_see_it_first(image_server, page):
    query = _indexed_image(image_server, "shape_5.png")
    page.goto(image_server.url + "/")
    page.set_input_files("#image-file", str(query))
    found = wait_for_results(page)
    assert found[0]["path"] == str(query) and found[0]["modality"] == "image"
    assert page.inner_text("#results .hit >> nth=0 >> .score .value") == "1.000"
    wait_until(page, "(() => { const i = document.querySelector('#results .hit img');"
                           " return i && i.complete && i.naturalWidth > 0; })()")
    assert page.locator("#inputs .chip-image").count() == 1

    page.focus("#inputs .chip .remove")  # inputs are removable from the keyboard
    page.keyboard.press("Delete")
    assert page.locator("#inputs .chip").count() == 0
    assert page.evaluate("document.activeElement.id") == "q"


def test_drop_an_image_on_the_page(image_server, page):
    query = _indexed_image(image_server, "shape_2.png")
    page.goto(image_server.url + "/")
    page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: 'image/png'}));
        for (const type of ['dragenter', 'dragover', 'drop']) {
            window.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        }
    }""", [base64.b64encode(query.read_bytes()).decode(), "dropped.png"])
    found = wait_for_results(page)
    assert found[0]["path"] == str(query)
    assert page.is_hidden("#drop-overlay")


def _indexed_image(server, name: str) -> Path:
    """The path of an indexed image, asked from the running server."""
    assert wt.get_json(server.url + "/api/stats")["items"]["image"] == 8
    req = urllib.request.Request(server.url + "/api/search", data=json.dumps({"text": "shapes", "target": "image",
                                                                              "k": 8}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        paths = [Path(h["path"]) for h in json.loads(resp.read())["hits"]]
    return next(p for p in paths if p.name == name)


# ---------------------------------------------------------------- microphone
def test_record_from_the_microphone(speech_server, page):
    """Chromium's fake microphone says "a red apple"; MediaRecorder's WebM goes to the server."""
    page.goto(speech_server.url + "/")
    page.click("#record")
    page.wait_for_selector("#recorder:not([hidden])")
    wait_until(page, "document.querySelector('#rec-time').textContent >= '0:03'", timeout=15)
    assert int(page.get_attribute("#rec-meter", "data-peak")) > 20  # the level meter moved
    page.click("#rec-stop")
    found = wait_for_results(page)
    assert "apple" in page.inner_text("#heard").lower()
    assert page.locator("#inputs .chip-audio").count() == 1
    assert found[0]["path"].endswith("/red_apple.wav")


def test_speak_a_question_and_see_the_matching_photo(demo_server, page):
    """The demo archive with the bundled model: the spoken "a red apple" shows an apple picture."""
    page.goto(demo_server.url + "/")
    page.click("#tab-image")
    page.click("#record")
    page.wait_for_selector("#recorder:not([hidden])")
    wait_until(page, "document.querySelector('#rec-time').textContent >= '0:03'", timeout=15)
    page.click("#rec-stop")
    found = wait_for_results(page)
    assert "apple" in page.inner_text("#heard").lower()
    assert all(h["modality"] == "image" for h in found)
    assert any(Path(h["path"]).name.startswith("red-apple") for h in found[:5]), [h["path"] for h in found[:5]]
    wait_until(page, "(() => { const i = document.querySelector('#results .hit img');"
                     " return i && i.complete && i.naturalWidth > 0; })()")


# ---------------------------------------------------------------- "not this" (multi-input queries)
def _demo_image_id(server, name: str) -> int:
    req = urllib.request.Request(server.url + "/api/search", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"text": "emoji", "target": "image", "k": 100}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return next(h["id"] for h in json.load(resp)["hits"] if h["name"] == name)


def test_not_this_toggle_pushes_similar_results_down(demo_server, page):
    banana = _demo_image_id(demo_server, "banana-google.png")
    page.goto(f"{demo_server.url}/?q=fruit&like={banana}&target=image")
    before = [Path(h["path"]).name for h in wait_for_results(page)]
    assert "banana-twitter.png" in before[:3], before

    toggle = page.locator("#inputs .chip .not-this")
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.focus()
    with page.expect_response(lambda r: r.url.endswith("/api/search")) as answer:
        page.keyboard.press("Space")  # a real button: reachable and usable from the keyboard
    assert answer.value.status == 200
    sent = answer.value.request.post_data_json
    assert sent["not_items"] == [banana] and "items" not in sent and sent["text"] == "fruit", sent
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.evaluate("document.activeElement.classList.contains('not-this')")
    assert "Not like" in page.inner_text("#inputs .chip") and "negative" in page.get_attribute("#inputs .chip", "class")
    wait_until(page, "document.querySelector('#results-panel').getAttribute('aria-busy') === 'false'")
    after = [Path(h["path"]).name for h in wait_for_results(page)]
    assert "banana-twitter.png" not in after[:5], after

    page.keyboard.press("Space")  # and back: a plain "more like this" again
    wait_until(page, "document.querySelector('#inputs .chip .not-this').getAttribute('aria-pressed') === 'false'")
