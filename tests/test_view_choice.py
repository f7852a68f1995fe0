"""Which view a source served by ngserve is shown through: ``ngserve link``, ``/-/open``,
``inspect`` and listings all follow :func:`ngstate.choose_view`, and each state's source URL is
a real endpoint that reads back the source's data.

One server over one folder of sources the bundled client cannot show as stored (and one it can);
one more with a token-only mount for share links.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tensorstore as ts
import tifffile
from conftest import ServerProcess, write_config
from test_view_repair import COSEM_T0, write_cosem, write_old_ome, write_ome06
from test_viewable import write_unviewable

import ngstate
from server.tokens import mint
from volumes.location import strip_scheme
from volumes.write import write_zarr_array

SECRET = b"view-choice-secret-0123456789abcdef-0123"
RNG = np.random.default_rng(10)
STACK = RNG.integers(0, 60000, size=(12, 40, 50), dtype=np.uint16)
MRC = RNG.random((10, 20, 30), dtype=np.float32)
F64 = np.arange(16 * 16).reshape(16, 16).astype(np.float64) / 7


def write_sources(root: Path) -> None:
    write_unviewable(root)  # f64.zarr, flags.zarr, ids.zarr, old.ome.zarr (0.3 in name only), new.ome.zarr
    write_zarr_array(root / "f64.zarr", F64)  # not integral: float32 precision shows
    write_zarr_array(root / "fine.zarr", np.zeros((16, 16), np.float32))
    write_zarr_array(root / "i64.zarr", (np.arange(16 * 16).reshape(16, 16) % 5).astype(np.int64))
    write_old_ome(root / "v03.zarr", "0.3", [[10, 40, 48], [5, 20, 24]], ["z", "y", "x"])
    write_ome06(root / "v06.zarr")
    write_rotated_ome06(root / "rot.zarr")
    write_cosem(root / "jrc.n5" / "em" / "fibsem")
    tifffile.imwrite(root / "stack.tif", STACK)
    (root / "slices").mkdir()
    for i, plane in enumerate(STACK[:3]):
        tifffile.imwrite(root / "slices" / f"z{i}.tif", plane)
    with mrcfile.new(root / "map.mrc") as m:
        m.set_data(MRC)
        m.voxel_size = (1.1, 1.2, 1.3)
    strings = root / "strings.zarr"  # no view shows text
    strings.mkdir()
    (strings / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4], "chunks": [4], "dtype": "<U8", "compressor": None, "fill_value": "",
        "order": "C", "filters": None}))


def write_rotated_ome06(root: Path) -> None:
    """OME 0.6, 2-D y/x at 0.5 micrometer, rotated a quarter turn into "world": 0.5 cannot say it."""
    ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / "0") + "/"}, "create": True,
             "metadata": {"shape": [8, 6], "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 6]}},
                          "data_type": "uint8"}}).result().write(np.arange(48, dtype=np.uint8).reshape(8, 6)).result()
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "yx"]
    ms = {"coordinateSystems": [{"name": "world", "axes": axes}, {"name": "intrinsic", "axes": axes}],
          "datasets": [{"path": "0", "coordinateTransformations": [
              {"type": "scale", "scale": [0.5, 0.5], "input": {"path": "0"}, "output": {"name": "intrinsic"}}]}],
          "coordinateTransformations": [{"type": "rotation", "rotation": [[0, -1], [1, 0]],
                                         "input": {"name": "intrinsic"}, "output": {"name": "world"}}]}
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"ome": {"version": "0.6", "multiscales": [ms]}}}))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    write_sources(root)
    srv = ServerProcess(["serve", str(root), "--port", "0"])
    yield srv, root
    srv.stop()


def ngserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=180)


def get(url: str) -> tuple[int, dict, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def source_url(layer: dict) -> str:
    src = layer["source"]
    return src["url"] if isinstance(src, dict) else src


def expected(base: str) -> dict[str, str]:
    """source name -> the layer source URL it must get."""
    return {
        "fine.zarr": f"zarr2://{base}/fine.zarr/",
        "f64.zarr": f"precomputed://{base}/-/precomputed/f64.zarr",
        "i64.zarr": f"precomputed://{base}/-/precomputed/i64.zarr",
        "flags.zarr": f"zarr2://{base}/-/zarr/flags.zarr/",
        "ids.zarr": f"zarr2://{base}/-/zarr/ids.zarr/",
        "v03.zarr": f"zarr2://{base}/-/zarr/v03.zarr/",
        "v06.zarr": f"zarr3://{base}/-/zarr/v06.zarr/",
        # Says 0.3 but is written like 0.4: the zarr view cannot repair it, the translation shows it.
        "old.ome.zarr": f"precomputed://{base}/-/precomputed/old.ome.zarr",
        "jrc.n5/em/fibsem": f"n5://{base}/-/n5/jrc.n5/em/fibsem/",
        "stack.tif": f"precomputed://{base}/-/precomputed/stack.tif",
        "map.mrc": f"precomputed://{base}/-/precomputed/map.mrc",
        "slices": f"precomputed://{base}/-/precomputed/slices",
    }


METADATA = {"precomputed": "info", "zarr2": ".zarray", "zarr3": "zarr.json", "n5": "attributes.json"}


def test_link_shows_each_source_through_the_view_that_shows_it(site):
    srv, _ = site
    for name, want in expected(srv.url).items():
        state = ngstate.build_state([f"{srv.url}/{name}"])
        plan = state.plans[0]
        assert source_url(plan.layer) == want, name
        assert plan.view == (want.split("/-/")[1].split("/")[0] if "/-/" in want else "native"), name
    # The CLI is the same builder: one call, every layer, contrast from the source.
    names = list(expected(srv.url))
    out = ngserve("link", "--json", *[f"{srv.url}/{n}" for n in names])
    assert out.returncode == 0, out.stderr
    layers = json.loads(out.stdout)["layers"]
    assert [source_url(layer) for layer in layers] == list(expected(srv.url).values())
    for layer in layers:  # every view URL is a real endpoint
        url = source_url(layer)
        scheme = url.split("://", 1)[0]
        group_meta = {"zarr2": ".zattrs"} if "ome" in url or "v0" in url else {}
        meta = group_meta.get(scheme, METADATA[scheme])
        status, _, body = get(strip_scheme(url).rstrip("/") + "/" + meta)
        assert status == 200, (url, body)
    by_name = {layer["name"]: layer for layer in layers}
    assert by_name["i64"]["type"] == "segmentation" and by_name["ids"]["type"] == "segmentation"
    lo, hi = by_name["stack"]["shaderControls"]["normalized"]["range"]
    assert 0 <= lo < 5000 and 55000 < hi <= 60000  # the source's percentiles, uint16


def test_views_place_the_data_as_the_source_says(site):
    srv, _ = site

    def plan(name: str):
        return ngstate.build_state([f"{srv.url}/{name}"]).plans[0]

    assert plan("map.mrc").dims == {"x": [pytest.approx(1.1e-10), "m"], "y": [pytest.approx(1.2e-10), "m"],
                                    "z": [pytest.approx(1.3e-10), "m"]}
    assert plan("v06.zarr").dims == {"z": [pytest.approx(2e-6), "m"], "y": [pytest.approx(5e-7), "m"],
                                     "x": [pytest.approx(5e-7), "m"]}
    assert plan("v03.zarr").dims == {"z": [1.0, ""], "y": [1.0, ""], "x": [1.0, ""]}
    # COSEM: the n5 view states voxel size and levels; its translation, which N5 cannot say,
    # is in the source transform (voxel centres at COSEM_T0 nm, corners half a voxel lower).
    cosem = plan("jrc.n5/em/fibsem")
    assert cosem.dims == {"x": [pytest.approx(4e-9), "m"], "y": [pytest.approx(4e-9), "m"],
                          "z": [pytest.approx(5e-9), "m"]}
    matrix = cosem.layer["source"]["transform"]["matrix"]
    want = [t / s - 0.5 for t, s in zip(COSEM_T0[::-1], [4.0, 4.0, 5.0])]
    assert [row[3] for row in matrix] == pytest.approx(want)
    # The translated float64 reads back through the state's own URL as float32.
    f64 = ts.open({"driver": "neuroglancer_precomputed",
                   "kvstore": {"driver": "http", "base_url": strip_scheme(source_url(plan("f64.zarr").layer))}},
                  read=True).result()
    np.testing.assert_array_equal(np.asarray(f64[..., 0, 0].read().result()).T, F64.astype(np.float32))


def test_ome06_rotation_is_carried_in_the_source_transform(site):
    srv, _ = site
    plan = ngstate.build_state([f"{srv.url}/rot.zarr"]).plans[0]
    src = plan.layer["source"]
    assert src["url"] == f"zarr3://{srv.url}/-/zarr/rot.zarr/"
    assert src["transform"]["outputDimensions"] == {"y": [pytest.approx(5e-7), "m"], "x": [pytest.approx(5e-7), "m"]}
    # Voxel (y, x) has its centre at (0.5 y, 0.5 x) micrometer, which the quarter turn puts at
    # (-0.5 x, 0.5 y): in 0.5-micrometer units (the client's coordinates), (y, x) goes to (-x, y).
    m = np.array(src["transform"]["matrix"])
    for y, x in [(0, 0), (0, 1), (3, 5)]:
        assert m @ [y, x, 1] == pytest.approx([-x, y])
    assert plan.bounds["y"] == pytest.approx((-5.5 * 5e-7, 0.5 * 5e-7))  # x's 6 voxels, turned onto y


def test_open_redirects_to_the_same_view(site):
    srv, _ = site
    for name, want in expected(srv.url).items():
        status, headers, body = get(f"{srv.url}/-/open/{name}")
        assert status == 302, (name, status, body)
        state = json.loads(urllib.parse.unquote(headers["Location"].split("#!", 1)[1]))
        assert source_url(state["layers"][0]) == want, name


def test_inspect_says_which_view_and_why(site):
    _, root = site
    want = {"fine.zarr": "native", "f64.zarr": "precomputed", "flags.zarr": "zarr", "v03.zarr": "zarr",
            "jrc.n5/em/fibsem": "n5", "stack.tif": "precomputed", "map.mrc": "precomputed"}
    for name, view in want.items():
        out = ngserve("inspect", "--no-stats", str(root / name))
        assert out.returncode == 0, (name, out.stderr)
        got = json.loads(out.stdout)
        assert got["view"] == view, (name, got)
        assert (view == "native") == ("viewer_problem" not in got)
        assert view == "native" or f"/-/{view}/" in got["view_reason"]


def test_what_no_view_shows_gets_no_link_and_one_line(site):
    srv, _ = site
    status, _, body = get(f"{srv.url}/-/open/strings.zarr")
    assert status == 422 and body.decode().startswith("cannot show /strings.zarr: ") and body.count(b"\n") == 1, body
    status, _, body = get(f"{srv.url}/")
    page = body.decode()
    for name in ("stack.tif", "map.mrc", "slices", "fine.zarr", "f64.zarr", "v03.zarr"):
        assert f'href="/-/open/{name}"' in page, name
    assert 'href="/-/open/strings.zarr"' not in page


def test_sources_elsewhere_are_refused_in_one_line(site):
    _, root = site
    out = ngserve("link", "--served-at", f"{root}=http://127.0.0.1:1", str(root / "stack.tif"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "stack.tif" in out.stderr and "serve it with ngserve" in out.stderr


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    root = tmp_path_factory.mktemp("vault")
    write_zarr_array(root / "f64.zarr", F64)
    write_old_ome(root / "v03.zarr", "0.3", [[10, 40, 48], [5, 20, 24]], ["z", "y", "x"])
    tifffile.imwrite(root / "stack.tif", STACK)
    conf = tmp_path_factory.mktemp("conf")
    write_config(conf, SECRET, f"""
[[mounts]]
name = "vault"
source = "{root}"
access = "token"
""")
    srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml")])
    yield srv, conf / "ngserve.toml"
    srv.stop()


def test_share_tokens_are_carried_into_view_urls(protected):
    srv, config = protected
    out = ngserve("link", "--token-ttl", "1h", "--config", str(config), "--json",
                  f"{srv.url}/vault/f64.zarr", f"{srv.url}/vault/v03.zarr")
    assert out.returncode == 0, out.stderr
    f64, v03 = (source_url(layer) for layer in json.loads(out.stdout)["layers"])
    token = urllib.parse.urlsplit(strip_scheme(f64)).path.split("/")[3]
    assert f64 == f"precomputed://{srv.url}/-/t/{token}/-/precomputed/vault/f64.zarr"
    assert v03.startswith(f"zarr2://{srv.url}/-/t/") and v03.endswith("/-/zarr/vault/v03.zarr/")
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "http", "base_url": strip_scheme(f64)}}, read=True).result()
    np.testing.assert_array_equal(np.asarray(store[..., 0, 0].read().result()).T, F64.astype(np.float32))
    assert get(f"{srv.url}/-/precomputed/vault/f64.zarr/info")[0] == 401  # the token is what lets it read
    # /-/open with a token in the query: the view URL keeps it as its path prefix.
    token = mint(SECRET, "vault", "stack.tif", 3600)
    status, headers, body = get(f"{srv.url}/-/open/vault/stack.tif?token={token}")
    assert status == 302, body
    state = json.loads(urllib.parse.unquote(headers["Location"].split("#!", 1)[1]))
    url = source_url(state["layers"][0])
    assert url == f"precomputed://{srv.url}/-/t/{token}/-/precomputed/vault/stack.tif"
    assert get(strip_scheme(url) + "/info")[0] == 200


def test_translated_view_carries_the_sub_voxel_offset(site):
    """precomputed's voxel_offset is whole voxels: the layer's source transform carries the rest,
    so the translated float64 sits where the source says (it was rounded to whole voxels)."""
    from volumes import write_ome_zarr

    srv, root = site
    data = np.arange(6 * 8 * 10, dtype=np.float64).reshape(6, 8, 10) / 7
    # Voxel corners at z 7.3, y 1.25, x -2.6 voxels (OME translations name voxel centres).
    write_ome_zarr(root / "frac.ome.zarr", data, voxel_size=(2, 3, 4), unit="nanometer", levels=1,
                   translation=((7.3 + 0.5) * 2, (1.25 + 0.5) * 3, (-2.6 + 0.5) * 4))
    plan = ngstate.build_state([f"{srv.url}/frac.ome.zarr"]).plans[0]
    assert plan.view == "precomputed"
    info = json.loads(get(f"{srv.url}/-/precomputed/frac.ome.zarr/info")[2])
    assert info["scales"][0]["voxel_offset"] == [-3, 1, 7]
    src = plan.layer["source"]
    assert [row[-1] for row in src["transform"]["matrix"][:3]] == pytest.approx([0.4, 0.25, 0.3])
    assert plan.bounds["z"][0] == pytest.approx(7.3 * 2e-9)
    assert plan.bounds["x"][0] == pytest.approx(-2.6 * 4e-9)
