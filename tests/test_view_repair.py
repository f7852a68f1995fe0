"""The repaired-metadata views ``/-/n5/`` and ``/-/zarr/``: read by tensorstore and the bundled viewer.

Fixtures follow the conventions' own examples: a COSEM/Cellmap N5 multiscale (per-level
``transform``, group ``multiscales``), an old n5-viewer group (``pixelResolution`` and
``downsamplingFactors`` per level), OME-Zarr 0.1, 0.2 (nested chunks without
``dimension_separator``), 0.3 (axis names) and 0.6 (``coordinateSystems``, sequence
transforms), a uint64 zarr v2 with ``fill_value: null`` and bool arrays.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from conftest import write_config
from http_get import get

from volumes.present_n5 import present_n5
from volumes.present_zarr import present_ome

RNG = np.random.default_rng(10)
COSEM_SHAPES = [[64, 48, 20], [32, 24, 10], [16, 12, 5], [8, 6, 3]]  # N5 order: x, y, z
COSEM_T0 = [10.0, 20.0, 40.0]  # z, y, x (COSEM lists C order), nm, voxel centre of s0's first voxel


def _file(path: Path) -> dict:
    return {"driver": "file", "path": str(path) + "/"}


def _write(spec: dict, data: np.ndarray) -> None:
    ts.open(spec, create=True, delete_existing=True).result().write(data).result()


def _edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


def write_cosem(root: Path) -> dict[str, np.ndarray]:
    levels = {}
    for i, shape in enumerate(COSEM_SHAPES):
        f = 2**i
        data = RNG.integers(0, 255, size=shape, dtype=np.uint8)
        _write({"driver": "n5", "kvstore": _file(root / f"s{i}"),
                "metadata": {"dimensions": shape, "blockSize": [16, 16, 8], "dataType": "uint8",
                             "compression": {"type": "gzip"}}}, data)
        transform = {"axes": ["z", "y", "x"], "ordering": "C", "scale": [5.0 * f, 4.0 * f, 4.0 * f],
                     "translate": [t + (f - 1) / 2 * s for t, s in zip(COSEM_T0, [5.0, 4.0, 4.0])],
                     "units": ["nm", "nm", "nm"]}
        _edit_json(root / f"s{i}" / "attributes.json", transform=transform)
        levels[f"s{i}"] = data
    datasets = [{"path": f"s{i}", "transform": json.loads((root / f"s{i}" / "attributes.json").read_text())["transform"]}
                for i in range(len(COSEM_SHAPES))]
    (root / "attributes.json").write_text(json.dumps(
        {"n5": "2.0.0", "multiscales": [{"name": "em", "datasets": datasets}]}))
    return levels


def write_n5_viewer(root: Path) -> dict[str, np.ndarray]:
    levels = {}
    for i, (shape, factors) in enumerate([([40, 30, 12], [1, 1, 1]), ([20, 15, 12], [2, 2, 1])]):
        data = RNG.integers(0, 60000, size=shape, dtype=np.uint16)
        _write({"driver": "n5", "kvstore": _file(root / f"s{i}"),
                "metadata": {"dimensions": shape, "blockSize": [16, 16, 16], "dataType": "uint16",
                             "compression": {"type": "raw"}}}, data)
        extra = {"downsamplingFactors": factors}
        if i == 0:
            extra["pixelResolution"] = {"dimensions": [0.5, 0.5, 2.0], "unit": "um"}
        _edit_json(root / f"s{i}" / "attributes.json", **extra)
        levels[f"s{i}"] = data
    (root / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    return levels


def write_old_ome(root: Path, version: str, shapes: list[list[int]], axes: list[str] | None = None) -> dict[str, np.ndarray]:
    """OME 0.1-0.3 as their writers made them: 0.2 and 0.3 nested chunks, no dimension_separator key."""
    levels = {}
    for i, shape in enumerate(shapes):
        data = RNG.integers(0, 255, size=shape, dtype=np.uint8)
        sep = "." if version == "0.1" else "/"
        _write({"driver": "zarr", "kvstore": _file(root / str(i)),
                "metadata": {"shape": shape, "chunks": [min(s, 8) for s in shape], "dtype": "|u1",
                             "dimension_separator": sep, "compressor": None}}, data)
        _edit_json(root / str(i) / ".zarray", dimension_separator=None)
        levels[str(i)] = data
    ms = {"version": version, "datasets": [{"path": str(i)} for i in range(len(shapes))]}
    if axes:
        ms["axes"] = axes
    (root / ".zgroup").write_text('{"zarr_format": 2}')
    (root / ".zattrs").write_text(json.dumps({"multiscales": [ms]}))
    return levels


OME06_T = [1.0, 3.0, 5.0]  # z, y, x micrometer: s0's first voxel centre
OME06_S = [2.0, 0.5, 0.5]


def write_ome06(root: Path) -> dict[str, np.ndarray]:
    levels = {}
    datasets = []
    for i, shape in enumerate([[6, 40, 36], [3, 20, 18]]):
        data = RNG.integers(0, 255, size=shape, dtype=np.uint8)
        _write({"driver": "zarr3", "kvstore": _file(root / f"s{i}"),
                "metadata": {"shape": shape, "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 16, 16]}},
                             "data_type": "uint8"}}, data)
        levels[f"s{i}"] = data
        f = [1, 2, 2] if i else [1, 1, 1]
        scale = [s * k for s, k in zip(OME06_S, f)]
        trans = [t + (k - 1) / 2 * s for t, s, k in zip(OME06_T, OME06_S, f)]
        datasets.append({"path": f"s{i}", "coordinateTransformations": [{
            "type": "sequence", "input": {"path": f"s{i}"}, "output": {"name": "intrinsic"},
            "transformations": [{"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]}]})
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    attrs = {"ome": {"version": "0.6", "multiscales": [{
        "name": "cells", "coordinateSystems": [{"name": "intrinsic", "axes": axes}], "datasets": datasets}],
        "omero": {"channels": [{"window": {"start": 0, "end": 255, "min": 0, "max": 255}}]}}}
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}))
    return levels


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("repair")
    data = root / "data"
    src = {
        "cosem": write_cosem(data / "jrc.n5" / "em" / "fibsem-uint8"),
        "n5v": write_n5_viewer(data / "n5v.n5"),
        "ome01": write_old_ome(data / "v01.zarr", "0.1", [[1, 2, 4, 16, 24], [1, 2, 2, 8, 12]]),
        "ome02": write_old_ome(data / "v02.zarr", "0.2", [[1, 1, 5, 17, 20], [1, 1, 3, 9, 10]]),
        "ome03": write_old_ome(data / "v03.zarr", "0.3", [[10, 40, 48], [5, 20, 24], [3, 10, 12]], ["z", "y", "x"]),
        "ome06": write_ome06(data / "v06.zarr"),
    }
    (data / "jrc.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    (data / "jrc.n5" / "em" / "attributes.json").write_text('{"n5": "2.0.0"}')
    big = RNG.integers(0, 2**64 - 1, size=(20, 30), dtype=np.uint64)
    big[:8, :8] = 0
    _write({"driver": "zarr", "kvstore": _file(data / "labels.zarr"),
            "metadata": {"shape": [20, 30], "chunks": [8, 8], "dtype": "<u8", "fill_value": None}}, big)
    src["u64"] = big
    flags = RNG.random((17, 9)) > 0.5
    _write({"driver": "zarr", "kvstore": _file(data / "mask.zarr"),
            "metadata": {"shape": [17, 9], "chunks": [8, 8], "dtype": "|b1"}}, flags)
    _write({"driver": "zarr3", "kvstore": _file(data / "mask3.zarr"),
            "metadata": {"shape": [17, 9], "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 8]}},
                         "data_type": "bool"}}, flags)
    src["bool"] = flags
    return root, src




def get_json(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def read(driver: str, url: str) -> np.ndarray:
    return ts.open({"driver": driver, "kvstore": {"driver": "http", "base_url": url}}, read=True).result().read().result()


# -- N5 ----------------------------------------------------------------------------------
def test_cosem_group_reads_as_neuroglancer_multiscale(start_server, tree):
    root, src = tree
    srv = start_server("serve", str(root))
    base = f"{srv.url}/-/n5/data/jrc.n5/em/fibsem-uint8"
    group = get_json(base + "/attributes.json")
    assert group["downsamplingFactors"] == [[1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8]]
    assert group["resolution"] == [4.0, 4.0, 5.0]  # x, y, z: COSEM's z, y, x reversed
    assert group["units"] == ["nm", "nm", "nm"] and group["axes"] == ["x", "y", "z"]
    assert group["multiscales"][0]["name"] == "em"  # the source's own attributes stay
    for i, data in enumerate(src["cosem"].values()):
        level = get_json(f"{base}/s{i}/attributes.json")
        assert level["downsamplingFactors"] == [2**i] * 3
        assert level["resolution"] == [4.0, 4.0, 5.0] and level["n5"] == "2.0.0"  # inherited from ancestors
        # Every level, read by tensorstore through the view, is the source's bytes.
        np.testing.assert_array_equal(read("n5", f"{base}/s{i}/"), data)
    # The raw files say none of it: the repair is the view's.
    raw = get_json(f"{srv.url}/data/jrc.n5/em/fibsem-uint8/attributes.json")
    assert "downsamplingFactors" not in raw and "resolution" not in raw


def test_n5_viewer_group_gets_its_voxel_size_from_s0(start_server, tree):
    root, src = tree
    srv = start_server("serve", str(root))
    base = f"{srv.url}/-/n5/data/n5v.n5"
    group = get_json(base + "/attributes.json")
    assert group["resolution"] == [0.5, 0.5, 2.0] and group["units"] == ["um"] * 3
    assert group["downsamplingFactors"] == [[1, 1, 1], [2, 2, 1]]
    s0 = get_json(base + "/s0/attributes.json")
    assert "pixelResolution" not in s0 and s0["downsamplingFactors"] == [1, 1, 1]
    for name, data in src["n5v"].items():
        np.testing.assert_array_equal(read("n5", f"{base}/{name}/"), data)


def test_n5_presenter_translation_and_merge_order():
    """Pure: the COSEM translate comes back as an offset; deeper attributes win the merge."""
    level0 = {"dimensions": [10, 10], "dataType": "uint8", "blockSize": [5, 5],
              "transform": {"axes": ["y", "x"], "scale": [2.0, 3.0], "translate": [4.0, 9.0], "units": ["nm", "nm"]}}
    level1 = {**level0, "dimensions": [5, 5],
              "transform": {"axes": ["y", "x"], "scale": [4.0, 6.0], "translate": [5.0, 10.5], "units": ["nm", "nm"]}}
    group = {"multiscales": [{"datasets": [{"path": "s0"}, {"path": "s1"}]}], "tag": "group"}
    out = present_n5([{"tag": "root", "units": ["um", "um"]}, group], [("s0", level0), ("s1", level1)])
    assert out.offset == [9.0 / 3.0 - 0.5, 4.0 / 2.0 - 0.5]  # x, y: corner of voxel 0 in base voxels
    assert out.attributes["tag"] == "group" and out.attributes["units"] == ["nm", "nm"]
    assert out.attributes["downsamplingFactors"] == [[1, 1], [2, 2]]
    # A COSEM array on its own (no multiscale group above it) gets its voxel size too.
    alone = present_n5([{"n5": "2.0.0"}, level1])
    assert alone.attributes["resolution"] == [6.0, 4.0] and alone.attributes["axes"] == ["x", "y"]
    assert alone.offset == [10.5 / 6.0 - 0.5, 5.0 / 4.0 - 0.5]


# -- zarr / OME ----------------------------------------------------------------------------
def test_old_ome_served_as_04(start_server, tree):
    root, src = tree
    srv = start_server("serve", str(root))
    for name, version, rank in (("v01", "0.1", 5), ("v02", "0.2", 5), ("v03", "0.3", 3)):
        base = f"{srv.url}/-/zarr/data/{name}.zarr"
        ms = get_json(base + "/.zattrs")["multiscales"][0]
        assert ms["version"] == "0.4"
        names = ["t", "c", "z", "y", "x"][-rank:]
        assert [a["name"] for a in ms["axes"]] == names
        assert [a["type"] for a in ms["axes"]] == [{"t": "time", "c": "channel"}.get(n, "space") for n in names]
        assert all("unit" not in a for a in ms["axes"])  # 0.1-0.3 state none
        assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0] * rank}]
        for d, data in zip(ms["datasets"], src["ome0" + version[-1]].values()):
            np.testing.assert_array_equal(read("zarr", f"{base}/{d['path']}/"), data)
        if version == "0.2":  # nested chunks: the repaired .zarray says so (the raw one does not)
            assert get_json(base + "/0/.zarray")["dimension_separator"] == "/"
            assert "dimension_separator" not in get_json(f"{srv.url}/data/{name}.zarr/0/.zarray")
    ms = get_json(f"{srv.url}/-/zarr/data/v03.zarr/.zattrs")["multiscales"][0]
    # Shapes 10/5/3 in z: factors 2 and 3 (3 = ceil(10/4) is explained by 4, not 3.33).
    assert [d["coordinateTransformations"] for d in ms["datasets"][1:]] == [
        [{"type": "scale", "scale": [2.0, 2.0, 2.0]}, {"type": "translation", "translation": [0.5, 0.5, 0.5]}],
        [{"type": "scale", "scale": [4.0, 4.0, 4.0]}, {"type": "translation", "translation": [1.5, 1.5, 1.5]}],
    ]
    v01 = get_json(f"{srv.url}/-/zarr/data/v01.zarr/.zattrs")["multiscales"][0]["datasets"][1]
    assert v01["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 2.0, 2.0, 2.0]  # t, c never downsampled


def test_ome06_served_as_05(start_server, tree):
    root, src = tree
    srv = start_server("serve", str(root))
    base = f"{srv.url}/-/zarr/data/v06.zarr"
    meta = get_json(base + "/zarr.json")
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    # omero where the bundled client reads it, with the colour it requires (white, its default).
    assert meta["attributes"]["omero"]["channels"] == [{**ome["omero"]["channels"][0], "color": "FFFFFF"}]
    ms = ome["multiscales"][0]
    assert "coordinateSystems" not in ms
    assert ms["axes"] == [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    assert ms["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": OME06_S}, {"type": "translation", "translation": OME06_T}]
    assert ms["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [2.0, 1.0, 1.0]}, {"type": "translation", "translation": [1.0, 3.25, 5.25]}]
    for name, data in src["ome06"].items():
        np.testing.assert_array_equal(read("zarr3", f"{base}/{name}/"), data)


def test_ome06_affine_is_left_out_and_returned():
    """A rotation cannot be said in 0.5: it is returned apart; a scale+translation maps in."""
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    ms = {"coordinateSystems": [{"name": "world", "axes": axes}, {"name": "intrinsic", "axes": axes}],
          "datasets": [{"path": "0", "coordinateTransformations": [
              {"type": "scale", "scale": [0.5, 0.5], "input": {"path": "0"}, "output": {"name": "intrinsic"}}]}],
          "coordinateTransformations": [{"type": "rotation", "rotation": [[0, -1], [1, 0]],
                                         "input": {"name": "intrinsic"}, "output": {"name": "world"}}]}
    out = present_ome({"ome": {"version": "0.6", "multiscales": [ms]}}, 3)
    new = out.attributes["ome"]["multiscales"][0]
    assert "coordinateTransformations" not in new and new["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [0.5, 0.5]}]
    assert out.affine["matrix"] == [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]] and out.affine["output_system"] == "world"
    assert out.notes
    ms["coordinateTransformations"] = [{"type": "sequence", "input": {"name": "intrinsic"}, "output": {"name": "world"},
                                        "transformations": [{"type": "scale", "scale": [2, 2]},
                                                            {"type": "translation", "translation": [7, 8]}]}]
    out = present_ome({"ome": {"version": "0.6", "multiscales": [ms]}}, 3)
    assert out.affine is None
    assert out.attributes["ome"]["multiscales"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [2.0, 2.0]}, {"type": "translation", "translation": [7.0, 8.0]}]


def test_uint64_null_fill_and_bool(start_server, tree):
    root, src = tree
    srv = start_server("serve", str(root))
    assert get_json(f"{srv.url}/data/labels.zarr/.zarray")["fill_value"] is None  # the source as written
    assert get_json(f"{srv.url}/-/zarr/data/labels.zarr/.zarray")["fill_value"] == 0
    np.testing.assert_array_equal(read("zarr", f"{srv.url}/-/zarr/data/labels.zarr/"), src["u64"])
    meta = get_json(f"{srv.url}/-/zarr/data/mask.zarr/.zarray")
    assert meta["dtype"] == "|u1"
    got = read("zarr", f"{srv.url}/-/zarr/data/mask.zarr/")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, src["bool"].astype(np.uint8))
    assert get_json(f"{srv.url}/-/zarr/data/mask3.zarr/zarr.json")["data_type"] == "uint8"
    np.testing.assert_array_equal(read("zarr3", f"{srv.url}/-/zarr/data/mask3.zarr/"), src["bool"].astype(np.uint8))


# -- HTTP behaviour -------------------------------------------------------------------------
def test_metadata_validators_and_chunks_pass_through(start_server, tree):
    root, _ = tree
    srv = start_server("serve", str(root))
    url = f"{srv.url}/-/n5/data/jrc.n5/em/fibsem-uint8/attributes.json"
    status, headers, body = get(url)
    assert status == 200 and headers["Cache-Control"] == "no-cache" and headers["Content-Type"].startswith("application/json")
    assert get(url, {"If-None-Match": headers["ETag"]})[0] == 304
    # Rewriting an input (a level's attributes) changes the answer's validator.
    s3 = root / "data/jrc.n5/em/fibsem-uint8/s3/attributes.json"
    before = s3.read_text()
    try:
        _edit_json(s3, note="edited")
        status, headers2, _ = get(url, {"If-None-Match": headers["ETag"]})
        assert status == 200 and headers2["ETag"] != headers["ETag"]
    finally:
        s3.write_text(before)
    # A chunk is the raw route's answer: same bytes, validators, Range and HEAD.
    chunk = "data/jrc.n5/em/fibsem-uint8/s1/0/0/0"
    raw = get(f"{srv.url}/{chunk}")
    view = get(f"{srv.url}/-/n5/{chunk}")
    assert view[0] == 200 and view[2] == raw[2] and view[1]["ETag"] == raw[1]["ETag"]
    part = get(f"{srv.url}/-/n5/{chunk}", {"Range": "bytes=2-9"})
    assert part[0] == 206 and part[2] == raw[2][2:10]
    head = urllib.request.urlopen(urllib.request.Request(f"{srv.url}/-/n5/{chunk}", method="HEAD"))
    assert int(head.headers["Content-Length"]) == len(raw[2])
    # Listings work under the view (Neuroglancer's scale discovery), and folders redirect within it.
    status, _, page = get(f"{srv.url}/-/n5/data/n5v.n5/")
    assert status == 200 and b'href="s0/"' in page and b'href="s1/"' in page
    req = urllib.request.Request(f"{srv.url}/-/n5/data/n5v.n5")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,), {"redirect_request": lambda *a: None}))
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(req)
    assert exc.value.code == 301 and exc.value.headers["Location"] == "/-/n5/data/n5v.n5/"
    # A metadata file that is not JSON: one line, 422.
    bad = root / "data/bad.n5"
    bad.mkdir(exist_ok=True)
    (bad / "attributes.json").write_text("{not json")
    status, _, body = get(f"{srv.url}/-/n5/data/bad.n5/attributes.json")
    assert status == 422 and body.decode().count("\n") == 1 and "not valid JSON" in body.decode()
    # ...nor is JSON nested past the parser's recursion limit (it once answered 500).
    deep = root / "data/deep.zarr"
    deep.mkdir(exist_ok=True)
    (deep / ".zarray").write_text("[" * 50000 + "]" * 50000)
    status, _, body = get(f"{srv.url}/-/zarr/data/deep.zarr/.zarray")
    assert status == 422 and "not valid JSON" in body.decode()


SECRET = b"repair-view-secret-0123456789abcdef-01"


def test_protected_mount_through_the_view(start_server, tree, tmp_path):
    from server.tokens import mint

    root, src = tree
    write_config(tmp_path, SECRET, f"""
[[mounts]]
name = "vault"
source = "{root / 'data'}"
access = "token"
""")
    srv = start_server("serve", "--config", str(tmp_path / "ngserve.toml"))
    path = "vault/jrc.n5/em/fibsem-uint8"
    assert get(f"{srv.url}/-/n5/{path}/attributes.json")[0] == 401
    assert get(f"{srv.url}/-/n5/{path}/s0/0/0/0")[0] == 401
    token = mint(SECRET, "vault", "jrc.n5/em/fibsem-uint8")
    base = f"{srv.url}/-/t/{token}/-/n5/{path}"
    assert get_json(base + "/attributes.json")["resolution"] == [4.0, 4.0, 5.0]
    np.testing.assert_array_equal(read("n5", base + "/s2/"), src["cosem"]["s2"])
    # The token's scope ends at the group: ancestors above it are not merged in (nor readable).
    assert get(f"{srv.url}/-/t/{token}/-/n5/vault/jrc.n5/attributes.json")[0] == 403
    other = mint(SECRET, "vault", "n5v.n5")
    assert get(f"{srv.url}/-/t/{other}/-/n5/{path}/attributes.json")[0] == 403


def test_views_over_a_webdav_mount(start_server, tree, tmp_path):
    """Remote mounts: metadata read upstream, chunks passed through, listings for scale discovery."""
    from webdav_server import WebDAVServer

    root, src = tree
    dav = WebDAVServer(root / "data")
    try:
        (tmp_path / "ngserve.toml").write_text(f"""
[server]
port = 0
[[mounts]]
name = "lab"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_file = "dav.pw"
""")
        (tmp_path / "dav.pw").write_text(dav.password + "\n")
        srv = start_server("serve", "--config", str(tmp_path / "ngserve.toml"))
        base = f"{srv.url}/-/n5/lab/n5v.n5"
        assert get_json(base + "/attributes.json")["downsamplingFactors"] == [[1, 1, 1], [2, 2, 1]]  # via PROPFIND
        np.testing.assert_array_equal(read("n5", base + "/s1/"), src["n5v"]["s1"])
        ms = get_json(f"{srv.url}/-/zarr/lab/v03.zarr/.zattrs")["multiscales"][0]
        assert ms["version"] == "0.4"
        np.testing.assert_array_equal(read("zarr", f"{srv.url}/-/zarr/lab/v03.zarr/1/"), src["ome03"]["1"])
    finally:
        dav.kill()


# -- properties of the pure presenters ---------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def cosem_pyramids(draw):
    rank = draw(st.integers(2, 4))
    scale0 = draw(st.lists(st.sampled_from([0.5, 1.0, 4.0, 5.0, 8.0, 40.0]), min_size=rank, max_size=rank))
    trans0 = draw(st.lists(st.integers(-50, 50).map(float), min_size=rank, max_size=rank))
    n = draw(st.integers(1, 4))
    steps = [draw(st.lists(st.sampled_from([1, 2]), min_size=rank, max_size=rank)) for _ in range(n - 1)]
    factors = [[1] * rank]
    for step in steps:
        factors.append([f * s for f, s in zip(factors[-1], step)])
    shape0 = draw(st.lists(st.integers(16, 300), min_size=rank, max_size=rank))
    levels = []
    for f in factors:  # COSEM transforms are C order (last axis x); N5 dimensions are x first
        levels.append((f"s{len(levels)}", {
            "dimensions": [-(-s // k) for s, k in zip(shape0, f[::-1])], "dataType": "uint8", "blockSize": [8] * rank,
            "transform": {"axes": [f"a{i}" for i in range(rank)], "scale": [s * k for s, k in zip(scale0, f)],
                          "translate": [t + (k - 1) / 2 * s for t, s, k in zip(trans0, scale0, f)],
                          "units": ["nm"] * rank}}))
    return scale0, trans0, factors, levels


@settings(max_examples=60, deadline=None)
@given(cosem_pyramids())
def test_cosem_presenter_properties(pyramid):
    scale0, trans0, factors, levels = pyramid
    group = {"n5": "2.0.0", "multiscales": [{"datasets": [{"path": p} for p, _ in levels]}]}
    out = present_n5([{"n5": "2.0.0"}, group], levels)
    attrs = out.attributes
    assert attrs["resolution"] == scale0[::-1] and attrs["units"] == ["nm"] * len(scale0)
    assert attrs["downsamplingFactors"] == [[float(k) for k in f[::-1]] for f in factors]
    assert out.offset == pytest.approx([t / s - 0.5 for t, s in zip(trans0[::-1], scale0[::-1])])
    for i, (name, level) in enumerate(levels):
        mine = present_n5([{"n5": "2.0.0"}, group, level], levels, name).attributes
        assert mine["downsamplingFactors"] == attrs["downsamplingFactors"][i] and mine["resolution"] == attrs["resolution"]
    # Presenting the presented group again changes nothing: the repair is a fixed point.
    assert present_n5([{"n5": "2.0.0"}, attrs], levels).attributes == attrs


@st.composite
def old_ome(draw):
    version = draw(st.sampled_from(["0.1", "0.2", "0.3"]))
    if version == "0.3":
        names = draw(st.sampled_from([["y", "x"], ["z", "y", "x"], ["c", "y", "x"], ["t", "z", "y", "x"],
                                      ["c", "z", "y", "x"], ["t", "c", "z", "y", "x"]]))
    else:
        names = ["t", "c", "z", "y", "x"]
    base = draw(st.lists(st.integers(1, 500), min_size=len(names), max_size=len(names)))
    shapes = {"0": base}
    for i in range(1, draw(st.integers(1, 4))):
        shapes[str(i)] = [s if n in "tc" else max(1, -(-s // 2**i)) for s, n in zip(base, names)]
    ms = {"version": version, "datasets": [{"path": p} for p in shapes], "name": "img"}
    if version == "0.3":
        ms["axes"] = names
    return names, shapes, {"multiscales": [ms]}


@settings(max_examples=80, deadline=None)
@given(old_ome())
def test_old_ome_presenter_properties(case):
    names, shapes, attrs = case
    out = present_ome(attrs, 2, shapes)
    ms = out.attributes["multiscales"][0]
    assert ms["version"] == "0.4" and ms["name"] == "img" and [a["name"] for a in ms["axes"]] == names
    assert out.notes  # it says that the sizes are not the source's
    for d in ms["datasets"]:
        scale = d["coordinateTransformations"][0]["scale"]
        trans = d["coordinateTransformations"][1]["translation"] if len(d["coordinateTransformations"]) > 1 else [0] * len(names)
        for n, b, s, f, t in zip(names, shapes["0"], shapes[d["path"]], scale, trans):
            assert f == 1 if n in "tc" else (b // f == s or -(-b // f) == s or f == b / s)  # the factor explains the shape
            assert t == (f - 1) / 2  # corners on the finest level's
    # A 0.4 answer passes through unchanged: presenting twice is presenting once.
    assert present_ome(out.attributes, 2, shapes).attributes == out.attributes
