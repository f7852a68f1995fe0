"""An N5 array opened directly inherits its ancestors' attributes.json, as Neuroglancer merges them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from browser import browser_page, wait_until

import ngstate
from volumes import open_dataset
from volumes.write import write_n5

# The client's own reading of each layer's first source: names, scales and units of its model space.
MODEL_SPACE_JS = """() => window.viewer.layerManager.managedLayers.map(m => {
  const s = m.layer && m.layer.dataSources[0].loadState;
  if (!s || s.error !== undefined) return null;
  const space = s.dataSource.modelTransform.outputSpace;
  return {names: space.names, scales: Array.from(space.scales), units: space.units};
})"""


def write_group(folder):
    """``outer/`` (resolution and units for every N5 below it) holding a multiscale ``img.n5`` whose
    levels and group say nothing of resolution; the third axis is in seconds."""
    data = (np.arange(12 * 20 * 30) % 251).astype(np.uint8).reshape(12, 20, 30)
    write_n5(folder / "outer" / "img.n5", data, convention="neuroglancer", voxel_size_xyz=(1, 1, 1))
    group = folder / "outer" / "img.n5" / "attributes.json"
    attrs = json.loads(group.read_text())
    for key in ("resolution", "units"):
        attrs.pop(key, None)
    group.write_text(json.dumps(attrs))
    (folder / "outer" / "attributes.json").write_text(json.dumps({"resolution": [10, 10, 2], "units": ["nm", "nm", "s"]}))


EXPECTED = {"x": [1e-08, "m"], "y": [1e-08, "m"], "z": [2.0, "s"]}


def _dims(ds) -> dict:
    return {a.name: a.to_json() for a in ds.axes}


def test_levels_and_groups_inherit_resolution_and_units(tmp_path, start_server):
    write_group(tmp_path)
    for rel in ("outer/img.n5", "outer/img.n5/s0", "outer/img.n5/s1"):
        assert _dims(open_dataset(tmp_path / rel)) == EXPECTED, rel
    # The same over HTTP, where the ancestors are folders of the server.
    srv = start_server("serve", str(tmp_path))
    ds = open_dataset(f"{srv.url}/outer/img.n5/s0")
    assert _dims(ds) == EXPECTED
    assert ds.native_axes == ds.axes  # Neuroglancer reads the same: the source needs no transform
    state = ngstate.build_state([f"{srv.url}/outer/img.n5/s0"]).to_json()
    assert state["dimensions"] == EXPECTED
    assert state["layers"][0]["source"] == f"n5://{srv.url}/outer/img.n5/s0/"
    # ngserve inspect says the same.
    out = subprocess.run([sys.executable, "-m", "server", "inspect", "--no-stats", str(tmp_path / "outer/img.n5/s0")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    axes = json.loads(out.stdout)["axes"]
    assert {a["name"]: [a["scale"], a["unit"]] for a in axes} == EXPECTED, axes

    # And the client derives exactly these dimensions from the source on its own.
    with browser_page() as (page, errors):
        page.goto(ngstate.link(f"{srv.url}/outer/img.n5/s0"))
        assert wait_until(lambda: page.evaluate(MODEL_SPACE_JS) not in ([], [None]), timeout=60), errors.all()
        [space] = page.evaluate(MODEL_SPACE_JS)
    derived = {n: [s, u] for n, s, u in zip(space["names"], space["scales"], space["units"])}
    assert derived.keys() == EXPECTED.keys()
    for name, (scale, unit) in EXPECTED.items():
        assert derived[name][1] == unit and abs(derived[name][0] - scale) <= 1e-9 * scale, derived
