"""The registry of running servers, local paths through it, ``ngserve view`` and ``ngserve screenshot``."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request

import pytest
from browser import ARGS, CHROMIUM, browser_page, distinct_colours, state_of, wait_until
from PIL import Image

import ngstate
from ngstate import registry
from server.commands.demo import DEMO_NAME, write_demo


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """A registry of our own, for this process and the servers it starts."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return {**os.environ, "XDG_DATA_HOME": str(home)}


def ngserve(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=180, env=env)


class Viewing:
    """``ngserve view … --no-browser`` running; ``url`` is the viewer URL it printed."""

    def __init__(self, *args: str, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "view", *args, "--no-browser"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.out: list[str] = []
        self.url = None
        for line in self.proc.stdout:
            self.out.append(line)
            if line.startswith("ngserve: open "):
                self.url = line.split(" ", 2)[2].strip()
                break
        assert self.url, "".join(self.out) + self.proc.stderr.read()
        threading.Thread(target=lambda: [self.out.append(x) for x in self.proc.stdout], daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def test_registry_finds_running_servers_and_drops_stale_entries(tmp_path, data_home, start_server):
    data = tmp_path / "data"
    write_demo(data)
    folder = registry.default_data_dir() / "servers"
    folder.mkdir(parents=True)
    # A server that was killed: its pid is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / f"{dead.pid}.json").write_text(json.dumps(
        {"pid": dead.pid, "url": "http://127.0.0.1:9", "mounts": {"": str(data)}, "started": 0}))
    # A live process that answers no /-/health (hung, or still starting): skipped, kept.
    (folder / f"{os.getpid()}.json").write_text(json.dumps(
        {"pid": os.getpid(), "url": "http://127.0.0.1:9", "mounts": {"": str(data)}, "started": 1}))

    # Its own state elsewhere: the registry is still the user's, where readers look.
    srv = start_server("serve", str(tmp_path), "--mount", f"d={data}", "--data-dir", str(tmp_path / "state"),
                       env=data_home)
    (entry,) = registry.running()
    assert entry["url"] == srv.url and entry["pid"] == srv.proc.pid
    assert entry["mounts"] == {"": str(tmp_path.resolve()), "d": str(data.resolve())}
    assert not (folder / f"{dead.pid}.json").exists()  # dropped for good
    assert (folder / f"{os.getpid()}.json").exists()  # only skipped

    # A local path needs no --served-at now: the deepest mount that holds it wins.
    state = ngstate.parse_url(ngstate.link(data / DEMO_NAME))
    assert [(l["type"], l["source"]) for l in state["layers"]] == [
        ("image", f"zarr2://{srv.url}/d/{DEMO_NAME}/"),
        ("segmentation", [f"zarr2://{srv.url}/d/{DEMO_NAME}/labels/cells/",
                          f"precomputed://{srv.url}/-/mesh/d/{DEMO_NAME}/labels/cells"]),
    ]
    r = ngserve("link", str(data / DEMO_NAME / "labels" / "cells"), "--json", env=data_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["source"][0] == f"zarr2://{srv.url}/d/{DEMO_NAME}/labels/cells/"

    srv.stop()
    assert not (folder / f"{srv.proc.pid}.json").exists()  # removed at exit
    assert registry.running() == []


def test_local_path_without_a_server_names_the_command(tmp_path, data_home):
    write_demo(tmp_path)
    r = ngserve("link", str(tmp_path / DEMO_NAME), env=data_home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"`ngserve serve {tmp_path.resolve()}`" in line, line
    with pytest.raises(ValueError, match="no running ngserve serves this local path"):
        ngstate.build_state([tmp_path / DEMO_NAME])


def test_view_serves_a_local_ome_zarr_with_its_labels(tmp_path, data_home):
    write_demo(tmp_path)
    view = Viewing(str(tmp_path / DEMO_NAME), env=data_home)
    try:
        origin = re.match(r"http://127\.0\.0\.1:\d+", view.url)[0]
        assert view.url.startswith(origin + "/-/viewer/v/ngserve/#!")
        state = state_of(view.url)
        assert [(l["type"], l["name"], l["source"]) for l in state["layers"]] == [
            ("image", "demo", f"zarr2://{origin}/{DEMO_NAME}/"),
            ("segmentation", "cells", [f"zarr2://{origin}/{DEMO_NAME}/labels/cells/",
                                       f"precomputed://{origin}/-/mesh/{DEMO_NAME}/labels/cells"]),
        ]
        assert state["layers"][0]["shaderControls"]["normalized"]["range"][1] > 1000  # contrast, as link gives
        with urllib.request.urlopen(f"{origin}/{DEMO_NAME}/labels/cells/0/.zarray", timeout=10) as r:
            assert json.loads(r.read())["dtype"] == "<u4"  # served, and the data is there
        (entry,) = registry.running()
        assert entry["url"] == origin and entry["pid"] == view.proc.pid

        # A second view of the same data reuses that server and returns at once.
        again = ngserve("view", str(tmp_path / DEMO_NAME), "--no-labels", "--no-browser", env=data_home)
        assert again.returncode == 0, again.stderr
        url = again.stdout.strip().split(" ", 2)[2]
        assert [l["source"] for l in state_of(url)["layers"]] == [f"zarr2://{origin}/{DEMO_NAME}/"]
        assert url.startswith(origin + "/-/viewer/v/ngserve/#!")

        # The viewer shows both layers, each ready (its data source and visible chunks loaded).
        with browser_page() as (page, errors):
            page.goto(view.url)
            ready = ("() => window.viewer && window.viewer.layerManager.managedLayers.length === 2"
                     " && window.viewer.isReady()")
            assert wait_until(lambda: page.evaluate(ready), timeout=90), "the viewer never became ready"
            layers = page.evaluate("() => window.viewer.layerManager.managedLayers.map("
                                   "l => [l.name, l.layer && l.layer.type, l.isReady()])")
            status = page.evaluate("() => document.body.innerText")
        assert layers == [["demo", "image", True], ["cells", "segmentation", True]]
        assert "Disconnected" not in status and errors.page_errors == []
    finally:
        view.stop()
    assert registry.running() == []


def test_demo_shows_image_and_labels(tmp_path, start_server):
    srv = start_server("demo", "--out", str(tmp_path))
    url = next(line.split(" ", 2)[2].strip() for line in srv.stdout if line.startswith("ngserve: open "))
    assert [(l["type"], l["name"]) for l in state_of(url)["layers"]] == [("image", "demo"), ("segmentation", "cells")]


def test_headless_virtual_time_and_screenshot(tmp_path, data_home):
    write_demo(tmp_path)
    view = Viewing(str(tmp_path / DEMO_NAME), env=data_home)
    try:
        # Chromium's own screenshot mode: virtual time runs out only when no request stays open,
        # so the never-ending event stream held it forever.
        shot = tmp_path / "virtual.png"
        r = subprocess.run([CHROMIUM, "--headless", *ARGS, "--window-size=400,300", "--virtual-time-budget=5000",
                            f"--screenshot={shot}", view.url], capture_output=True, timeout=120)
        assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]

        out = tmp_path / "figure.png"
        r = ngserve("screenshot", str(tmp_path / DEMO_NAME), "-o", str(out), "--size", "640x360", env=data_home)
        assert r.returncode == 0, r.stderr
        assert f"wrote {out} (640x360)" in r.stdout
        png = out.read_bytes()
        assert Image.open(io.BytesIO(png)).size == (640, 360)
        # Not blank, and the data is drawn: the top-left (xy) panel has the image's many grey
        # levels and the labels' colours, not the few colours of an empty panel.
        assert distinct_colours(png, (10, 60, 310, 170)) > 200
    finally:
        view.stop()


def test_view_and_screenshot_errors_are_one_line(tmp_path, data_home):
    (tmp_path / "empty").mkdir()
    for args, words in (
        (["view", str(tmp_path / "absent"), "--no-browser"], "absent does not exist"),
        (["view", str(tmp_path / "empty"), "--no-browser"], "no dataset here"),
        (["screenshot", str(tmp_path), "-o", str(tmp_path / "x.png"), "--size", "10x10"], "--size"),
        (["screenshot", "http://127.0.0.1:9/#!{}", "-o", str(tmp_path / "no" / "x.png")], "does not exist"),
        (["screenshot", str(tmp_path), "-o", str(tmp_path / "x.png"), "--chromium", str(tmp_path / "none")],
         "no Chromium"),
    ):
        r = ngserve(*args, env=data_home)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert words in line, line
        assert "serving on" not in r.stdout  # nothing announced that is not there
    assert registry.running() == [] and not list((registry.default_data_dir() / "servers").glob("*.json"))
