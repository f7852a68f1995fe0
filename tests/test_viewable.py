"""Sources the bundled client cannot show as stored: link refuses them in one line naming the
source when no ngserve serves them; served by ngserve, link and /-/open show them through a view
(see test_view_choice.py); inspect reports why."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import unquote

import numpy as np
import pytest
import tensorstore as ts
from test_open import get

from volumes.write import write_ome_zarr, write_zarr_array


def _zarr2(path, data: np.ndarray, **metadata) -> None:
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"}, "create": True,
             "metadata": {"shape": list(data.shape), "chunks": [8] * data.ndim, "dtype": data.dtype.str, **metadata}},
            ).result().write(data).result()


def _set_ome_version(path, version: str) -> None:
    zattrs = path / ".zattrs"
    if zattrs.exists():
        attrs = json.loads(zattrs.read_text())
        for ms in attrs["multiscales"]:
            ms["version"] = version
        zattrs.write_text(json.dumps(attrs))
    else:
        meta = json.loads((path / "zarr.json").read_text())
        meta["attributes"]["ome"]["version"] = version
        (path / "zarr.json").write_text(json.dumps(meta))


def write_unviewable(root) -> dict[str, str]:
    """name -> a word the refusal must contain."""
    data = np.arange(16 * 16).reshape(16, 16)
    write_zarr_array(root / "f64.zarr", data.astype(np.float64))
    _zarr2(root / "flags.zarr", data % 2 == 0)
    _zarr2(root / "ids.zarr", data.astype(np.uint64))  # tensorstore's default fill_value: null
    image = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16)
    write_ome_zarr(root / "old.ome.zarr", image, levels=1)
    _set_ome_version(root / "old.ome.zarr", "0.3")
    write_ome_zarr(root / "new.ome.zarr", image, levels=1, zarr_version=3)
    _set_ome_version(root / "new.ome.zarr", "0.6")
    return {"f64.zarr": "float64", "flags.zarr": "bool", "ids.zarr": "fill_value null",
            "old.ome.zarr": "version 0.3", "new.ome.zarr": "version 0.6"}


@pytest.fixture(scope="module")
def unviewable(tmp_path_factory):
    root = tmp_path_factory.mktemp("unviewable")
    return root, write_unviewable(root)


def ngserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120)


def test_link_refuses_in_one_line_naming_the_source(unviewable):
    root, cases = unviewable
    write_zarr_array(root / "fine.zarr", np.zeros((16, 16), np.float32))
    for name, word in cases.items():
        # With another, viewable source first: the line names the one that failed.
        out = ngserve("link", "--served-at", f"{root}=http://127.0.0.1:1", str(root / "fine.zarr"), str(root / name))
        assert out.returncode == 2, (name, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert name in lines[0] and word in lines[0] and "bundled Neuroglancer cannot show" in lines[0], lines[0]
        assert "serve it with ngserve" in lines[0], lines[0]


def test_inspect_reports_why_and_succeeds(unviewable):
    root, cases = unviewable
    for name, word in cases.items():
        out = ngserve("inspect", str(root / name))
        assert out.returncode == 0, (name, out.stderr)
        got = json.loads(out.stdout)
        assert word in got["viewer_problem"] and got["view"] in ("zarr", "precomputed"), out.stdout
    write_zarr_array(root / "u64.zarr", np.zeros((16, 16), np.uint64))  # ngserve's writer states fill_value 0
    assert "viewer_problem" not in json.loads(ngserve("inspect", str(root / "u64.zarr")).stdout)


def test_open_shows_them_through_a_view(unviewable, start_server):
    root, cases = unviewable
    srv = start_server("serve", str(root))
    for name in cases:
        status, headers, body = get(f"{srv.url}/-/open/{name}")
        assert status == 302, (name, status, body)
        layer = json.loads(unquote(headers["Location"].split("#!", 1)[1]))["layers"][0]
        url = layer["source"]["url"] if isinstance(layer["source"], dict) else layer["source"]
        assert url.split(srv.url)[1].rstrip("/") in (f"/-/zarr/{name}", f"/-/precomputed/{name}"), url
