"""``/-/precomputed/<path>/``: every source kind read back with real clients, exactly.

Sources are written with tensorstore; a real ``ngserve serve`` presents them;
tensorstore's ``neuroglancer_precomputed`` driver and cloud-volume read every
scale over HTTP, and each is compared with the source (virtual scales with
``ts.downsample`` of the source, computed here).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from conftest import ServerProcess
from server import MountConfig, ServerConfig, create_app
from server.tokens import mint
from volumes import write_ome_zarr
from webdav_server import WebDAVServer
from http_get import get

SECRET = "precomputed-view-secret-0123456789"


def _blobs(shape, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    image = np.exp(-sum((g - rng.uniform(-0.5, 0.5)) ** 2 for g in grids) * 4) + rng.normal(0, 0.05, shape)
    return np.clip(image * 60000, 0, 60000).astype(dtype)


def _write(path: Path, driver: str, data: np.ndarray, chunks: list[int], **extra) -> None:
    if driver == "zarr":
        meta = {"shape": list(data.shape), "chunks": chunks, "dtype": data.dtype.str, **extra}
    elif driver == "zarr3":
        meta = {"shape": list(data.shape), "data_type": str(data.dtype),
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}}, **extra}
    else:
        meta = {"dimensions": list(data.shape), "blockSize": chunks, "dataType": str(data.dtype),
                "compression": {"type": "gzip"}}
    ts.open({"driver": driver, "kvstore": {"driver": "file", "path": str(path) + "/"}, "metadata": meta},
            create=True, delete_existing=True).result().write(data).result()


# name -> (level-0 array as x, y, z, c, what the info must say)
def make_sources(root: Path) -> dict[str, dict]:
    out = {}
    # OME-Zarr 0.4 (zarr v2) uint16, one level: anisotropic, offset by (3, 6, 10) voxels, odd shape.
    img = _blobs((23, 150, 133), np.uint16, 1)
    write_ome_zarr(root / "aniso.ome.zarr", img, voxel_size=(40, 4, 4), unit="nanometer", levels=1,
                   chunks=(16, 32, 32), translation=(10.5 * 40, 6.5 * 4, 3.5 * 4))
    out["aniso.ome.zarr"] = {"xyzc": img.transpose(2, 1, 0)[..., None], "resolution": [4, 4, 40],
                             "voxel_offset": [3, 6, 10], "type": "image", "levels": 1}
    # OME-Zarr multiscale (3 levels), zarr v3 / 0.5.
    ms = _blobs((40, 300, 280), np.uint8, 2)
    write_ome_zarr(root / "multi.ome.zarr", ms, voxel_size=(1, 1, 1), unit="micrometer", levels=3,
                   chunks=(32, 32, 32), zarr_version=3)
    out["multi.ome.zarr"] = {"xyzc": ms.transpose(2, 1, 0)[..., None], "resolution": [1000, 1000, 1000],
                             "type": "image", "levels": 3}
    # zarr v3 with a channel axis.
    ch = _blobs((3, 20, 70, 66), np.uint16, 3)
    _write(root / "chan.zarr3", "zarr3", ch, [1, 16, 32, 32], dimension_names=["c", "z", "y", "x"])
    out["chan.zarr3"] = {"xyzc": ch.transpose(3, 2, 1, 0), "type": "image", "levels": 1}
    # N5 float32 (dimensions x, y, z as tensorstore lists them).
    n5 = _blobs((70, 33, 47), np.float32, 4) / 60000
    _write(root / "vol.n5", "n5", n5, [32, 16, 16])
    out["vol.n5"] = {"xyzc": n5[..., None], "type": "image", "levels": 1}
    # uint64 labels: compressed_segmentation, mode downsampling.
    labels = (_blobs((30, 100, 90), np.uint16, 5) // 4000).astype(np.uint64) * (1 << 40)
    _write(root / "labels.zarr", "zarr", labels, [16, 32, 32], fill_value=0)
    out["labels.zarr"] = {"xyzc": labels.transpose(2, 1, 0)[..., None], "type": "segmentation",
                          "encoding": "compressed_segmentation", "levels": 1}
    # int64 labels -> uint64 bit for bit (a negative label included).
    i64 = (_blobs((12, 70, 40), np.uint16, 8) // 9000).astype(np.int64) - 1
    _write(root / "i64.zarr", "zarr", i64, [12, 32, 32], fill_value=0)
    out["i64.zarr"] = {"xyzc": i64.transpose(2, 1, 0)[..., None].view(np.uint64), "type": "segmentation",
                       "data_type": "uint64", "encoding": "compressed_segmentation", "levels": 1}
    # float64 -> float32, bool -> uint8.
    f64 = _blobs((20, 80, 70), np.float64, 6) / 7
    _write(root / "f64.zarr", "zarr", f64, [20, 40, 35])
    out["f64.zarr"] = {"xyzc": f64.transpose(2, 1, 0)[..., None].astype(np.float32), "type": "image",
                       "data_type": "float32", "levels": 1}
    mask = _blobs((16, 70, 75), np.uint16, 7) > 30000
    _write(root / "mask.zarr", "zarr", mask, [16, 32, 32])
    out["mask.zarr"] = {"xyzc": mask.transpose(2, 1, 0)[..., None].astype(np.uint8), "type": "image",
                        "data_type": "uint8", "levels": 1}
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("pviews")
    sources = make_sources(root)
    srv = ServerProcess(["serve", str(root), "--port", "0"])
    yield srv, root, sources
    srv.stop()




def read_scale(base: str, index: int) -> tuple[np.ndarray, object]:
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": base, "scale_index": index},
                    read=True, context=ts.Context()).result()
    return store.read().result(), store.domain


def expected_levels(name: str, src: dict, root: Path, info: dict) -> list[np.ndarray]:
    """Each scale as it must read: the source's real levels, then a pyramid of virtual scales,
    each ts.downsample of the one before it (by its factor, 2 or 1 per axis), as pyramid writers make them."""
    levels = [src["xyzc"]]
    if src["levels"] > 1:  # the OME writer's own levels, read back with tensorstore
        for i in range(1, src["levels"]):
            arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / name / str(i)) + "/"}},
                          read=True).result().read().result()
            levels.append(arr.transpose(2, 1, 0)[..., None])
    scales = info["scales"]
    method = "mode" if info["type"] == "segmentation" else "mean"
    for prev, scale in zip(scales[src["levels"] - 1:], scales[src["levels"]:]):
        step = [round(r / p) for r, p in zip(scale["resolution"], prev["resolution"])]
        assert set(step) <= {1, 2}, step
        # C order, as the view lays out a finer region: a float mean sums in memory order.
        finer = ts.array(np.ascontiguousarray(levels[-1]))[ts.d[:].translate_to[[*prev["voxel_offset"], 0]]]
        levels.append(ts.downsample(finer, [*step, 1], method=method).read().result())
    return levels


@pytest.mark.parametrize("name", ["aniso.ome.zarr", "multi.ome.zarr", "chan.zarr3", "vol.n5", "labels.zarr",
                                  "i64.zarr", "f64.zarr", "mask.zarr"])
def test_tensorstore_reads_every_scale_equal_to_source(served, name):
    srv, root, sources = served
    src = sources[name]
    base = f"{srv.url}/-/precomputed/{name}/"
    status, headers, body = get(base + "info")
    assert status == 200 and headers["Content-Type"].startswith("application/json"), body
    info = json.loads(body)
    assert info["type"] == src["type"]
    assert info["data_type"] == src.get("data_type", str(src["xyzc"].dtype))
    assert info["num_channels"] == src["xyzc"].shape[3]
    assert {s["encoding"] for s in info["scales"]} == {src.get("encoding", "raw")}
    if "resolution" in src:
        assert info["scales"][0]["resolution"] == src["resolution"]
    assert info["scales"][0]["voxel_offset"] == src.get("voxel_offset", [0, 0, 0])
    # A virtual pyramid down to one chunk: the coarsest scale fits in a chunk along every axis.
    coarsest = info["scales"][-1]
    assert all(n <= c for n, c in zip(coarsest["size"], coarsest["chunk_sizes"][0]))
    assert len(info["scales"]) > src["levels"], "no virtual scale was added"
    expected = expected_levels(name, src, root, info)
    assert len(expected) == len(info["scales"])
    for index, want in enumerate(expected):
        got, domain = read_scale(base, index)
        assert list(domain.inclusive_min[:3]) == info["scales"][index]["voxel_offset"]
        assert got.dtype == want.dtype and got.shape == want.shape, (index, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"scale {index}")  # exact, float means too


def test_anisotropic_pyramid_halves_fine_axes_first(served):
    srv, _, _ = served
    info = json.loads(get(f"{srv.url}/-/precomputed/aniso.ome.zarr/info")[2])
    res = [s["resolution"] for s in info["scales"]]
    assert res[:3] == [[4, 4, 40], [8, 8, 40], [16, 16, 40]]  # z (40 nm, 23 voxels) stays until x/y catch up


def test_cloudvolume_reads_translated_view(served):
    from cloudvolume import CloudVolume

    srv, _, sources = served
    for name in ("aniso.ome.zarr", "labels.zarr"):
        cv = CloudVolume(f"precomputed://{srv.url}/-/precomputed/{name}", mip=0, progress=False, cache=False,
                         fill_missing=False, use_https=False)
        np.testing.assert_array_equal(np.asarray(cv[:, :, :]), sources[name]["xyzc"])


def test_answers_behave_like_files(served):
    srv, _, _ = served
    url = f"{srv.url}/-/precomputed/aniso.ome.zarr/s0/3-35_6-38_10-26"
    status, headers, body = get(url)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert len(body) == 32 * 32 * 16 * 2
    etag = headers["ETag"]
    assert get(url, {"If-None-Match": etag})[0] == 304
    status, h, part = get(url, {"Range": "bytes=10-19"})
    assert status == 206 and part == body[10:20] and h["Content-Range"] == f"bytes 10-19/{len(body)}"
    status, h, empty = get(url, method="HEAD")
    assert status == 200 and empty == b"" and int(h["Content-Length"]) == len(body) and h["ETag"] == etag


def test_chunks_are_gzipped_for_clients_that_take_it(served):
    """A client that accepts gzip gets the chunk gzipped (its own ETag, Vary), HEAD and 304 agree
    with it; a Range request and a client without gzip get the plain bytes.  tensorstore and
    cloud-volume ask for gzip, are sent it (the log shows fewer bytes than the chunks hold), and
    read every voxel right."""
    import gzip

    srv, root, _ = served
    smooth = np.add.outer(np.arange(40), np.add.outer(np.arange(96), np.arange(80))).astype(np.uint8) // 4
    _write(root / "smooth.zarr", "zarr", smooth, [40, 48, 40])
    url = f"{srv.url}/-/precomputed/smooth.zarr/s0/0-40_0-48_0-40"
    plain = smooth[:, :48, :40].transpose(2, 1, 0).tobytes(order="F")
    status, h, body = get(url)
    assert status == 200 and body == plain and "Content-Encoding" not in h and h["Vary"] == "Accept-Encoding"
    status, hz, packed = get(url, {"Accept-Encoding": "gzip"})
    assert status == 200 and hz["Content-Encoding"] == "gzip" and hz["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) // 4
    assert hz["ETag"] != h["ETag"] and int(hz["Content-Length"]) == len(packed)
    assert get(url, {"Accept-Encoding": "gzip", "If-None-Match": hz["ETag"]})[0] == 304
    assert get(url, {"If-None-Match": hz["ETag"]})[0] == 200  # the plain answer is another representation
    status, hh, empty = get(url, {"Accept-Encoding": "gzip"}, method="HEAD")
    assert status == 200 and empty == b"" and hh["Content-Length"] == hz["Content-Length"] and hh["ETag"] == hz["ETag"]
    status, hr, part = get(url, {"Accept-Encoding": "gzip", "Range": "bytes=100-199"})
    assert status == 206 and part == plain[100:200] and "Content-Encoding" not in hr
    assert get(url, {"Accept-Encoding": "gzip;q=0"})[2] == plain
    # Real clients: gzip on the wire, right voxels.
    pattern = r'"GET /-/precomputed/smooth\.zarr/s[01]/'
    before = len(srv.requested(pattern))
    got, _ = read_scale(f"{srv.url}/-/precomputed/smooth.zarr/", 0)
    np.testing.assert_array_equal(got[..., 0], smooth.transpose(2, 1, 0))
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"precomputed://{srv.url}/-/precomputed/smooth.zarr", mip=1, progress=False, cache=False,
                     fill_missing=False)
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0], read_scale(f"{srv.url}/-/precomputed/smooth.zarr/", 1)[0][..., 0])
    lines = srv.requested(pattern)[before:]
    assert len(lines) >= 5, lines  # every s0 chunk, and s1 for each client
    for line in lines:
        size = int(line.split('"')[2].split()[1])
        assert 0 < size < len(plain) // 4, line


def test_jpeg_form_of_uint8_images_on_request(served):
    """``<dataset>/-jpeg/`` is the same volume jpeg-encoded: its info says jpeg, tensorstore reads
    every scale close to the raw form (coarser scales built from raw chunks, not from jpeg), in far
    fewer bytes; other types answer one line."""
    srv, root, _ = served
    smooth = np.add.outer(np.arange(40), np.add.outer(np.arange(160), np.arange(150))).astype(np.uint8)
    _write(root / "jpg.zarr", "zarr", smooth, [40, 80, 75])
    raw_base, jpeg_base = f"{srv.url}/-/precomputed/jpg.zarr/", f"{srv.url}/-/precomputed/jpg.zarr/-jpeg/"
    info = json.loads(get(jpeg_base + "info")[2])
    assert {s["encoding"] for s in info["scales"]} == {"jpeg"} and len(info["scales"]) > 1
    for index in range(len(info["scales"])):
        want = read_scale(raw_base, index)[0].astype(int)
        got = read_scale(jpeg_base, index)[0].astype(int)
        assert got.shape == want.shape and np.abs(got - want).mean() < 2, index
    name = _names(info, 0)[0]
    status, headers, body = get(jpeg_base + "s0/" + name)
    assert status == 200 and body[:2] == b"\xff\xd8" and len(body) < 80 * 75 * 40 // 10
    assert headers["ETag"] != get(raw_base + "s0/" + name)[1]["ETag"]
    status, _, body = get(f"{srv.url}/-/precomputed/aniso.ome.zarr/-jpeg/info")  # uint16
    assert status == 422 and body.decode().count("\n") == 1 and "uint16" in body.decode(), body


def test_bad_names_and_sources_answer_one_line(served):
    srv, root, _ = served
    base = f"{srv.url}/-/precomputed/aniso.ome.zarr"
    assert get(base + "/s0/not-a_chunk_name")[0] == 404  # not a chunk name: not a key at all
    status, _, body = get(base + "/s0/1-2_3-4_5-6-7")
    assert status == 404
    status, _, body = get(base + "/s0/0-32_0-32_0-16")  # off the grid (it starts at the offset)
    assert status == 404 and body.count(b"\n") == 1 and b"not a chunk of scale" in body
    assert get(base + "/s9/3-35_6-38_10-26")[0] == 404
    assert get(f"{srv.url}/-/precomputed/nothing.zarr/info")[0] == 404
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "cplx.zarr") + "/"},
             "metadata": {"shape": [4, 4], "chunks": [4, 4], "dtype": "<c8"}}, create=True).result()
    status, _, body = get(f"{srv.url}/-/precomputed/cplx.zarr/info")
    assert status == 422 and body.count(b"\n") == 1 and b"complex64" in body, body
    # A corrupt source chunk: a short reason and a log line, never a traceback or a hang.
    bad = root / "broken.zarr"
    _write(bad, "zarr", np.ones((8, 8, 8), np.uint16), [8, 8, 8])
    (bad / "0.0.0").write_bytes(b"this is not blosc")
    status, _, body = get(f"{srv.url}/-/precomputed/broken.zarr/s0/0-8_0-8_0-8")
    assert status == 502 and body.count(b"\n") == 1 and b"cannot compute chunk" in body, body
    assert b"Traceback" not in body and b"127.0.0.1" not in body


def test_listing_names_info_and_scales(served):
    srv, _, _ = served
    status, headers, body = get(f"{srv.url}/-/precomputed/labels.zarr/", {"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="info"' in body and b'href="s0/"' in body and b'href="s1/"' in body
    status, headers, _ = get(f"{srv.url}/-/precomputed/vol.n5/s0/", {"Accept": "text/html"})
    assert status == 200  # vol.n5's scale s0: its chunks
    status, _, body = get(f"{srv.url}/-/precomputed/labels.zarr/s1/", {"Accept": "text/html"})
    assert status == 200 and b"0-45_0-50_0-30" in body


def test_rewriting_a_source_chunk_invalidates_translated_chunks(served):
    srv, root, _ = served
    path = root / "edit.zarr"
    data = np.arange(40 * 50 * 70, dtype=np.uint16).reshape(40, 50, 70)
    _write(path, "zarr", data, [20, 25, 35])
    base = f"{srv.url}/-/precomputed/edit.zarr/"
    first = [read_scale(base, i)[0] for i in range(2)]
    np.testing.assert_array_equal(first[0][..., 0], data.transpose(2, 1, 0))
    data[0:20, 0:25, 0:35] = 7  # exactly one source chunk, rewritten in place by tensorstore
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"}}).result()[0:20, 0:25, 0:35].write(
        data[0:20, 0:25, 0:35]).result()
    again = [read_scale(base, i)[0] for i in range(2)]
    np.testing.assert_array_equal(again[0][..., 0], data.transpose(2, 1, 0))
    want = ts.downsample(ts.array(data.transpose(2, 1, 0)[..., None]), [2, 1, 1, 1], method="mean").read().result()
    np.testing.assert_array_equal(again[1], want)  # the virtual scale too
    assert not np.array_equal(first[1], again[1])


def _names(info: dict, index: int) -> list[str]:
    """Every chunk name of scale ``index``, x fastest."""
    scale = info["scales"][index]
    (cx, cy, cz), (ox, oy, oz), (nx, ny, nz) = scale["chunk_sizes"][0], scale["voxel_offset"], scale["size"]
    return [f"{x}-{min(x + cx, ox + nx)}_{y}-{min(y + cy, oy + ny)}_{z}-{min(z + cz, oz + nz)}"
            for z in range(oz, oz + nz, cz) for y in range(oy, oy + ny, cy) for x in range(ox, ox + nx, cx)]


def test_zoomed_out_view_reads_each_source_chunk_once(served):
    """The coarsest chunk of a single-level volume is built through the pyramid: each source chunk
    is read (over loopback) once; the finer virtual chunks it was built from, and the coarsest
    chunk again, then read nothing (they come from the cache)."""
    srv, root, _ = served
    data = _blobs((64, 256, 256), np.uint8, 13)
    _write(root / "pyr.zarr", "zarr", data, [32, 32, 32])
    base = f"{srv.url}/-/precomputed/pyr.zarr/"
    info = json.loads(get(base + "info")[2])
    assert [s["size"] for s in info["scales"]] == [[256, 256, 64], [128, 128, 64], [64, 64, 64]]

    def source_reads() -> list[str]:
        srv.settle()
        return [line.split('"')[1].split()[1] for line in srv.requested(r'"GET /pyr\.zarr/\d+\.\d+\.\d+ ')]

    coarsest = _names(info, 2)
    assert len(coarsest) == 1 and get(base + "s2/" + coarsest[0])[0] == 200
    reads = source_reads()
    assert len(reads) == len(set(reads)) == 2 * 8 * 8, reads  # every source chunk, once
    for path in [f"s1/{n}" for n in _names(info, 1)] + [f"s2/{coarsest[0]}"]:  # zoom in one step, then out
        assert get(base + path)[0] == 200
    assert source_reads() == reads
    # And the chunks so built are the pyramid: each scale the downsampling of the one before.
    want = ts.array(np.ascontiguousarray(data.transpose(2, 1, 0)[..., None]))
    for index in (1, 2):
        want = ts.array(ts.downsample(want, [2, 2, 1, 1], method="mean").read().result())
        np.testing.assert_array_equal(read_scale(base, index)[0], want.read().result())


def test_file_sources_translate_and_a_rewritten_file_invalidates(served):
    """TIFF and MRC files (read by volumes' file readers) through the view, equal to the file; a
    rewritten file changes the cache key of the chunks read from it."""
    import mrcfile
    import tifffile

    srv, root, _ = served
    data = (np.arange(20 * 30 * 40) % 65000).astype(np.uint16).reshape(20, 30, 40)
    tifffile.imwrite(root / "stack.tif", data)
    with mrcfile.new(root / "map.mrc") as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = 2.5
    for name, dtype in (("stack.tif", np.uint16), ("map.mrc", np.float32)):
        got = read_scale(f"{srv.url}/-/precomputed/{name}/", 0)[0]
        np.testing.assert_array_equal(got[..., 0], data.transpose(2, 1, 0).astype(dtype), err_msg=name)
    info = json.loads(get(f"{srv.url}/-/precomputed/map.mrc/info")[2])
    assert info["scales"][0]["resolution"] == [0.25, 0.25, 0.25]  # 2.5 A in nm
    tifffile.imwrite(root / "stack.tif.tmp", data + 1, photometric="minisblack")
    os.replace(root / "stack.tif.tmp", root / "stack.tif")
    got = read_scale(f"{srv.url}/-/precomputed/stack.tif/", 0)[0]
    np.testing.assert_array_equal(got[..., 0], (data + 1).transpose(2, 1, 0))


def test_datasets_inside_an_hdf5_file_are_addressed_by_path(served):
    """``/-/precomputed/<file.h5>/<group>/<dataset>/`` is that dataset (the path after the file is
    the path inside it): each of a file's datasets reads back exactly with tensorstore, and
    ``/-/open/<file.h5>/<group>/<dataset>`` shows it; a missing one answers one line, and rewriting
    the file shows the new data."""
    import urllib.error

    import h5py

    srv, root, _ = served
    raw = _blobs((20, 40, 30), np.uint8, 19)
    seg = (_blobs((10, 24, 18), np.uint16, 20) // 9000).astype(np.uint32)
    with h5py.File(root / "multi.h5", "w") as f:
        f.create_dataset("em/raw", data=raw, chunks=(10, 20, 15))
        f.create_dataset("labels/seg", data=seg)
    for inner, data in (("em/raw", raw), ("labels/seg", seg)):
        got = read_scale(f"{srv.url}/-/precomputed/multi.h5/{inner}/", 0)[0]
        np.testing.assert_array_equal(got[..., 0], data.transpose(2, 1, 0), err_msg=inner)
    # /-/open (and so ngserve link) names each dataset of the file the same way.
    import urllib.parse
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    for inner in ("em/raw", "labels/seg"):
        try:
            urllib.request.build_opener(NoRedirect).open(f"{srv.url}/-/open/multi.h5/{inner}", timeout=60)
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 302, e.read()
            location = urllib.parse.unquote(e.headers["Location"])
        assert f"precomputed://{srv.url}/-/precomputed/multi.h5/{inner}" in location, location
    # The file itself (the listing's "open in viewer") offers a link to each of its datasets.
    status, headers, page = get(f"{srv.url}/-/open/multi.h5")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'href="/-/open/multi.h5/em/raw"' in page.decode() and 'href="/-/open/multi.h5/labels/seg"' in page.decode()
    status, _, body = get(f"{srv.url}/-/precomputed/multi.h5/em/nothing/info")
    assert status in (404, 422) and body.decode().count("\n") == 1 and "Traceback" not in body.decode(), body
    with h5py.File(root / "multi.h5.tmp", "w") as f:
        f.create_dataset("em/raw", data=raw // 2, chunks=(10, 20, 15))
        f.create_dataset("labels/seg", data=seg)
    os.replace(root / "multi.h5.tmp", root / "multi.h5")
    got = read_scale(f"{srv.url}/-/precomputed/multi.h5/em/raw/", 0)[0]
    np.testing.assert_array_equal(got[..., 0], (raw // 2).transpose(2, 1, 0))


# -- protected and remote mounts -----------------------------------------------------------
def test_share_token_and_webdav_mounts(tmp_path):
    root = tmp_path / "data"
    (root / "lab").mkdir(parents=True)
    dav_root = tmp_path / "dav"
    dav_root.mkdir()
    img = _blobs((21, 70, 66), np.uint16, 11)
    for where in (root / "lab", dav_root):
        _write(where / "img.zarr", "zarr", img, [16, 32, 32])
    dav = WebDAVServer(dav_root, password="dav-pw-precomputed")
    conf = tmp_path / "ngserve.toml"
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "dav.pw").write_text("dav-pw-precomputed")
    conf.write_text(f"""
[server]
port = 0
[auth]
secret_file = "secret"
[[mounts]]
name = "lab"
source = "{root / 'lab'}"
access = "token"
[[mounts]]
name = "dav"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_file = "dav.pw"
""")
    srv = ServerProcess(["serve", "--config", str(conf)])
    try:
        want = img.transpose(2, 1, 0)[..., None]
        got, _ = read_scale(f"{srv.url}/-/precomputed/dav/img.zarr/", 0)
        np.testing.assert_array_equal(got, want)
        assert get(f"{srv.url}/-/precomputed/lab/img.zarr/info")[0] == 401
        token = mint(SECRET.encode(), "lab", "img.zarr", 3600)
        base = f"{srv.url}/-/t/{token}/-/precomputed/lab/img.zarr/"
        for index in range(2):
            got, _ = read_scale(base, index)
            if index == 0:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_array_equal(got, ts.downsample(ts.array(want), [2, 2, 1, 1], method="mean").read().result())
        # A token for a key below the dataset does not open the dataset's other levels.
        narrow = mint(SECRET.encode(), "lab", "img.zarr/s1", 3600)
        assert get(f"{srv.url}/-/t/{narrow}/-/precomputed/lab/img.zarr/s1/0-33_0-35_0-21")[0] == 403
    finally:
        srv.stop()
        dav.kill()


# -- in-process: one computation for concurrent identical requests ---------------------------
async def test_concurrent_misses_compute_once(aiohttp_client, tmp_path):
    from server.views_precomputed import VIEWS

    data = _blobs((30, 60, 60), np.uint16, 12)
    _write(tmp_path / "c.zarr", "zarr", data, [30, 60, 60])
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state",
                          cache_dir=tmp_path / "cache", cache_bytes=1 << 24)
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    url = "/-/precomputed/c.zarr/s0/0-60_0-60_0-30"

    async def fetch() -> bytes:
        resp = await client.get(url)
        assert resp.status == 200
        return await resp.read()

    bodies = await asyncio.gather(*[fetch() for _ in range(8)])
    assert len(set(bodies)) == 1 and app[VIEWS].computed == 1
    assert np.array_equal(np.frombuffer(bodies[0], "<u2").reshape(30, 60, 60), data)
    await fetch()
    assert app[VIEWS].computed == 1  # a memory hit
    app[VIEWS].chunks.memory = type(app[VIEWS].chunks.memory)(1 << 20, lambda item: len(item[0]))
    assert await fetch() == bodies[0] and app[VIEWS].computed == 1  # from the disk cache
    assert any(os.scandir(tmp_path / "cache"))


async def test_sharded_precomputed_chunks_are_cached_by_their_shard_files(aiohttp_client, tmp_path):
    """A sharded precomputed source's chunks are keyed by the shard file each is in: a second read
    is a hit, and rewriting one shard recomputes the chunks in it and no other."""
    from server.views_precomputed import VIEWS

    path = tmp_path / "sh.precomputed"
    sharding = {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 0,
                "minishard_bits": 1, "shard_bits": 1, "minishard_index_encoding": "raw", "data_encoding": "raw"}
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(path)},
            "multiscale_metadata": {"type": "image", "data_type": "uint16", "num_channels": 1},
            "scale_metadata": {"size": [64, 32, 16], "chunk_size": [16, 16, 16], "resolution": [4, 4, 40],
                               "encoding": "raw", "voxel_offset": [8, 0, 0], "sharding": sharding}}
    store = ts.open(spec, create=True, delete_existing=True).result()
    data = np.arange(64 * 32 * 16, dtype=np.uint16).reshape(64, 32, 16, 1)
    store.write(data).result()
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    info = json.loads(await (await client.get("/-/precomputed/sh.precomputed/info")).read())
    names = _names(info, 0)
    key = info["scales"][0]["key"]

    async def read_all() -> list[bytes]:
        out = []
        for name in names:
            resp = await client.get(f"/-/precomputed/sh.precomputed/{key}/{name}",
                                    headers={"Accept-Encoding": "identity"})
            assert resp.status == 200
            out.append(await resp.read())
        return out

    first = await read_all()
    assert app[VIEWS].computed == len(names)
    assert await read_all() == first and app[VIEWS].computed == len(names)  # every chunk a hit
    # x chunk 0 (Morton code 0, shard 0) holds 7s now: its shard file is rewritten, the other's is not.
    store[8:24, 0:16, 0:16].write(np.full((16, 16, 16, 1), 7, np.uint16)).result()
    again = await read_all()
    changed = [n for n, a, b in zip(names, first, again) if a != b]
    assert changed == [names[0]]
    assert np.all(np.frombuffer(again[0], "<u2") == 7)
    from volumes.sharding import ShardingSpec, compressed_morton_code

    cells = np.array([[i, j, 0] for j in range(2) for i in range(4)], dtype=np.uint64)  # x fastest, as names
    shard_of = ShardingSpec.from_json(sharding).locate(compressed_morton_code(cells, (4, 2, 1)))[0]
    assert app[VIEWS].computed == len(names) + int(np.sum(shard_of == shard_of[0]))  # shard 0's chunks only


async def test_editing_a_source_chunk_recomputes_only_the_chunks_above_it(aiohttp_client, tmp_path):
    """A virtual chunk is keyed by the finer chunks it is built from: rewriting one source chunk
    recomputes that chunk and the virtual chunks above it, and nothing else."""
    from server.views_precomputed import VIEWS

    data = _blobs((32, 256, 256), np.uint8, 14)
    path = tmp_path / "e.zarr"
    _write(path, "zarr", data, [32, 32, 32])  # 8 x 8 x 1 source chunks
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    views = app[VIEWS]
    info = json.loads(await (await client.get("/-/precomputed/e.zarr/info")).read())
    assert [s["size"] for s in info["scales"]] == [[256, 256, 32], [128, 128, 32], [64, 64, 32]]
    paths = [f"/-/precomputed/e.zarr/s1/{n}" for n in _names(info, 1)] + ["/-/precomputed/e.zarr/s2/0-64_0-64_0-32"]

    async def view() -> dict[str, tuple[str, bytes]]:
        out = {}
        for p in paths:
            resp = await client.get(p)
            assert resp.status == 200, await resp.text()
            out[p] = (resp.headers["ETag"], await resp.read())
        return out

    first = await view()
    assert views.computed == 64 + 4 + 1  # each source chunk, each s1 chunk, the s2 chunk: once
    assert await view() == first and views.computed == 69  # all from the cache
    edited = data.copy()
    edited[:, 32:64, 64:96] = 255  # the source chunk under x 64-96, y 32-64: inside s1's 0-64_0-64_0-32
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"}}).result()
    store[:, 32:64, 64:96].write(edited[:, 32:64, 64:96]).result()
    again = await view()
    assert views.computed == 69 + 3  # that source chunk, the s1 chunk above it, the s2 chunk
    changed = {p for p in paths if again[p] != first[p]}
    assert changed == {paths[0], paths[-1]}
    for p in changed:
        assert again[p][0] != first[p][0]  # a new ETag too
    want = ts.downsample(ts.array(np.ascontiguousarray(edited.transpose(2, 1, 0)[..., None])), [2, 2, 1, 1],
                         method="mean").read().result()
    got = np.frombuffer(again[paths[0]][1], np.uint8).reshape(64, 64, 32, order="F")
    np.testing.assert_array_equal(got, want[:64, :64, :, 0])


async def test_a_zoomed_out_view_larger_than_the_memory_cache_stays_cached(aiohttp_client, tmp_path):
    """Building coarse chunks streams every source chunk through the cache: those inputs go in with
    low priority, so a source four times the memory budget does not push out the coarse chunks the
    view showed, and the same view again computes nothing (it once recomputed the whole pyramid)."""
    from server.views_precomputed import VIEWS

    data = _blobs((32, 256, 256), np.uint8, 16)
    _write(tmp_path / "big.zarr", "zarr", data, [32, 32, 32])  # 64 source chunks of 32 KiB: 2 MiB
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    views = app[VIEWS]
    budget = 1 << 19  # 512 KiB: the 4 + 1 coarse chunks (640 KiB) fit only just, the source 4x over
    views.chunks.memory = type(views.chunks.memory)(budget + (1 << 17) + 1024, lambda item: len(item[0]) + 64)
    info = json.loads(await (await client.get("/-/precomputed/big.zarr/info")).read())
    paths = [f"/-/precomputed/big.zarr/s1/{n}" for n in _names(info, 1)] + ["/-/precomputed/big.zarr/s2/0-64_0-64_0-32"]

    async def view() -> list[bytes]:
        out = []
        for p in paths:
            resp = await client.get(p)
            assert resp.status == 200, await resp.text()
            out.append(await resp.read())
        return out

    first = await view()
    assert views.computed == 64 + 4 + 1
    assert await view() == first and views.computed == 69  # the coarse chunks were all kept
    # A source chunk asked for by a client afterwards is kept like any other (computed at most once).
    s0 = f"/-/precomputed/big.zarr/s0/{_names(info, 0)[0]}"
    assert (await client.get(s0)).status == 200
    once = views.computed
    assert once <= 70 and (await client.get(s0)).status == 200 and views.computed == once


async def test_a_cached_coarse_chunk_does_not_stat_every_source_file_per_request(aiohttp_client, tmp_path, monkeypatch):
    """A coarse chunk over 128 source files, answered from the cache, rechecks their validators at
    most every RECHECK_SECONDS (it statted all of them on every request); an edit shows after that."""
    import server.views_precomputed as vp
    from server.storage import LocalStorage

    checked: list[int] = []
    original = LocalStorage.validators

    async def counting(self, paths):
        checked.append(len(paths))
        return await original(self, paths)

    monkeypatch.setattr(LocalStorage, "validators", counting)
    monkeypatch.setattr(vp, "RECHECK_SECONDS", 0.5)
    data = _blobs((64, 256, 256), np.uint8, 18)
    path = tmp_path / "wide.zarr"
    _write(path, "zarr", data, [32, 32, 32])  # 2 x 8 x 8 source chunks
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    client = await aiohttp_client(create_app(config))
    url = "/-/precomputed/wide.zarr/s2/0-64_0-64_0-64"
    first = await (await client.get(url)).read()
    assert max(checked) == 128
    checked.clear()
    for _ in range(5):
        assert await (await client.get(url)).read() == first
    assert checked == [], checked  # no validator batch: not even the 128 stats once
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"}}).result()
    store[:32, :32, :32].write(np.full((32, 32, 32), 255, np.uint8)).result()
    await asyncio.sleep(0.6)
    assert await (await client.get(url)).read() != first and 128 in checked


async def test_tiff_stack_chunks_are_cached_and_a_rewritten_slice_invalidates_its_chunks(aiohttp_client, tmp_path):
    """A TIFF slice folder's chunks are keyed by the validators of the slices they read: a second
    request computes nothing (they were computed on every request), and rewriting one slice
    recomputes only the chunk that reads it."""
    import tifffile

    from server.views_precomputed import VIEWS

    data = _blobs((70, 50, 40), np.uint16, 17)
    (tmp_path / "slices").mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(tmp_path / "slices" / f"s{z}.tif", plane)
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    views = app[VIEWS]
    low, high = "/-/precomputed/slices/s0/0-40_0-50_0-64", "/-/precomputed/slices/s0/0-40_0-50_64-70"

    async def fetch(path: str) -> np.ndarray:
        resp = await client.get(path)
        assert resp.status == 200, await resp.text()
        return np.frombuffer(await resp.read(), "<u2").reshape(40, 50, -1, order="F")

    np.testing.assert_array_equal(await fetch(low), data[:64].transpose(2, 1, 0))
    np.testing.assert_array_equal(await fetch(high), data[64:].transpose(2, 1, 0))
    assert views.computed == 2
    await fetch(low), await fetch(high)
    assert views.computed == 2  # both from the cache
    tifffile.imwrite(tmp_path / "slices" / ".s65.tmp.tif", data[65] + 7)
    os.replace(tmp_path / "slices" / ".s65.tmp.tif", tmp_path / "slices" / "s65.tif")
    edited = data.copy()
    edited[65] += 7
    np.testing.assert_array_equal(await fetch(high), edited[64:].transpose(2, 1, 0))
    np.testing.assert_array_equal(await fetch(low), data[:64].transpose(2, 1, 0))
    assert views.computed == 3  # the chunk reading slice 65 only


async def test_concurrent_requests_across_scales_share_work_on_a_one_thread_pool(aiohttp_client, tmp_path):
    """Coarse and fine chunks asked for at once, on a pool of one thread: a coarse chunk waits for
    its inputs on the event loop, never on a pool thread, so nothing wedges; every chunk is computed
    once however many requests need it.  A source chunk that cannot be read fails the coarse chunks
    above it with one line naming it."""
    from server.builds import BuildPool
    from server.views_precomputed import VIEWS

    data = _blobs((32, 256, 256), np.uint8, 15)
    _write(tmp_path / "p.zarr", "zarr", data, [32, 32, 32])
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    client = await aiohttp_client(app)
    views = app[VIEWS]
    views.pool.shutdown()
    views.pool = BuildPool(1, 512, 60, name="test-one-thread")
    info = json.loads(await (await client.get("/-/precomputed/p.zarr/info")).read())
    paths = ([f"/-/precomputed/p.zarr/s2/{n}" for n in _names(info, 2)] * 3
             + [f"/-/precomputed/p.zarr/s1/{n}" for n in _names(info, 1)] * 2
             + [f"/-/precomputed/p.zarr/s0/{n}" for n in _names(info, 0)[::7]])

    async def fetch(path: str) -> int:
        resp = await client.get(path)
        await resp.read()
        return resp.status

    statuses = await asyncio.wait_for(asyncio.gather(*map(fetch, paths)), 120)
    assert set(statuses) == {200} and views.computed == 64 + 4 + 1
    _write(tmp_path / "q.zarr", "zarr", data, [32, 32, 32])
    (tmp_path / "q.zarr" / "0.1.2").write_bytes(b"not blosc")
    resp = await client.get("/-/precomputed/q.zarr/s2/0-64_0-64_0-32")
    body = await resp.text()
    assert resp.status == 502 and body.count("\n") == 1, body
    assert "cannot compute chunk /q.zarr/s0/64-96_32-64_0-32" in body and "Traceback" not in body


def test_work_per_request_is_bounded_on_huge_or_finely_chunked_arrays(served):
    """An array in 1-voxel chunks is refused in one line (a 64^3 chunk would read 262,144 files);
    a huge sparse array gets only the virtual scales whose chunks stand on a bounded number of
    source chunks, and its coarsest chunk answers (it once pinned a thread for good)."""
    from volumes.present_precomputed import MAX_FILES_BELOW

    srv, root, _ = served
    for name, shape, chunks in (("tiny_chunks.zarr", [256, 256, 256], [1, 1, 1]),
                                ("sparse.zarr", [20000, 20000, 20000], [64, 64, 64])):
        ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / name)},
                 "metadata": {"shape": shape, "chunks": chunks, "dtype": "|u1", "compressor": None, "fill_value": 0}},
                create=True, delete_existing=True).result()
    status, _, body = get(f"{srv.url}/-/precomputed/tiny_chunks.zarr/info")
    assert status == 422 and body.decode().count("\n") == 1 and "262144" in body.decode()
    info = json.loads(get(f"{srv.url}/-/precomputed/sparse.zarr/info")[2])
    coarsest = info["scales"][-1]
    below = math.prod(-(-c * round(r / b) // 64) for c, r, b in
                      zip(coarsest["chunk_sizes"][0], coarsest["resolution"], info["scales"][0]["resolution"]))
    assert 1 < len(info["scales"]) and below <= MAX_FILES_BELOW
    name = "_".join(f"{o}-{o + c}" for o, c in zip(coarsest["voxel_offset"], coarsest["chunk_sizes"][0]))
    status, _, body = get(f"{srv.url}/-/precomputed/sparse.zarr/{coarsest['key']}/{name}")
    assert status == 200 and body == bytes(len(body))
