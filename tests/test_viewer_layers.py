"""Every layer of a minted link is shown, load after load, in the built-in viewer.

The bundled client used to delete a layer while restoring a state with an annotation layer
whenever the restore ran long (server/viewer_state.js says how).  A CPU slowed down as on a
busy machine made that happen in most loads; here every layer must load every time, judged
by the client's own layer list and by the chunk requests the server saw.
"""

from __future__ import annotations

from browser import ARGS, CHROMIUM, viewer_status_text, wait_until
from playwright.sync_api import sync_playwright
from test_state_browser import ANNOTATIONS, IMAGE, SEGMENTATION, write_aligned

import ngstate

LOADS = 20
CPU_SLOWDOWN = 4  # Chromium's CPU throttling: the restore takes as long as on a loaded machine

# Per managed layer: its name, whether the layer exists, and each data source's load state
# ("ok", "pending", or the error the client shows in the layer).
LAYERS_JS = """() => window.viewer ? window.viewer.layerManager.managedLayers.map(m => ({
  name: m.name,
  sources: m.layer === null ? null : m.layer.dataSources.map(d => d.loadState === undefined ? "pending"
    : d.loadState.error !== undefined ? String(d.loadState.error) : "ok"),
})) : []"""


def _load(browser, url: str, names: list[str], chunks_seen) -> tuple[list, list[str], bool]:
    """Open ``url`` in a fresh context (no cache): the client's layers once all are loaded (or at
    the deadline), the page errors and status banners, and whether ``chunks_seen()`` came true
    while the page was open."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
        page.goto(url)
        layers: list = []

        def shown() -> bool:
            nonlocal layers
            layers = page.evaluate(LAYERS_JS)
            return [l["name"] for l in layers] == names and all(
                l["sources"] and all(s == "ok" for s in l["sources"]) for l in layers
            )

        wait_until(shown, timeout=60)
        chunks = wait_until(chunks_seen, timeout=30)
        return layers, errors + [s for s in [viewer_status_text(page)] if s], chunks
    finally:
        context.close()


def test_every_layer_shown_in_every_load(start_server, tmp_path):
    (tmp_path / "data").mkdir()
    write_aligned(tmp_path / "data")
    srv = start_server("serve", str(tmp_path))
    base = f"{srv.url}/data"
    cases = {
        "image + points": ([f"{base}/img.ome.zarr", f"{base}/points"], [IMAGE, ANNOTATIONS]),
        "image + segmentation + points": (
            [f"{base}/img.ome.zarr", f"{base}/seg", f"{base}/points"], [IMAGE, SEGMENTATION, ANNOTATIONS]),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            for case, (sources, chunk_patterns) in cases.items():
                state = ngstate.build_state(sources).to_json()
                names = [layer["name"] for layer in state["layers"]]
                url = ngstate.link(*sources)
                for load in range(LOADS):
                    before = [len(srv.requested(pattern)) for pattern in chunk_patterns]
                    read = lambda: all(len(srv.requested(p)) > n for p, n in zip(chunk_patterns, before))  # noqa: E731
                    layers, errors, chunks = _load(browser, url, names, read)
                    where = f"{case}, load {load + 1} of {LOADS}"
                    assert [l["name"] for l in layers] == names, f"{where}: the client has layers {layers}"
                    for layer in layers:
                        assert layer["sources"] and all(s == "ok" for s in layer["sources"]), f"{where}: {layer}"
                    assert errors == [], f"{where}: {errors}"
                    # Each layer read its own data in this load (a fresh context has no cache).
                    assert chunks, f"{where}: not every layer requested chunks ({chunk_patterns})"
        finally:
            browser.close()
