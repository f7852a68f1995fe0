"""``ngserve screenshot URL_OR_PATH -o out.png``: a picture of a view, once all of it has loaded.

A viewer URL (one with a ``#`` state) is opened as it is; anything else (a local path, a data
URL) is shown as ``ngserve view --no-browser`` shows it, by a child process that serves it for
as long as the picture takes.  Headless Chromium is driven through Playwright, and the picture
is taken when the client itself says every visible chunk is in (``window.viewer.isReady()``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's, as the tests use it
# SwiftShader gives WebGL without a GPU; the rest keeps Chromium from calling out at start.
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]
STEADY_SECONDS = 1.0  # ready this long in a row: a state fetched or restored late is not missed
# Ready when the client has a viewer, every layer is added, and the display and layers have all they show.
_READY = "() => !!window.viewer && window.viewer.layerManager.managedLayers.length > 0 && window.viewer.isReady()"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screenshot", help="save a PNG of a view once every visible chunk has loaded")
    p.add_argument("target", metavar="URL_OR_PATH", help="a viewer URL, or a dataset path or URL (shown as `view` shows it)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the PNG")
    p.add_argument("--size", type=size, default=(1200, 800), metavar="WxH", help="picture size in pixels (default 1200x800)")
    p.add_argument("--timeout", type=seconds, default=120.0,
                   help="seconds to wait for the data before giving up (default 120)")
    p.add_argument("--chromium", default=None, metavar="PATH", help=f"the Chromium to drive (default {CHROMIUM})")
    p.set_defaults(run=run)


def size(text: str) -> tuple[int, int]:
    """An argparse type: ``WxH`` in pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not (16 <= int(m[1]) <= 8192 and 16 <= int(m[2]) <= 8192):
        raise argparse.ArgumentTypeError(f"expected WxH with each from 16 to 8192 pixels, e.g. 1200x800, got {text!r}")
    return int(m[1]), int(m[2])


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from . import UsageError

    chromium = args.chromium or (CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"))
    if not chromium or not os.path.exists(chromium):
        raise UsageError(f"no Chromium at {args.chromium or CHROMIUM}: install it (apt-get install chromium) "
                         "or give --chromium PATH")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        raise UsageError("needs Playwright: pip install playwright") from None
    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: folder {out.parent} does not exist")
    if "#" in args.target:
        _shoot(args.target, out, args.size, args.timeout, chromium)
        return 0
    with _viewing(args.target, args.timeout) as url:
        _shoot(url, out, args.size, args.timeout, chromium)
    return 0


class _viewing:
    """``ngserve view TARGET --no-browser`` in a child process; its viewer URL while it runs."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target, self.timeout = target, timeout

    def __enter__(self) -> str:
        from . import UsageError

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "view", self.target, "--no-browser"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for line in self.proc.stdout:  # ends when the child exits (after a reuse, or on an error)
            if line.startswith("ngserve: open "):
                return line[len("ngserve: open "):].strip()
        err = self.proc.stderr.read().strip().splitlines()
        self.proc.wait()
        raise UsageError(err[-1].split("error: ", 1)[-1] if err else f"cannot show {self.target}")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _shoot(url: str, out: Path, size: tuple[int, int], timeout: float, chromium: str) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from . import UsageError

    width, height = size
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            raise UsageError(f"cannot start Chromium at {chromium}: {str(exc).splitlines()[0]}") from None
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            try:
                page.goto(url, timeout=timeout * 1000)
            except PlaywrightError as exc:
                raise UsageError(f"cannot open {url.split('#', 1)[0]}: {str(exc).splitlines()[0]}") from None
            if not _wait_ready(page, timeout):
                print(f"ngserve screenshot: note: not every visible chunk loaded within {timeout:g} s; "
                      "the picture shows what had", file=sys.stderr)
            page.screenshot(path=str(out))
        finally:
            browser.close()
    print(f"ngserve screenshot: wrote {out} ({width}x{height})")


def _wait_ready(page, timeout: float) -> bool:
    """Whether the view became ready (and stayed so for STEADY_SECONDS) within ``timeout``."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        if page.evaluate(_READY):
            since = since or time.monotonic()
            if time.monotonic() - since >= STEADY_SECONDS:
                return True
        else:
            since = None
        page.wait_for_timeout(100)
    return False
