"""Real clients read what ``ngserve serve`` serves, and get back exactly what was written.

Each test writes a synthetic volume to ``tmp_path`` with tensorstore (the field's
writer), starts ``ngserve serve`` as a subprocess on a free port, reads the volume
back over HTTP with tensorstore's http kvstore or cloud-volume, and compares the
arrays bit for bit.  The data vary the way real data do: anisotropic voxels,
non-zero offsets, shapes that do not divide into chunks, several dtypes, a channel
axis.  Sharded formats can only be read with HTTP Range, so those tests also check
that the server answered 206.

No mocks: a server bug shows up here as a wrong array or a client error, which is
exactly how it would show up in Neuroglancer (as blank regions).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

# -- synthetic data ------------------------------------------------------------------


def blobs(shape: tuple[int, ...], dtype, seed: int) -> np.ndarray:
    """Gaussian blobs plus noise, scaled to ``dtype``; every voxel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    img = np.zeros(shape, np.float32)
    for _ in range(6):
        centre = [rng.uniform(0, n) for n in shape]
        sigma = [max(n / 5, 1.0) for n in shape]
        img += np.exp(-sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma)))
    img = img / img.max() + rng.normal(0, 0.05, shape).astype(np.float32)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return img.astype(dtype)
    info = np.iinfo(dtype)
    top = min(info.max, 60000)
    return np.clip(img * top, 0, top).astype(dtype)


def labels(shape: tuple[int, ...], dtype, seed: int) -> np.ndarray:
    """Integer labels in blocky regions, with ids that need the full width of ``dtype``."""
    rng = np.random.default_rng(seed)
    coarse = tuple(max(1, n // 7) for n in shape)
    ids = rng.integers(1, 40, size=coarse)
    big = np.kron(ids, np.ones((7,) * len(shape), dtype=np.int64))
    pad = [(0, max(0, n - b)) for n, b in zip(shape, big.shape)]
    big = np.pad(big, pad, mode="edge")[tuple(slice(0, n) for n in shape)]
    out = big.astype(dtype)
    if np.dtype(dtype).itemsize == 8:
        out = out * np.asarray(2**40 + 12345, dtype=dtype)  # ids above 2**32
    out[rng.random(shape) < 0.02] = 0  # background specks
    return out


# -- tensorstore helpers ---------------------------------------------------------------


def ts_write(spec: dict, data: np.ndarray, **create) -> None:
    if spec["driver"] != "neuroglancer_precomputed" and "shape" not in spec.get("metadata", {}):
        create.setdefault("shape", data.shape)
    store = ts.open(spec, create=True, delete_existing=True, dtype=ts.dtype(data.dtype.name), **create).result()
    store[...].write(data).result()


def http_kv(url: str, path: str) -> dict:
    """tensorstore's http kvstore for ``path`` under the server at ``url``."""
    return {"driver": "http", "base_url": url, "path": "/" + path.strip("/") + "/"}


def ts_read(spec: dict) -> np.ndarray:
    # A fresh context per read: no cache shared with the writer or other reads.
    store = ts.open(spec, open=True, read=True, context=ts.Context()).result()
    return store.read().result()


def data_lines(srv, path_regex: str) -> list[str]:
    """Access-log lines for requests whose path matches ``path_regex``."""
    srv.settle()
    return srv.requested(r'"(GET|HEAD) ' + path_regex)


def statuses(lines: list[str]) -> set[int]:
    out = set()
    for line in lines:
        m = re.search(r'HTTP/[\d.]+" (\d{3}) ', line)
        if m:
            out.add(int(m.group(1)))
    return out


def assert_ranged_only(lines: list[str]) -> None:
    """The client read these files by Range only: 206 answers (304 when it revalidated a
    piece it had cached), never a 200 with the whole file."""
    codes = statuses(lines)
    assert lines and 206 in codes and codes <= {206, 304}, "".join(lines)


def assert_exact(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


# -- zarr v2 ---------------------------------------------------------------------------


def test_zarr2_uint16_odd_shape(tmp_path, start_server):
    data = blobs((37, 50, 29), np.uint16, seed=1)
    ts_write(
        {"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "img.zarr")}},
        data,
        chunk_layout=ts.ChunkLayout(chunk_shape=[16, 16, 16]),
    )
    srv = start_server("serve", str(tmp_path))
    got = ts_read({"driver": "zarr", "kvstore": srv.url + "/img.zarr/"})
    assert_exact(got, data)
    # 3*4*2 chunks, every one fetched and found
    chunk_lines = data_lines(srv, r"/img\.zarr/\d+\.\d+\.\d+ ")
    assert len({re.search(r"/img\.zarr/(\S+) ", l).group(1) for l in chunk_lines}) == 24
    assert statuses(chunk_lines) == {200}


def test_zarr2_float32_channels_nested_blosc(tmp_path, start_server):
    """Channel axis first (c, z, y, x), '/' chunk keys, blosc, in a sub-folder of an OME group."""
    data = blobs((3, 21, 33, 40), np.float32, seed=2)
    root = tmp_path / "exp 1" / "sample.ome.zarr"  # a space: the URL must be percent-encoded
    ts_write(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root / "0")},
            "metadata": {
                "dimension_separator": "/",
                "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
                "chunks": [1, 8, 16, 16],
            },
        },
        data,
    )
    (root / ".zgroup").write_text('{"zarr_format": 2}')
    (root / ".zattrs").write_text(
        json.dumps(
            {
                "multiscales": [
                    {
                        "version": "0.4",
                        "axes": [
                            {"name": "c", "type": "channel"},
                            {"name": "z", "type": "space", "unit": "micrometer"},
                            {"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"},
                        ],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [{"type": "scale", "scale": [1, 2.5, 0.4, 0.4]}],
                            }
                        ],
                    }
                ]
            }
        )
    )
    srv = start_server("serve", str(tmp_path))
    got = ts_read({"driver": "zarr", "kvstore": http_kv(srv.url, "exp 1/sample.ome.zarr/0")})
    assert_exact(got, data)
    assert data_lines(srv, r"/exp%201/sample\.ome\.zarr/0/\d+/\d+/\d+/\d+ ")
    # the group metadata a viewer reads first
    with urllib.request.urlopen(srv.url + "/exp%201/sample.ome.zarr/.zattrs") as r:
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert json.loads(r.read())["multiscales"][0]["datasets"][0]["path"] == "0"


def test_zarr2_sparse_chunks_read_as_fill_value(tmp_path, start_server):
    """Missing chunks are 404 and a client fills them; present ones come back exact."""
    data = np.zeros((40, 40), np.uint8)
    data[:10, :10] = blobs((10, 10), np.uint8, seed=3) | 1
    ts_write(
        {"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "sparse")}},
        data,
        chunk_layout=ts.ChunkLayout(chunk_shape=[10, 10]),
        fill_value=0,
    )
    written = sorted(p.name for p in (tmp_path / "sparse").iterdir() if not p.name.startswith("."))
    assert written == ["0.0"]  # tensorstore leaves all-fill chunks unwritten
    srv = start_server("serve", str(tmp_path))
    got = ts_read({"driver": "zarr", "kvstore": srv.url + "/sparse/"})
    assert_exact(got, data)
    assert statuses(data_lines(srv, r"/sparse/\d+\.\d+ ")) == {200, 404}


# -- zarr v3 ---------------------------------------------------------------------------


def zarr3_sharded_spec(path: str, shape, shard, inner, dtype: str, names, index_location: str = "end") -> dict:
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": path},
        "metadata": {
            "shape": list(shape),
            "data_type": dtype,
            "dimension_names": names,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shard)}},
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": list(inner),
                        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
                        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                        "index_location": index_location,
                    },
                }
            ],
        },
    }


def test_zarr3_sharded_uint16_uses_range(tmp_path, start_server):
    data = blobs((70, 45, 33), np.uint16, seed=4)
    ts_write(zarr3_sharded_spec(str(tmp_path / "vol.zarr"), data.shape, (32, 32, 32), (8, 8, 8), "uint16",
                                ["z", "y", "x"]), data)
    srv = start_server("serve", str(tmp_path))
    got = ts_read({"driver": "zarr3", "kvstore": srv.url + "/vol.zarr/"})
    assert_exact(got, data)
    shard_lines = data_lines(srv, r"/vol\.zarr/c/\d+/\d+/\d+ ")
    # tensorstore reads a shard whole (200) when it needs every inner chunk of it, and
    # by Range (206) otherwise: the edge shards here are partly empty, so it used Range.
    codes = statuses(shard_lines)
    assert 206 in codes and codes <= {200, 206, 304}, "".join(shard_lines)


@pytest.mark.parametrize("index_location", ["end", "start"])
def test_zarr3_sharded_partial_read_fetches_ranges_only(tmp_path, start_server, index_location):
    """Reading one inner chunk of a shard fetches only ranges, never the whole shard.

    With the index at the end tensorstore reads it with a suffix range (bytes=-N); at the
    start, with bytes=0-N."""
    data = blobs((64, 64, 8, 2), np.float32, seed=5)  # channel axis last
    ts_write(zarr3_sharded_spec(str(tmp_path / "ch.zarr"), data.shape, (64, 64, 8, 2), (16, 16, 8, 1), "float32",
                                ["y", "x", "z", "c"], index_location), data)
    srv = start_server("serve", str(tmp_path))
    store = ts.open({"driver": "zarr3", "kvstore": srv.url + "/ch.zarr/"}, context=ts.Context()).result()
    part = store[16:32, 48:64, :, 1:2].read().result()
    assert_exact(part, data[16:32, 48:64, :, 1:2])
    shard_lines = data_lines(srv, r"/ch\.zarr/c/0/0/0/0 ")
    assert_ranged_only(shard_lines)
    whole = ts_read({"driver": "zarr3", "kvstore": srv.url + "/ch.zarr/"})
    assert_exact(whole, data)


# -- n5 --------------------------------------------------------------------------------


def test_n5_float32_and_uint64(tmp_path, start_server):
    img = blobs((45, 31, 19), np.float32, seed=6)
    seg = labels((33, 20, 17), np.uint64, seed=7)
    ts_write(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "data.n5" / "raw" / "s0")},
            "metadata": {"blockSize": [16, 16, 8], "compression": {"type": "gzip"},
                         "resolution": [4.0, 4.0, 40.0], "units": ["nm", "nm", "nm"]},
        },
        img,
    )
    ts_write(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "data.n5" / "seg")},
            "metadata": {"blockSize": [8, 8, 8], "compression": {"type": "raw"}},
        },
        seg,
    )
    (tmp_path / "data.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    srv = start_server("serve", str(tmp_path))
    assert_exact(ts_read({"driver": "n5", "kvstore": http_kv(srv.url, "data.n5/raw/s0")}), img)
    assert_exact(ts_read({"driver": "n5", "kvstore": http_kv(srv.url, "data.n5/seg")}), seg)
    assert statuses(data_lines(srv, r"/data\.n5/raw/s0/\d+/\d+/\d+ ")) == {200}
    # N5 scale discovery in Neuroglancer lists the folder: s0 must be there as a directory.
    req = urllib.request.Request(srv.url + "/data.n5/raw/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(req) as r:
        assert 'href="s0/"' in r.read().decode()


# -- neuroglancer precomputed (tensorstore) --------------------------------------------


def precomputed_spec(path: str, data: np.ndarray, *, kind: str, resolution, voxel_offset, chunk, encoding="raw",
                     sharding=None) -> dict:
    scale = {
        "size": list(data.shape[:3]),
        "resolution": list(resolution),
        "voxel_offset": list(voxel_offset),
        "chunk_size": list(chunk),
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [8, 8, 8]
    if sharding is not None:
        scale["sharding"] = sharding
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": path},
        "multiscale_metadata": {"type": kind, "data_type": data.dtype.name, "num_channels": data.shape[3]},
        "scale_metadata": scale,
    }


SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "identity",
    "minishard_bits": 2,
    "shard_bits": 1,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def precomputed_read_spec(url: str, path: str) -> dict:
    return {"driver": "neuroglancer_precomputed", "kvstore": http_kv(url, path)}


def write_precomputed_image(tmp_path: Path) -> tuple[np.ndarray, tuple]:
    """uint8, two channels, anisotropic, offset, 50x37x23 in 16x16x8 chunks: (data, offset)."""
    data = blobs((50, 37, 23, 2), np.uint8, seed=8)  # x, y, z, c as precomputed orders them
    offset = (100, -20, 7)
    spec = precomputed_spec(str(tmp_path / "em"), data, kind="image", resolution=(4, 4, 40), voxel_offset=offset,
                            chunk=(16, 16, 8))
    ts_write(spec, np.zeros_like(data))  # create with the domain, then write at the offset
    store = ts.open(spec, open=True, write=True).result()
    store[ts.d[:].translate_to[0]].write(data).result()
    return data, offset


# What Neuroglancer's and igneous's writers typically use: hashed chunk ids, several
# shards and minishards, raw minishard indices.
SHARDING_MURMUR = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 1,
    "hash": "murmurhash3_x86_128",
    "minishard_bits": 1,
    "shard_bits": 2,
    "minishard_index_encoding": "raw",
    "data_encoding": "raw",
}


def write_precomputed_sharded_seg(tmp_path: Path, sharding: dict = SHARDING) -> tuple[np.ndarray, tuple]:
    """uint64 labels, compressed_segmentation, sharded, with an offset: (data, offset)."""
    data = labels((67, 41, 30, 1), np.uint64, seed=9)
    offset = (3, 5, 1000)
    spec = precomputed_spec(str(tmp_path / "seg"), data, kind="segmentation", resolution=(8, 8, 30),
                            voxel_offset=offset, chunk=(16, 16, 16), encoding="compressed_segmentation",
                            sharding=sharding)
    ts_write(spec, np.zeros_like(data))
    store = ts.open(spec, open=True, write=True).result()
    store[ts.d[:].translate_to[0]].write(data).result()
    return data, offset


def ts_read_at_origin(spec: dict, offset) -> np.ndarray:
    store = ts.open(spec, open=True, read=True, context=ts.Context()).result()
    assert list(store.domain.origin[:3]) == list(offset)
    return store[ts.d[:].translate_to[0]].read().result()


def test_precomputed_unsharded_uint8_channels_offset(tmp_path, start_server):
    data, offset = write_precomputed_image(tmp_path)
    srv = start_server("serve", str(tmp_path))
    got = ts_read_at_origin(precomputed_read_spec(srv.url, "em"), offset)
    assert_exact(got, data)
    chunk_lines = data_lines(srv, r"/em/4_4_40/\d+-\d+_-?\d+--?\d+_\d+-\d+ ")
    assert len(chunk_lines) == 4 * 3 * 3 and statuses(chunk_lines) == {200}
    info = data_lines(srv, r"/em/info ")
    assert info and statuses(info) == {200}


@pytest.mark.parametrize("sharding", [SHARDING, SHARDING_MURMUR], ids=["identity", "murmurhash3"])
def test_precomputed_sharded_uint64_uses_range(tmp_path, start_server, sharding):
    data, offset = write_precomputed_sharded_seg(tmp_path, sharding)
    shards = sorted(p.name for p in (tmp_path / "seg" / "8_8_30").iterdir())
    assert shards and all(n.endswith(".shard") for n in shards)
    srv = start_server("serve", str(tmp_path))
    got = ts_read_at_origin(precomputed_read_spec(srv.url, "seg"), offset)
    assert_exact(got, data)
    shard_lines = data_lines(srv, r"/seg/8_8_30/[0-9a-f]+\.shard ")
    assert_ranged_only(shard_lines)


def test_precomputed_float32_multiscale(tmp_path, start_server):
    """Two scales written by tensorstore into one info file; both read back exactly."""
    full = blobs((40, 30, 12, 1), np.float32, seed=10)
    half = full[::2, ::2, :, :].copy()
    base = precomputed_spec(str(tmp_path / "ms"), full, kind="image", resolution=(5, 5, 50), voxel_offset=(0, 0, 0),
                            chunk=(16, 16, 4))
    ts_write(base, full)
    second = precomputed_spec(str(tmp_path / "ms"), half, kind="image", resolution=(10, 10, 50),
                              voxel_offset=(0, 0, 0), chunk=(8, 8, 4))
    store = ts.open(second, create=True, open=True).result()  # adds scale 1 to the same info
    store[...].write(half).result()
    srv = start_server("serve", str(tmp_path))
    s0 = ts_read({**precomputed_read_spec(srv.url, "ms"), "scale_index": 0})
    s1 = ts_read({**precomputed_read_spec(srv.url, "ms"), "scale_index": 1})
    assert_exact(s0, full)
    assert_exact(s1, half)


# -- cloud-volume ----------------------------------------------------------------------


def cloudvolume(url: str):
    from cloudvolume import CloudVolume

    return CloudVolume(url, progress=False, fill_missing=False, cache=False, use_https=False, parallel=1)


def test_cloudvolume_unsharded(tmp_path, start_server):
    data, offset = write_precomputed_image(tmp_path)
    srv = start_server("serve", str(tmp_path))
    vol = cloudvolume(f"precomputed://{srv.url}/em")
    assert tuple(vol.voxel_offset) == offset
    assert tuple(vol.resolution) == (4, 4, 40)
    assert vol.num_channels == 2 and vol.dtype == np.uint8
    got = vol[
        offset[0] : offset[0] + data.shape[0],
        offset[1] : offset[1] + data.shape[1],
        offset[2] : offset[2] + data.shape[2],
    ]
    assert_exact(np.asarray(got), data)
    # a cutout that straddles chunk borders
    sub = vol[offset[0] + 10 : offset[0] + 40, offset[1] + 3 : offset[1] + 20, offset[2] + 5 : offset[2] + 19]
    assert_exact(np.asarray(sub), data[10:40, 3:20, 5:19])


@pytest.mark.parametrize("sharding", [SHARDING, SHARDING_MURMUR], ids=["identity", "murmurhash3"])
def test_cloudvolume_sharded(tmp_path, start_server, sharding):
    data, offset = write_precomputed_sharded_seg(tmp_path, sharding)
    srv = start_server("serve", str(tmp_path))
    vol = cloudvolume(f"precomputed://{srv.url}/seg")
    assert vol.image.is_sharded(0)
    assert tuple(vol.voxel_offset) == offset
    got = vol[
        offset[0] : offset[0] + data.shape[0],
        offset[1] : offset[1] + data.shape[1],
        offset[2] : offset[2] + data.shape[2],
    ]
    assert_exact(np.asarray(got), data)
    shard_lines = data_lines(srv, r"/seg/8_8_30/[0-9a-f]+\.shard ")
    assert_ranged_only(shard_lines)


# -- server set-ups: mounts and workers ------------------------------------------------


def test_mount_serves_folder_under_its_name(tmp_path, start_server):
    root = tmp_path / "root"
    other = tmp_path / "elsewhere"
    root.mkdir()
    other.mkdir()
    a = blobs((20, 30, 10), np.uint8, seed=11)
    b = labels((25, 19, 11), np.uint64, seed=12)
    ts_write({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "a.zarr")}}, a,
             chunk_layout=ts.ChunkLayout(chunk_shape=[8, 8, 8]))
    ts_write({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(other / "b.zarr")}}, b,
             chunk_layout=ts.ChunkLayout(chunk_shape=[10, 10, 10]))
    srv = start_server("serve", str(root), "--mount", f"lab={other}")
    assert_exact(ts_read({"driver": "zarr", "kvstore": srv.url + "/a.zarr/"}), a)
    assert_exact(ts_read({"driver": "zarr3", "kvstore": srv.url + "/lab/b.zarr/"}), b)
    assert data_lines(srv, r"/lab/b\.zarr/c/\d+/\d+/\d+ ")
    # the mount is not also reachable under the root, and the root data is not under the mount
    with pytest.raises(ValueError):
        ts_read({"driver": "zarr3", "kvstore": srv.url + "/b.zarr/"})
    with pytest.raises(ValueError):
        ts_read({"driver": "zarr", "kvstore": srv.url + "/lab/a.zarr/"})


def test_two_workers_both_serve(tmp_path, start_server):
    zimg = blobs((33, 34, 35), np.uint16, seed=13)
    ts_write(zarr3_sharded_spec(str(tmp_path / "v.zarr"), zimg.shape, (16, 16, 16), (8, 8, 8), "uint16",
                                ["z", "y", "x"]), zimg)
    pdata, poffset = write_precomputed_sharded_seg(tmp_path)
    srv = start_server("serve", str(tmp_path), "--workers", "2")
    # Both processes accept on the shared port (SO_REUSEPORT).  The second may still be
    # starting when the first answers, so ask on fresh connections for a while.
    pids = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        with urllib.request.urlopen(srv.url + "/-/health", timeout=5) as r:
            pids.add(json.loads(r.read())["pid"])
    assert len(pids) == 2
    assert srv.proc.pid not in pids  # the parent only holds the port
    for _ in range(3):  # several rounds, so both workers answer chunk requests
        assert_exact(ts_read({"driver": "zarr3", "kvstore": srv.url + "/v.zarr/"}), zimg)
        assert_exact(ts_read_at_origin(precomputed_read_spec(srv.url, "seg"), poffset), pdata)


def test_cloudvolume_written_gzip_files_read_by_both_clients(tmp_path, start_server):
    """cloud-volume writes chunks as ``X.gz`` (compress="gzip"); the server answers ``X``
    from ``X.gz`` with Content-Encoding: gzip, as nginx's gzip_static does, and both
    clients inflate it."""
    from cloudvolume import CloudVolume

    data = blobs((40, 35, 20, 1), np.uint16, seed=14)
    offset = (10, 20, 30)
    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="image", data_type="uint16", encoding="raw", resolution=[6, 6, 30],
        voxel_offset=list(offset), chunk_size=[16, 16, 8], volume_size=list(data.shape[:3]),
    )
    writer = CloudVolume(f"file://{tmp_path / 'cv'}", info=info, compress="gzip", progress=False)
    writer.commit_info()
    writer[offset[0] : offset[0] + 40, offset[1] : offset[1] + 35, offset[2] : offset[2] + 20] = data
    files = sorted(p.name for p in (tmp_path / "cv" / "6_6_30").iterdir())
    assert files and all(n.endswith(".gz") for n in files)

    srv = start_server("serve", str(tmp_path))
    assert_exact(ts_read_at_origin(precomputed_read_spec(srv.url, "cv"), offset), data)
    vol = cloudvolume(f"precomputed://{srv.url}/cv")
    got = vol[offset[0] : offset[0] + 40, offset[1] : offset[1] + 35, offset[2] : offset[2] + 20]
    assert_exact(np.asarray(got), data)
    # the clients asked for the plain names; the .gz files are an implementation detail
    chunk_lines = data_lines(srv, r"/cv/6_6_30/\S+ ")
    assert chunk_lines and not any(".gz " in line for line in chunk_lines)
    assert statuses(chunk_lines) == {200}


def test_if_match_guards_ranged_reads_of_a_rewritten_shard(tmp_path, start_server):
    """tensorstore reads a shard's index, then chunks out of it by Range with
    ``If-Match: <the index's ETag>``, so that a shard rewritten in between is noticed
    (412) and the index re-read.  A server that ignores If-Match hands it the new
    file's bytes at the old offsets: tensorstore 0.1.86 then failed with
    "ZSTD_decompressStream() failed" (uncompressed chunks would be silently wrong).

    Here the same conditional requests are sent by hand, so the outcome does not
    depend on winning a race against tensorstore.
    """
    import urllib.error

    data = blobs((32, 32, 32), np.uint16, seed=15)
    ts_write(zarr3_sharded_spec(str(tmp_path / "v.zarr"), data.shape, (32, 32, 32), (16, 16, 16), "uint16",
                                ["z", "y", "x"]), data)
    srv = start_server("serve", str(tmp_path))
    url = srv.url + "/v.zarr/c/0/0/0"

    def get(**headers):
        req = urllib.request.Request(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, whole = get()
    etag = headers["ETag"]
    assert status == 200 and etag
    assert get(If_Match=etag, Range="bytes=0-99")[0] == 206
    assert get(If_Match=etag, Range="bytes=0-99")[2] == whole[:100]
    assert get(If_Match=f'"other", {etag}')[0] == 200
    assert get(If_Match="*")[0] == 200

    # the shard is rewritten with other data: the old ETag no longer matches
    time.sleep(0.01)
    ts_write(zarr3_sharded_spec(str(tmp_path / "v.zarr"), data.shape, (32, 32, 32), (16, 16, 16), "uint16",
                                ["z", "y", "x"]), data[::-1].copy())
    status, headers, body = get(If_Match=etag, Range="bytes=0-99")
    assert status == 412, (status, body[:80])
    assert headers["Access-Control-Allow-Origin"] == "*"  # a browser client may see the answer
    assert headers["ETag"] != etag  # the new validator, for a client that wants it
    assert get(If_Match="W/" + etag)[0] == 412  # If-Match compares strongly
    assert get(If_Unmodified_Since="Thu, 01 Jan 1970 00:00:00 GMT")[0] == 412
    assert get(If_Unmodified_Since="Fri, 01 Jan 2100 00:00:00 GMT")[0] == 200
    # and tensorstore, reading afresh, sees the new data whole
    assert_exact(ts_read({"driver": "zarr3", "kvstore": srv.url + "/v.zarr/"}), data[::-1])
