"""Save the README's screenshot of the results page (not a test; run by hand after UI changes).

Indexes the demo archive (or uses --data-dir), starts `python -m webui`, types a query
in Chromium and saves the page to docs/screenshot-results.png:

    .venv/bin/python tests/browser/screenshot.py [--data-dir DIR] [--query "a red apple"]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for indexer/retrieval/webui
import webui_testing as wt  # noqa: E402

OUT = wt.REPO / "docs" / "screenshot-results.png"


class _Tmp:
    """Enough of pytest's tmp_path_factory for the archive helpers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.root))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--query", default="a red apple")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or wt.demo_archive(_Tmp(Path(tmp)))
        server = wt.start_server(data, Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--no-sandbox", "--disable-gpu",
                                                   "--disable-background-networking"])
                page = browser.new_page(viewport={"width": args.width, "height": args.height},
                                        device_scale_factor=1, color_scheme="light")
                page.goto(server.url + "/")
                page.fill("#q", args.query)
                page.press("#q", "Enter")
                page.wait_for_selector('#results .hit')
                deadline = time.monotonic() + 30  # let the thumbnails arrive
                while time.monotonic() < deadline and not page.evaluate(
                        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"):
                    time.sleep(0.2)
                page.mouse.move(0, 0)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.stop()
    print(args.out)


if __name__ == "__main__":
    main()
