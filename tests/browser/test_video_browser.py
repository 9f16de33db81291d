"""Video in a real browser (issue 12): the Video tab finds a moment and its player plays from that second.

Debian's Chromium driven by Playwright against `python -m webui` (one Chromium for this module, as in
test_browser.py), on the fixture videos of tests/fixtures/make_videos.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import webui_testing as wt
from webui_testing import wait_until  # noqa: E402

sys.path.insert(0, str(wt.FIXTURES))
from make_videos import make_videos  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DOG_SCENE = 4.0


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    make_videos(folder)
    data = tmp_path_factory.mktemp("video_data")
    wt.index_folder(folder, data)
    server = wt.start_server(data, tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


@pytest.fixture()
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(f"console: {msg.text}")
          if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    yield pg
    context.close()
    assert not problems, problems



def test_video_tab_plays_a_hit_from_its_second(video_server, page):
    page.goto(video_server.url)
    page.click("#tab-video")
    page.fill("#q", "a dog")
    page.press("#q", "Enter")
    page.wait_for_selector('#results-panel[aria-busy="false"]')
    card = page.wait_for_selector("#results .hit.video")
    assert card.get_attribute("data-path").endswith("dog_park.mp4")
    assert "0:04" in card.query_selector(".when").inner_text()
    wait_until(page, "document.querySelector('#results .hit.video img').naturalWidth > 0")  # the keyframe shown
    video = "document.querySelector('#results .hit.video video')"
    wait_until(page, f"{video}.readyState >= 1")
    page.evaluate(f"{video}.muted = true; {video}.play()")
    wait_until(page, f"!{video}.paused && {video}.currentTime > {DOG_SCENE} + 0.2")
    started = page.evaluate(f"{video}.played.start(0)")
    assert abs(started - DOG_SCENE) <= 1.0, started  # it played from the matched second, not from 0


def test_item_page_strip_seeks(video_server, page):
    page.goto(video_server.url)
    page.click("#tab-video")
    page.fill("#q", "a dog")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit.video")
    page.click("#results .hit.video a.name")
    page.wait_for_selector("ol.keyframes button.seek")
    wait_until(page, "document.querySelector('#player').readyState >= 1")
    page.evaluate("document.querySelector('#player').muted = true")
    page.click("ol.segments button.seek")
    wait_until(page, "document.querySelector('#player').currentTime >= 4.3")
    # a word of the transcript seeks to that word: "dog" is said after the sentence starts
    word = page.locator("ol.segments .word", has_text="dog").first
    t_word = float(word.get_attribute("data-t"))
    assert t_word > DOG_SCENE
    page.evaluate("document.querySelector('#player').pause(); document.querySelector('#player').currentTime = 0")
    word.click()
    wait_until(page, f"document.querySelector('#player').currentTime >= {t_word} - 0.05")
