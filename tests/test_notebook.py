"""``ngstate.show``: inline viewers in a real kernel (nbclient) opened in Chromium, live state both
ways, arrays served from memory, colleague URLs, behind a real jupyter-server-proxy, and reprs."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

import numpy as np
import psutil
import pytest
import tensorstore as ts
from browser import browser_page, wait_until
from deploy import stop

import ngstate
from ngstate import notebook
from server.app import create_app
from server.background import ARRAYS_MOUNT
from server.commands.demo import DEMO_NAME, write_demo
from server.config import MountConfig, ServerConfig
from volumes import blobs, memory

CELL_TIMEOUT = 180


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """A registry of our own (no other engineer's running ngserve is reused), for the kernel too."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(notebook.BASE_URL_ENV, raising=False)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)


@pytest.fixture
def notebook_page(tmp_path):
    """``publish(html)``: the URL of a page showing ``html``, as Jupyter shows cell outputs, served from
    another loopback origin (Chromium lets only a local page frame a local server)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = tmp_path / "pages"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def publish(html_text: str, name: str = "notebook.html") -> str:
        (folder / name).write_text(f"<!doctype html><html><body>{html_text}</body></html>")
        return f"http://localhost:{httpd.server_address[1]}/{name}"

    yield publish
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


@pytest.fixture
def own_servers():
    """Servers this test process starts through show(): stopped after, and no thread left."""
    yield
    notebook.shutdown()
    for key in memory.registered():
        memory.unregister(key)
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("ngserve-")], 15)


class Kernel:
    """A real IPython kernel run through nbclient, cell by cell, shut down on exit."""

    def __init__(self, folder) -> None:
        import nbformat
        from nbclient import NotebookClient

        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(self.nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})

    def __enter__(self) -> "Kernel":
        self._setup = self.client.setup_kernel()
        self._setup.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._setup.__exit__(*exc)

    def run(self, source: str):
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def value(self, expression: str):
        """``expression`` evaluated in the kernel, as JSON."""
        cell = self.run(f"import json as _json; print(_json.dumps({expression}))")
        return json.loads("".join(o["text"] for o in cell.outputs if o["output_type"] == "stream"))


def output(cell, mime: str) -> str:
    return next(o["data"][mime] for o in cell.outputs if o["output_type"] in ("execute_result", "display_data"))


def frame_of(page, token: str):
    assert wait_until(lambda: page.wait_for_timeout(100) or any(token in f.url for f in page.frames), 60)
    return next(f for f in page.frames if token in f.url)


def layer_names(frame) -> list[str]:
    return frame.evaluate("() => window.viewer ? viewer.layerManager.managedLayers.map(l => l.name) : []")


def position(frame) -> list[float]:
    return frame.evaluate("() => Array.from(viewer.position.value)")


def pan(frame, dx: float) -> list[float]:
    """What a drag does to the view: move the position along x (in the page, through window.viewer)."""
    return frame.evaluate(f"""() => {{
        const p = Float32Array.from(viewer.position.value); p[0] += {dx};
        viewer.position.value = p; return Array.from(p); }}""")


def close(a, b, tol=1e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def test_notebook_shows_inline_viewers_with_live_state(tmp_path, data_home, notebook_page):
    write_demo(tmp_path)
    with Kernel(tmp_path) as kernel:
        kernel.run("import ngstate, numpy as np\n"
                   f"from volumes import blobs\nv = ngstate.show({str(tmp_path / DEMO_NAME)!r})")
        ome = kernel.run("v")
        kernel.run("image, _ = blobs((24, 80, 72), seed=3)\n"
                   "w = ngstate.show((image * 1000).astype(np.uint16), voxel_size=(2, 1, 1), units='micrometer', name='blobs')")
        arr = kernel.run("w")
        colleague = kernel.run("c = ngstate.show(v.url)\nc")
        tokens = {k: kernel.value(f"{k}.token") for k in "vwc"}
        server_url = kernel.value("w.server_url")
        kernel_pid = kernel.value("__import__('os').getpid()")

        # Plain reprs say what the viewers hold.
        text = output(ome, "text/plain")
        assert "'cells' (segmentation" in text and f"{DEMO_NAME}" in text and "page http://127.0.0.1:" in text
        assert "'blobs' (image: precomputed://" in output(arr, "text/plain")
        assert f"/-/precomputed/{ARRAYS_MOUNT}/" in output(arr, "text/plain")

        page_html = "".join(output(c, "text/html") for c in (ome, arr, colleague))
        assert page_html.count("<iframe") == 3
        with browser_page(1000, 2000) as (page, errors):
            answers: list[tuple[str, int]] = []
            page.on("response", lambda r: answers.append((r.url, r.status)))
            page.goto(notebook_page(page_html))
            frames = {k: frame_of(page, t) for k, t in tokens.items()}
            for key, names in (("v", ["demo", "cells"]), ("w", ["blobs"]), ("c", ["demo", "cells"])):
                assert wait_until(lambda: layer_names(frames[key]) == names, 90), (key, layer_names(frames[key]))

            def fetched(pattern: str) -> bool:
                page.wait_for_timeout(100)  # Playwright delivers response events while it runs
                return any(re.search(pattern, u) and s == 200 for u, s in answers)

            # The inline viewers read chunks: the OME-Zarr image and labels as stored, the array translated.
            chunk = r"/\d+[./]\d+[./]\d+$"
            assert wait_until(lambda: fetched(rf"^{server_url}/{DEMO_NAME}/\d+{chunk}"), 90), answers
            assert wait_until(lambda: fetched(rf"^{server_url}/{DEMO_NAME}/labels/cells/\d+{chunk}"), 90)
            array_chunk = rf"^{server_url}/-/precomputed/{ARRAYS_MOUNT}/[^/]+/s0/\d+-\d+_\d+-\d+_\d+-\d+$"
            assert wait_until(lambda: fetched(array_chunk), 90), answers

            # A pan in the page is the kernel's .state.
            frame = frames["w"]
            assert wait_until(lambda: kernel.value("w.state['position']") == position(frame), 60)
            moved = pan(frame, 7)
            assert wait_until(lambda: close(kernel.value("w.state['position']"), moved), 60)
            assert not close(kernel.value("v.state['position']"), moved)  # each viewer its own state

            # set_state in the kernel moves the page.
            kernel.run("s = w.state\ns['position'] = [10.5, 20.5, 5.5]\nw.set_state(s)")
            assert wait_until(lambda: close(position(frame), [10.5, 20.5, 5.5]), 60), position(frame)
            # ... and a later pan still reaches the kernel (the client saw Python's generation).
            moved = pan(frame, -3)
            assert wait_until(lambda: close(kernel.value("w.state['position']"), moved), 60)
            url = kernel.value("w.url")
            assert url.startswith(f"{server_url}/-/viewer/v/ngserve/#!")
            assert close(ngstate.parse_url(url)["position"], moved)
            assert errors.page_errors == []
    # The kernel is gone, and the server in it.
    assert wait_until(lambda: not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == "zombie", 30)
    with pytest.raises(OSError):
        urllib.request.urlopen(server_url + "/-/health", timeout=5)


def test_set_state_reaches_a_page_opened_later_and_pages_share_pans(tmp_path, data_home, own_servers, notebook_page):
    image, _ = blobs((16, 48, 40), seed=5)
    viewer = ngstate.show(image, voxel_size=(3, 1, 1), units="nanometer")
    state = viewer.state
    state["position"] = [4.5, 6.5, 2.5]
    viewer.set_state(state)
    html_out = viewer._repr_html_() * 2  # the same viewer shown twice: two clients of one state
    with browser_page(1000, 1400) as (page, errors):
        page.goto(notebook_page(html_out))
        assert wait_until(lambda: page.wait_for_timeout(100) or len([f for f in page.frames if viewer.token in f.url]) == 2, 60)
        first, second = [f for f in page.frames if viewer.token in f.url]
        for frame in (first, second):
            assert wait_until(lambda: layer_names(frame) == ["array"] and close(position(frame), [4.5, 6.5, 2.5]), 90)
        # Let both pages settle (each posts the state it restored).  A pan made while a page is still
        # behind the latest state gives way to it, as in neuroglancer's protocol (see viewer_states).
        page.wait_for_timeout(1500)
        moved = pan(first, 5)
        assert wait_until(lambda: close(viewer.state["position"], moved), 60)
        assert wait_until(lambda: close(position(second), moved), 60)  # the other page follows
        assert errors.page_errors == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_proxy(tmp_path):
    """A real Jupyter server with jupyter-server-proxy (no token: a test on loopback); its URL."""
    port = free_port()
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}",
         "--ServerApp.port_retries=0", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "jupyter.log").read_text())
        try:
            with urllib.request.urlopen(url + "/api/status", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        assert wait_until(up, 90), (tmp_path / "jupyter.log").read_text()
        yield url
    finally:
        stop(proc)
        log.close()


def test_viewer_behind_jupyter_server_proxy(tmp_path, data_home, own_servers, jupyter_proxy, notebook_page):
    image, _ = blobs((16, 64, 48), seed=7)
    viewer = ngstate.show((image * 200).astype(np.uint8), base_url="/proxy/{port}", voxel_size=(2, 1, 1))
    port = viewer.server_url.rsplit(":", 1)[1]
    assert viewer.page == f"/proxy/{port}/-/viewer/v/{viewer.token}/"  # relative: the notebook's own origin
    # The page comes through the Jupyter server too (its origin, as a notebook's outputs do).
    local = urllib.parse.urlsplit(notebook_page(viewer._repr_html_()))
    page_url = f"{jupyter_proxy}/proxy/{local.port}{local.path}"
    through = f"{jupyter_proxy}/proxy/{port}"
    with browser_page(1000, 800) as (page, errors):
        answers: list[tuple[str, int]] = []
        page.on("response", lambda r: answers.append((r.url, r.status)))
        page.goto(page_url)
        frame = frame_of(page, viewer.token)
        assert frame.url.startswith(through + "/-/viewer/v/")
        assert wait_until(lambda: layer_names(frame) == ["array"], 90), layer_names(frame)
        # Every request of the page went through the proxy: assets, event stream, chunks.
        chunk = rf"^{through}/-/precomputed/{ARRAYS_MOUNT}/[^/]+/s0/\d+-\d+_\d+-\d+_\d+-\d+$"
        assert wait_until(lambda: page.wait_for_timeout(100) or any(re.search(chunk, u) and s == 200 for u, s in answers), 90), answers
        assert not [u for u, _ in answers if u.startswith(viewer.server_url)]
        moved = pan(frame, 4)
        assert wait_until(lambda: close(viewer.state["position"], moved), 60)
        # The page rewrote the kernel's loopback base to its own: the state it posts names data by the proxy.
        assert viewer.state["layers"][0]["source"].startswith(f"precomputed://{through}/-/precomputed/")
        assert viewer.url.startswith(f"/proxy/{port}/-/viewer/v/ngserve/#!")
        state = viewer.state
        state["position"] = [3.5, 9.5, 1.5]
        viewer.set_state(state)
        assert wait_until(lambda: close(position(frame), [3.5, 9.5, 1.5]), 60)
        assert errors.page_errors == []


def test_base_url_from_the_environment_and_jupyterhub(monkeypatch, data_home, own_servers):
    image = np.zeros((8, 8), np.uint8)
    monkeypatch.setenv(notebook.BASE_URL_ENV, "https://hub.example.org/user/ann/proxy/{port}/")
    v = ngstate.show(image)
    port = v.server_url.rsplit(":", 1)[1]
    assert v.page == f"https://hub.example.org/user/ann/proxy/{port}/-/viewer/v/{v.token}/"
    assert f'src="{v.page}"' in v._repr_html_()
    monkeypatch.delenv(notebook.BASE_URL_ENV)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ann/")
    assert ngstate.show(image).page.startswith(f"/user/ann/proxy/{port}/-/viewer/v/")
    assert ngstate.show(image, base_url="/proxy/{port}").page.startswith(f"/proxy/{port}/-/viewer/v/")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_arrays_are_served_from_memory_through_the_precomputed_view(kind, data_home, own_servers):
    image, labels = blobs((20, 70, 50), seed=2)
    data = {"image": (image * 3000).astype(np.uint16), "labels": labels.astype(np.uint64)}
    if kind == "dask":
        import dask.array as da

        data = {k: da.from_array(v, chunks=(7, 30, 20)) for k, v in data.items()}
    v = ngstate.show(data["image"], data["labels"], names=["img", "seg"], voxel_size=(40, 8, 8), units="nanometer")
    layers = v.state["layers"]
    assert [(lay["name"], lay["type"]) for lay in layers] == [("img", "image"), ("seg", "segmentation")]
    assert v.state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [4e-8, "m"]}
    for layer, expected in zip(layers, (data["image"], data["labels"])):
        url = layer["source"].removeprefix("precomputed://")
        assert url.startswith(f"{v.server_url}/-/precomputed/{ARRAYS_MOUNT}/")
        store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": url + "/"}).result()
        read = np.asarray(store[..., 0].read().result()).transpose(2, 1, 0)
        assert np.array_equal(read, np.asarray(expected))
    assert "shaderControls" in layers[0]  # contrast from the array's statistics, as for files
    v.close()
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(layers[0]["source"].removeprefix("precomputed://") + "/info", timeout=10)
    assert gone.value.code == 404


def test_array_and_option_errors_are_one_line(data_home, own_servers):
    with pytest.raises(ValueError, match=r"^an array source needs 2 to 4 dimensions"):
        ngstate.show(np.zeros(5))
    with pytest.raises(ValueError, match=r"^voxel_size needs 3 positive numbers"):
        ngstate.show(np.zeros((4, 4, 4)), voxel_size=(1, 1))
    with pytest.raises(ValueError, match=r"^unknown units 'furlong'"):
        ngstate.show(np.zeros((4, 4, 4)), voxel_size=(1, 1, 1), units="furlong")
    with pytest.raises(ValueError, match=r"^voxel_size= and units= place array sources"):
        ngstate.show("https://example.org/x.zarr", voxel_size=(1, 1, 1))
    with pytest.raises(ValueError, match=r"does not exist$"):
        ngstate.show("/no/such/folder.zarr")
    with pytest.raises(ValueError, match=r"^no Neuroglancer state in this URL"):
        ngstate.show("https://example.org/nothing#")
    with pytest.raises(ValueError, match=r"^cannot show a list: give a path, a URL, or a numpy or dask array$"):
        ngstate.show([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"^name= is for one source; with several, give names="):
        ngstate.show(np.zeros((4, 4)), np.zeros((4, 4)), name="x")
    assert memory.registered() == []  # nothing held for a show that failed


def test_a_channel_array_and_a_2d_array(data_home, own_servers):
    rgb = (np.random.default_rng(1).random((3, 6, 30, 20)) * 255).astype(np.uint8)
    v = ngstate.show(rgb, voxel_size=(4, 1, 1), units="nanometer")
    url = v.state["layers"][0]["source"].removeprefix("precomputed://")
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": url + "/"}).result()
    assert store.shape == (20, 30, 6, 3)  # x, y, z and the channels
    assert np.array_equal(np.asarray(store.read().result()).transpose(3, 2, 1, 0), rgb)
    flat = ngstate.show(np.arange(30, dtype=np.uint64).reshape(5, 6))
    assert flat.state["layers"][0]["type"] == "segmentation"  # by dtype, as for files


def test_show_loads_a_neuroglancer_url_as_it_is(tmp_path, data_home, own_servers):
    state = {"dimensions": {"x": [1e-9, "m"], "y": [1e-9, "m"], "z": [1e-9, "m"]}, "position": [1, 2, 3],
             "layers": [{"type": "image", "source": "precomputed://https://example.org/em", "name": "em"}],
             "layout": "xy"}
    v = ngstate.show("https://neuroglancer-demo.appspot.com/" + ngstate.encode_fragment(state))
    assert v.state == state
    assert repr(v).startswith("<ngstate.Viewer 1 layer: 'em' (image: precomputed://https://example.org/em); "
                              "position x=1.0, y=2.0, z=3.0; layout xy; page http://127.0.0.1:")
    assert ngstate.parse_url(v.url) == state
    state["layout"] = "3d"
    v.set_state("https://neuroglancer-demo.appspot.com/" + ngstate.encode_fragment(state))  # a URL: its state
    assert v.state["layout"] == "3d"


def test_state_repr_says_what_it_holds(tmp_path):
    path = write_demo(tmp_path)
    state = ngstate.build_state([path], served_at={str(tmp_path): "http://data.example:9000"})
    text = repr(state)
    assert text.startswith("<ngstate.State 2 layers: ")
    assert f"'demo' (image: zarr2://http://data.example:9000/{DEMO_NAME}/)" in text
    assert f"'cells' (segmentation: zarr2://http://data.example:9000/{DEMO_NAME}/labels/cells/)" in text
    assert "position x=" in text and "layout 4panel" in text
    assert repr(ngstate.State()) == "<ngstate.State with 0 layers (not a valid state: a state needs at least one layer)>"


async def test_viewer_state_endpoints(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(ServerConfig(mounts=[MountConfig("", str(tmp_path))])))
    url = "/-/viewer/state/tok"
    s1 = {"position": [1, 2, 3]}
    # A #! page's client (not a notebook viewer): acknowledged, not kept for anyone to read.
    r = await client.post(url, json={"s": s1, "g": 5, "pg": "", "c": "a"})
    assert r.status == 200 and await r.json() == {"g": "5"}
    assert (await client.get(url)).status == 404
    # Python sets a state: a client that has not seen it is refused (it comes on the stream) ...
    g = (await (await client.put(url, json={"s": {"position": [9, 9, 9]}, "b": "http://x"})).json())["g"]
    assert (await client.post(url, json={"s": s1, "g": 6, "pg": "", "c": "a"})).status == 412
    # ... and the stream sends it, with the base its URLs start with.
    async with client.get("/-/viewer/events/tok", params={"c": "a", "gs": ""}) as stream:
        line = b""
        while not line.startswith(b"data: "):
            line = await stream.content.readline()
        assert json.loads(line[6:]) == {"k": "s", "s": {"position": [9, 9, 9]}, "g": g, "b": "http://x"}
    # A client that has seen it is kept, under a new generation.
    r = await client.post(url, json={"s": s1, "g": 7, "pg": g, "c": "a"})
    assert r.status == 200 and (await r.json())["g"] != g
    assert (await (await client.get(url)).json())["s"] == s1
    for body in (b"[]", b"{", b'{"s": 3, "g": 1}', b"[" * 100000):
        assert (await client.post(url, data=body)).status == 400
    assert (await client.put(url, data=b'{"s": {}, "b": 3}')).status == 400


async def test_viewer_states_are_read_and_set_with_an_identity_on_a_protected_deployment(aiohttp_client, tmp_path):
    from server.config import AuthConfig

    config = ServerConfig(mounts=[MountConfig("", str(tmp_path), access="token")], auth=AuthConfig(secret=b"s" * 32))
    client = await aiohttp_client(create_app(config))
    url = "/-/viewer/state/tok"
    assert (await client.put(url, json={"s": {"layout": "xy"}})).status == 401
    assert (await client.get(url)).status == 401


def test_viewer_states_are_bounded():
    from server.viewer_states import ViewerStates

    states = ViewerStates(budget=10_000)
    for i in range(100):
        states.set(f"t{i}", {"n": i}, 1000, None)
    kept = [i for i in range(100) if states.get(f"t{i}") is not None]
    assert kept == list(range(90, 100))  # the latest ten, 1000 bytes each
    g = states.get("t99").generation
    states.post("t99", {"n": "big"}, "c", g, 5000)  # a token's new state replaces its old size
    assert states._states.used == 5000 + 5 * 1000


def test_show_reads_local_data_from_a_running_ngserve(tmp_path, data_home, own_servers, start_server):
    """A running ``ngserve serve`` serving the folder is used for the data; the page (and its state)
    stays on the kernel's own server.  Behind a proxy base the kernel serves the folder itself."""
    import os

    write_demo(tmp_path)
    srv = start_server("serve", str(tmp_path), env=dict(os.environ))
    assert wait_until(lambda: bool(ngstate.registry.running()), 30)
    v = ngstate.show(tmp_path / DEMO_NAME)
    sources = [ngstate.layers.source_url(layer["source"]) for layer in v.state["layers"]]
    assert sources == [f"zarr2://{srv.url}/{DEMO_NAME}/", f"zarr2://{srv.url}/{DEMO_NAME}/labels/cells/"]
    assert v.server_url != srv.url and v.page.startswith(v.server_url + "/-/viewer/v/")
    proxied = ngstate.show(tmp_path / DEMO_NAME, base_url="/proxy/{port}")
    assert proxied.state["layers"][0]["source"] == f"zarr2://{proxied.server_url}/{DEMO_NAME}/"


def test_viewer_repr_after_its_server_stopped(data_home, own_servers):
    v = ngstate.show(np.zeros((4, 6), np.uint8), name="flat")
    notebook.shutdown()
    assert repr(v).startswith("<ngstate.Viewer 1 layer: 'flat' (image: precomputed://")
    assert repr(v).endswith("(its server does not answer)>")
    with pytest.raises(RuntimeError, match="does not answer"):
        v.set_state({"layout": "xy"})


def test_a_page_that_missed_a_newer_state_gives_way():
    """Two pages of one viewer: the one still on an older generation cannot overwrite the other's pan."""
    from server.viewer_states import ViewerStates

    states = ViewerStates()
    g1 = states.set("t", {"position": [0]}, 10, None).generation
    g2 = states.post("t", {"position": [5]}, "a", g1, 10).generation  # page a pans
    assert states.post("t", {"position": [0], "layout": "xy"}, "b", g1, 10) is None  # page b, behind: 412
    assert states.post("t", {"position": [5]}, "b", g1, 10).generation == g2  # b repeating a's state: no news
    assert states.get("t").state == {"position": [5]}


def test_a_server_stopped_mid_chunk_ends_without_a_traceback(caplog):
    """The kernel's server stops (shutdown()) while a pool job still runs: its end finds the loop closed."""
    import asyncio

    from server.builds import BuildPool

    pool = BuildPool(1, 1, 30.0)
    started, finish = threading.Event(), threading.Event()

    def job() -> int:
        started.set()
        finish.wait(10)
        return 1

    async def main() -> None:
        task = asyncio.ensure_future(pool.run(job))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    finish.set()
    pool._pool.shutdown(wait=True)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
