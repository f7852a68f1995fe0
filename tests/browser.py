"""Headless Chromium for browser tests: Debian's chromium driven by Playwright.

SwiftShader gives WebGL without a GPU.  The background-networking flags keep
Chromium from calling out of this closed network at start.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from urllib.parse import quote, unquote

import numpy as np
from PIL import Image
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class PageErrors:
    """What went wrong on the page: uncaught exceptions and console errors."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.page_errors + self.console_errors


@contextmanager
def browser_page(width: int = 1000, height: int = 700) -> Iterator[tuple[Page, PageErrors]]:
    """A fresh page in a fresh headless Chromium, with its errors collected."""
    errors = PageErrors()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda exc: errors.page_errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.console_errors.append(msg.text) if msg.type == "error" else None,
            )
            yield page, errors
        finally:
            browser.close()


NOT_FOUND = "the server responded with a status of 404"


def assert_only_metadata_probes_failed(srv, errors: PageErrors) -> None:
    """Neuroglancer probes for optional metadata (a group's .zarray, an array's .zattrs,
    zarr.json before .zarray) and logs each 404 to the console; any other failure,
    on the page or in the server's access log, is a real error."""
    from server.responses import METADATA_NAMES

    assert errors.page_errors == []
    assert [e for e in errors.console_errors if NOT_FOUND not in e] == []
    for line in srv.requested(r'" 404 '):
        path = line.split('"')[1].split()[1]
        assert path.rsplit("/", 1)[-1] in METADATA_NAMES, line


def wait_until(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def viewer_status_text(page: Page) -> str:
    """Text of Neuroglancer's visible status messages (e.g. "Disconnected from Python server", or the
    banner of a layer it could not create): the items of its status containers (src/status.ts)."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#neuroglancer-status-container li, "
        "#neuroglancer-status-container-modal li'))"
        ".filter(e => e.checkVisibility()).map(e => e.innerText).filter(t => t).join('\\n')"
    )


def distinct_colours(png: bytes, box: tuple[int, int, int, int] | None = None) -> int:
    """How many distinct colours a screenshot (or a region of it) has: 1 means blank."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if box:
        image = image.crop(box)
    return len(image.getcolors(maxcolors=1 << 20) or [])


def changed_fraction(png_a: bytes, png_b: bytes) -> float:
    """The fraction of pixels that differ between two same-sized screenshots."""
    a = np.asarray(Image.open(io.BytesIO(png_a)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(png_b)).convert("RGB"), dtype=np.int16)
    return float((np.abs(a - b).sum(axis=2) > 12).mean())


def state_of(url: str) -> dict:
    """The JSON state in a viewer URL's ``#!`` hash."""
    return json.loads(unquote(url.split("#!", 1)[1]))


def with_state(url: str, state: dict) -> str:
    """``url`` with its ``#!`` hash replaced by ``state``."""
    text = json.dumps(state, separators=(",", ":"))
    return url.split("#", 1)[0] + "#!" + quote(text, safe="~@#$&()*!+=:;,.?/'")


def rendered_fraction(page: Page, settle_ms: int = 3000) -> float:
    """How much of the screen the layers draw: the current view against the same view
    with every layer hidden.  A viewer that shows no data scores about 0."""
    page.wait_for_timeout(settle_ms)
    shown = page.screenshot()
    state = state_of(page.url)
    for layer in state.get("layers", []):
        layer["visible"] = False
    page.goto(with_state(page.url, state))
    page.reload()
    page.wait_for_timeout(settle_ms)
    return changed_fraction(shown, page.screenshot())
