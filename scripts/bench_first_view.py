#!/usr/bin/env python3
"""Benchmark the first zoomed-out view of a single-level volume: native zarr against ``/-/precomputed/``.

One run, one ngserve process, one headless Chromium (Debian's, driven by Playwright):

1. writes a ``--size``³ uint8 zarr v2 array with one level (smooth blobs plus noise,
   ``--chunk``³ chunks, tensorstore's default compression);
2. opens the built-in viewer (4-panel layout) zoomed out so the whole volume spans
   about ``--span`` screen pixels of a panel, once for each source, each in a fresh
   browser context (nothing cached in the browser):
   - **native**: ``zarr2://<server>/vol.zarr/`` (one level: every visible chunk is full resolution);
   - **view**: ``precomputed://<server>/-/precomputed/vol.zarr`` (the virtual pyramid; the
     server's chunk cache is cold, so its coarse chunks are computed from the source here);
   - **view, cached**: the same again (the server answers from its chunk cache);
3. waits until the client itself says the view is complete: every layer's data source
   loaded (``managedLayer.isReady()``) and every visible panel has all its visible
   chunks in GPU memory (``viewer.display.isReady()``, what Neuroglancer's own screenshot
   tool waits for), with no request in flight, for ``SETTLE`` seconds in a row;
4. reports the time from navigation to that moment, and the bytes the browser received
   for the data (response sizes from the server's access log, viewer files excluded),
   and for the view the bytes the server read from the source for it (its loopback reads).

Prints the figures and the ratios native/view (the issue's target: the view transfers at
least 50x fewer bytes).  How many fewer depends on the scale the client picks, so on
``--span``: at 2^s source voxels per screen pixel it reads scale s, about 4^s fewer voxels
(translated chunks are raw, the native ones compressed).  The client also asks for every
coarser scale, whose coarsest chunk is built from the whole volume: on a cold cache the
view reads every source chunk once (the "MB source read" column).

    python scripts/bench_first_view.py                       # 1024^3, 64^3 chunks (a few minutes)
    python scripts/bench_first_view.py --size 256 --span 100 # a quick run
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SETTLE = 1.0  # seconds the view must stay complete with nothing in flight
WIDTH, HEIGHT = 1000, 700
READY_JS = """() => {
  const v = window.viewer;
  if (!v) return false;
  const layers = v.layerManager.managedLayers;
  if (layers.length === 0 || !layers.every(l => l.isReady())) return false;
  return v.display.isReady();
}"""
# The access log line (server/access_log.py): addr "METHOD path HTTP/x.y" status bytes seconds principal
LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+) (?P<bytes>\d+) ')


def write_data(path: Path, size: int, chunk: int) -> None:
    """Smooth blobs (a coarse field, upsampled) plus noise, written slab by slab (little memory)."""
    import tensorstore as ts

    rng = np.random.default_rng(0)
    coarse_n = max(2, size // 16)
    axes = np.linspace(-1, 1, coarse_n, dtype=np.float32)
    field = np.zeros((coarse_n,) * 3, np.float32)
    for _ in range(12):
        centre, width = rng.uniform(-0.8, 0.8, 3), rng.uniform(0.1, 0.3)
        g = [np.exp(-((axes - c) / width) ** 2) for c in centre]
        field += g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    coarse = np.clip(field / field.max() * 200, 0, 200).astype(np.uint8)
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"},
                     "metadata": {"shape": [size] * 3, "chunks": [chunk] * 3, "dtype": "|u1", "fill_value": 0}},
                    create=True, delete_existing=True).result()
    up = size // coarse_n
    for z in range(0, size, chunk):
        slab = coarse[z // up:(z + chunk) // up].repeat(up, 0).repeat(up, 1).repeat(up, 2)[:, :size, :size]
        slab = slab + rng.integers(0, 48, slab.shape, dtype=np.uint8)
        store[z:z + chunk].write(slab).result()


class Server:
    """``ngserve serve`` in a subprocess; its access log (stderr) collected line by line."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "serve", str(root), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.url = ""
        for line in self.proc.stdout:
            if "serving on " in line:
                self.url = line.split("serving on ", 1)[1].split("/ ", 1)[0].strip()
                break
        if not self.url:
            raise RuntimeError("ngserve did not start")
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()

    def bytes_since(self, mark: int, prefix: str) -> tuple[int, int]:
        """(responses, body bytes) of GETs below ``prefix`` logged after line ``mark``."""
        count = total = 0
        for line in self.log[mark:]:
            m = LOG_LINE.search(line)
            if m and m["method"] == "GET" and m["path"].startswith(prefix):
                count += 1
                total += int(m["bytes"])
        return count, total

    def scales_since(self, mark: int) -> str:
        """How many chunks of each scale the view was asked for after line ``mark``: which scale the client chose."""
        counts: dict[str, int] = {}
        for line in self.log[mark:]:
            m = LOG_LINE.search(line)
            if m and m["method"] == "GET" and m["path"].startswith("/-/precomputed/") and m["path"].count("_") == 2:
                scale = m["path"].split("/")[-2]
                counts[scale] = counts.get(scale, 0) + 1
        return " ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: int(kv[0][1:])))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def first_view(browser, url: str, timeout: float) -> float:
    """Seconds from navigation until the client reports the view complete (all visible chunks loaded)."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    in_flight = set()
    page.on("request", lambda r: in_flight.add(r))
    page.on("requestfinished", lambda r: in_flight.discard(r))
    page.on("requestfailed", lambda r: in_flight.discard(r))
    try:
        start = time.perf_counter()
        page.goto(url)
        complete_since = None
        while time.perf_counter() - start < timeout:
            # The viewer's event stream never finishes: count only other requests.
            busy = any("/-/viewer/events/" not in r.url for r in in_flight)
            if not busy and page.evaluate(READY_JS):
                complete_since = complete_since or time.perf_counter()
                if time.perf_counter() - complete_since >= SETTLE:
                    return complete_since - start
            else:
                complete_since = None
            page.wait_for_timeout(100)
        raise RuntimeError(f"the view never completed within {timeout:g} s: {url[:120]}")
    finally:
        context.close()


def main() -> None:
    from browser import ARGS, CHROMIUM
    from playwright.sync_api import sync_playwright
    from server.viewer import viewer_url

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="edge of the cube in voxels (default 1024)")
    parser.add_argument("--chunk", type=int, default=64, help="edge of the zarr chunks (default 64)")
    parser.add_argument("--span", type=int, default=300,
                        help="screen pixels the volume spans in a panel (default 300: the whole volume shows)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one view")
    parser.add_argument("--jpeg", action="store_true",
                        help="also the view's jpeg form (<dataset>/-jpeg), after the others (its raw chunks are then cached: compare its bytes, not its time)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ngserve-bench-first-view-"))
    server = None
    try:
        t0 = time.perf_counter()
        write_data(tmp / "vol.zarr", args.size, args.chunk)
        print(f"# wrote {args.size}^3 uint8 in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        server = Server(tmp)
        # The zoom is in units of the state's dimensions, so each state names its source's own
        # (without them the client reads the zoom before it knows the units: metres for the view).
        zoom = {"crossSectionScale": args.size / args.span, "projectionScale": args.size * (HEIGHT / 2) / args.span,
                "position": [args.size / 2] * 3, "layout": "4panel"}
        native_dims = {f"d{i}": [1, ""] for i in range(3)}  # zarr v2 without names or units
        view_dims = {a: [1e-9, "m"] for a in "xyz"}  # the view's resolution: 1 nm
        view = f"precomputed://{server.url}/-/precomputed/vol.zarr"
        runs = [
            ("native", f"zarr2://{server.url}/vol.zarr/", native_dims, "/vol.zarr/"),
            ("view", view, view_dims, "/-/precomputed/"),
            ("view, cached", view, view_dims, "/-/precomputed/"),
        ]
        if args.jpeg:
            runs.append(("view, jpeg", view + "/-jpeg", view_dims, "/-/precomputed/"))
        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                for label, source, dims, prefix in runs:
                    state = {"dimensions": dims, "layers": [{"type": "image", "source": source, "name": "vol"}], **zoom}
                    mark = len(server.log)
                    seconds = first_view(browser, viewer_url(state, base=server.url), args.timeout)
                    time.sleep(0.5)  # the access log trails the answers a little
                    count, total = server.bytes_since(mark, prefix)
                    read = server.bytes_since(mark, "/vol.zarr/")[1] if prefix != "/vol.zarr/" else total
                    results.append((label, seconds, count, total, read))
                    if prefix != "/vol.zarr/":
                        scales = server.scales_since(mark)
            finally:
                browser.close()
        print(f"# {platform.node()} {platform.processor() or platform.machine()}, python {platform.python_version()}")
        print(f"# {args.size}^3 uint8 zarr v2, one level, {args.chunk}^3 chunks; viewer {WIDTH}x{HEIGHT}, "
              f"4panel, volume spans ~{args.span} px ({args.size / args.span:.2f} voxels/px)")
        print(f"{'':14s} {'seconds':>8s} {'requests':>9s} {'MB sent':>9s} {'MB source read':>15s}")
        for label, seconds, count, total, read in results:
            print(f"{label:14s} {seconds:8.2f} {count:9d} {total / 1e6:9.2f} {read / 1e6:15.2f}")
        print(f"# chunks the view was asked for, by scale: {scales}")
        native, view = results[0], results[1]
        print(f"native/view: {native[3] / max(view[3], 1):.1f}x fewer bytes sent "
              f"(target >= 50x), {native[1] / view[1]:.2f}x time; "
              f"native/view cached: {native[1] / results[2][1]:.2f}x time")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
