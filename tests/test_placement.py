"""Placing layers: a voxel size and units given per source, and a unitless layer next to
physical ones placed like the physical layer of its shape (issue 12, "a view that is right the
first time")."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from browser import browser_page, wait_until

import ngstate
from volumes.write import write_ome_zarr, write_zarr_array

BASE = "http://data.example:9000/d"
SHAPE = (12, 40, 48)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    labels = (image // 64).astype(np.uint32)
    write_ome_zarr(root / "em.ome.zarr", image, voxel_size=(40, 8, 8), unit="nanometer", levels=2)
    write_zarr_array(root / "seg.zarr", labels)  # zarr v2, no names, no units: d0, d1, d2 in the client
    write_zarr_array(root / "small.zarr", labels[:, :20, :24])
    return root


def build(tree, *names, **options):
    options.setdefault("viewer", "https://viewer.example/")
    st = ngstate.build_state([tree / n for n in names], served_at={str(tree): BASE}, **options)
    return st, st.to_json()


def test_a_unitless_layer_takes_the_voxel_size_of_a_physical_layer_of_its_shape(tree):
    st, s = build(tree, "em.ome.zarr", "seg.zarr")
    assert list(s["dimensions"]) == ["x", "y", "z"]  # not also d0, d1, d2
    assert s["dimensions"]["z"] == [pytest.approx(40e-9), "m"]
    seg = s["layers"][1]["source"]
    assert seg["url"] == f"zarr2://{BASE}/seg.zarr/"
    out = seg["transform"]["outputDimensions"]
    assert list(out) == ["z", "y", "x"]
    assert [v[0] for v in out.values()] == pytest.approx([40e-9, 8e-9, 8e-9])
    # On the image's grid (OME voxel centres at whole numbers), so the view's centre is the
    # image's, in its voxels: not 6.4e10 metres-as-voxels.
    assert seg["transform"]["matrix"] == [[1, 0, 0, -0.5], [0, 1, 0, -0.5], [0, 0, 1, -0.5]]
    assert s["position"] == pytest.approx([23.5, 19.5, 5.5])
    assert any("'seg' has no units: placed like layer 'em'" in n for n in st.notes)
    assert any("40 × 8 × 8 nm" in n for n in st.notes)


def test_a_unitless_layer_of_another_shape_is_left_and_noted(tree):
    st, s = build(tree, "em.ome.zarr", "small.zarr")
    assert s["layers"][1]["source"] == f"zarr2://{BASE}/small.zarr/"
    assert any("'small' has no units and no physical layer has its shape" in n for n in st.notes)


def test_unitless_layers_alone_stay_unitless(tree):
    st, s = build(tree, "seg.zarr")
    assert s["layers"][0]["source"] == f"zarr2://{BASE}/seg.zarr/" and not st.notes


def test_voxel_size_and_units_given_for_every_source_or_per_source(tree):
    _, s = build(tree, "seg.zarr", voxel_size=[30, 6, 6], units="nm")
    out = s["layers"][0]["source"]["transform"]["outputDimensions"]
    assert [v for v in out.values()] == [[pytest.approx(30e-9), "m"], [pytest.approx(6e-9), "m"],
                                         [pytest.approx(6e-9), "m"]]
    # Per source: the image's micrometres, the labels' default nanometres; a given size is kept
    # even beside a physical layer of the same shape.
    st, s = build(tree, "em.ome.zarr", "seg.zarr", voxel_size=[[0.04, 0.008, 0.008], [2]], units=["um", None])
    assert "transform" not in s["layers"][0]["source"] or s["layers"][0]["source"]["transform"][
        "outputDimensions"]["z"] == [pytest.approx(40e-9), "m"]
    seg = s["layers"][1]["source"]["transform"]["outputDimensions"]
    assert [v[0] for v in seg.values()] == pytest.approx([2e-9] * 3)
    assert not any("no units" in n for n in st.notes)


def test_units_alone_name_the_unit_of_unitless_voxels(tree):
    _, s = build(tree, "seg.zarr", units="um")
    out = s["layers"][0]["source"]["transform"]["outputDimensions"]
    assert [v for v in out.values()] == [[pytest.approx(1e-6), "m"]] * 3
    # A physical layer keeps its size: only the unit it is written in could change.
    _, s = build(tree, "em.ome.zarr", units="um")
    assert s["dimensions"]["z"] == [pytest.approx(40e-9), "m"]


@pytest.mark.parametrize("options, message", [
    ({"voxel_size": [1, 2]}, "voxel size has 2 values for the 3 spatial axes (d0,d1,d2)"),
    ({"voxel_size": [0]}, "voxel size 0 is not a positive number"),
    ({"voxel_size": [float("nan")]}, "voxel size nan is not a positive number"),
    ({"units": "parsec-ish"}, "unknown unit parsec-ish"),
    ({"units": "second"}, "unit second is not a length"),
])
def test_bad_voxel_sizes_are_one_clear_error(tree, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(tree, "seg.zarr", **options)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "server", "link", *args], capture_output=True, text=True)


def test_cli_voxel_size_and_units_per_source(tree):
    import json

    r = cli(str(tree / "seg.zarr"), "--served-at", f"{tree}={BASE}", "--json", "--voxel-size", "30,6,6",
            "--units", "nm")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["layers"][0]["source"]["transform"]["outputDimensions"]
    assert [v[0] for v in out.values()] == pytest.approx([30e-9, 6e-9, 6e-9])
    r = cli(str(tree / "em.ome.zarr"), str(tree / "seg.zarr"), str(tree / "small.zarr"), "--served-at",
            f"{tree}={BASE}", "--json", "--voxel-size", "1", "--voxel-size", "2")
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "--voxel-size was given 2 times for 3 sources; give it once for all, or once per source")
    r = cli(str(tree / "seg.zarr"), "--served-at", f"{tree}={BASE}", "--voxel-size", "-4")
    assert r.returncode == 2 and "voxel size -4 is not a positive number" in r.stderr
    assert "Traceback" not in r.stderr
    # The unitless rule's note reaches the terminal.
    r = cli(str(tree / "em.ome.zarr"), str(tree / "seg.zarr"), "--served-at", f"{tree}={BASE}")
    assert r.returncode == 0 and "has no units: placed like layer" in r.stderr


SPACE = """() => {
  const cs = window.viewer.coordinateSpace.value;
  if (!cs.valid || cs.rank === 0) return null;
  return {names: cs.names, units: cs.units, scales: Array.from(cs.scales),
          position: Array.from(window.viewer.position.value)};
}"""


def test_in_the_viewer_the_unitless_labels_overlay_the_image(start_server, tree):
    srv = start_server("serve", str(tree))
    url = ngstate.link(tree / "em.ome.zarr", tree / "seg.zarr", served_at={str(tree): srv.url},
                       viewer=srv.url + ngstate.NGSERVE_VIEWER_PATH, layout="xy")
    with browser_page() as (page, _errors):
        page.goto(url)
        found = {}
        assert wait_until(lambda: found.update(space=page.evaluate(SPACE)) or found["space"] is not None)
        space = found["space"]
        # One 3-D space in nanometres, the view inside the data, and the labels' chunks read.
        assert space["names"] == ["x", "y", "z"] and space["units"] == ["m", "m", "m"]
        assert space["scales"] == pytest.approx([8e-9, 8e-9, 40e-9])
        assert all(0 <= p <= n for p, n in zip(space["position"], (SHAPE[2], SHAPE[1], SHAPE[0])))
        assert wait_until(lambda: srv.requested(r'"GET /seg\.zarr/\d+[./]\d+[./]\d+ HTTP'))
