"""Remote mounts against a real WebDAV server (wsgidav with basic auth on loopback).

tensorstore and cloud-volume read zarr v2, zarr v3 sharded, N5 and precomputed
(sharded and not) through ngserve, which holds the upstream password; every
read must equal the source array exactly.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from conftest import ServerProcess
from webdav_server import WebDAVServer
from http_get import get

DAV_PASSWORD = "dav-secret-pw-7f3a"


def _blobs(shape, dtype, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    image = np.exp(-sum((g - rng.uniform(-0.5, 0.5)) ** 2 for g in grids) * 4)
    image = image + rng.normal(0, 0.05, shape)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    scale = min(info.max, 60000) if info else 1.0
    return np.clip(image * scale, 0, scale).astype(dtype)


def _write(spec: dict, data: np.ndarray) -> None:
    ts.open(spec, create=True, delete_existing=True).result().write(data).result()


def _read(spec: dict) -> np.ndarray:
    return ts.open(spec, read=True).result().read().result()


def make_datasets(root: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Write one dataset per format under ``root``; return name -> (driver spec without kvstore, data)."""
    out = {}
    zarr2 = _blobs((37, 70, 91), np.uint16, 1)
    spec = {"driver": "zarr", "metadata": {"chunks": [16, 32, 32], "dimension_separator": "/",
                                           "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2}}}
    out["img.zarr"] = (spec, zarr2)
    zarr3 = (_blobs((40, 64, 50), np.uint32, 2) // 1000).astype(np.uint64)
    spec = {"driver": "zarr3", "metadata": {
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [32, 32, 32]}},
        "codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [16, 16, 16], "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                                    {"name": "gzip", "configuration": {"level": 3}}]}}]}}
    out["seg.zarr3"] = (spec, zarr3)
    n5 = _blobs((33, 47, 65), np.float32, 3)
    out["vol.n5"] = ({"driver": "n5", "metadata": {"blockSize": [16, 16, 16], "compression": {"type": "gzip"}}}, n5)
    pre = _blobs((70, 60, 50, 1), np.uint8, 4)
    out["pre_unsharded"] = ({"driver": "neuroglancer_precomputed",
                             "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
                             "scale_metadata": {"resolution": [4, 4, 40], "encoding": "raw", "chunk_size": [32, 32, 16]}},
                            pre)
    pre_sh = (_blobs((64, 64, 40, 1), np.uint16, 5) // 5000).astype(np.uint32)
    out["pre_sharded"] = ({"driver": "neuroglancer_precomputed",
                           "multiscale_metadata": {"type": "segmentation", "data_type": "uint32", "num_channels": 1},
                           "scale_metadata": {"resolution": [8, 8, 8], "encoding": "raw", "chunk_size": [16, 16, 16],
                                              "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
                                                           "hash": "identity", "minishard_bits": 2, "shard_bits": 1,
                                                           "minishard_index_encoding": "gzip", "data_encoding": "gzip"}}},
                          pre_sh)
    for name, (spec, data) in out.items():
        full = dict(spec, kvstore={"driver": "file", "path": str(root / name) + "/"})
        if spec["driver"] == "neuroglancer_precomputed":
            full["scale_metadata"] = dict(spec["scale_metadata"], size=list(data.shape[:3]))
        elif spec["driver"] == "zarr3":
            full["metadata"] = dict(spec["metadata"], shape=list(data.shape), data_type=str(data.dtype))
        elif spec["driver"] == "zarr":
            full["metadata"] = dict(spec["metadata"], shape=list(data.shape), dtype=data.dtype.str)
        else:
            full["metadata"] = dict(spec["metadata"], dimensions=list(data.shape), dataType=str(data.dtype))
        _write(full, data)
    (root / "notes").mkdir()
    (root / "notes" / ".hidden").write_text("private")
    (root / "notes" / "readme.txt").write_text("hello from webdav\n")
    (root / "big.bin").write_bytes(np.random.default_rng(9).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    return out


def read_spec(spec: dict, url: str) -> dict:
    return {"driver": spec["driver"], "kvstore": url}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("davroot")
    datasets = make_datasets(root)
    dav = WebDAVServer(root, password=DAV_PASSWORD)
    conf = tmp_path_factory.mktemp("conf")
    (conf / "dav.pw").write_text(DAV_PASSWORD + "\n")
    (conf / "ngserve.toml").write_text(f"""
[server]
host = "127.0.0.1"
port = 0

[[mounts]]
name = "dav"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_file = "dav.pw"
metadata_ttl = "60s"

[[mounts]]
name = "fresh"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_file = "dav.pw"
metadata_ttl = 0.3

[[mounts]]
name = "plain"
source = "{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_env = "TEST_DAV_PW"
""")
    srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml")], env=dict(os.environ, TEST_DAV_PW=DAV_PASSWORD))
    yield srv, dav, datasets, root
    srv.stop()
    dav.kill()




@pytest.mark.parametrize("name", ["img.zarr", "seg.zarr3", "vol.n5", "pre_unsharded", "pre_sharded"])
def test_tensorstore_reads_through_proxy_equal_source(deployment, name):
    srv, dav, datasets, _ = deployment
    spec, data = datasets[name]
    got = _read(read_spec(spec, f"{srv.url}/dav/{name}/"))
    assert got.dtype == data.dtype and got.shape == data.shape
    np.testing.assert_array_equal(got, data)


def test_sharded_reads_went_upstream_as_ranges(deployment):
    srv, dav, datasets, _ = deployment
    spec, data = datasets["seg.zarr3"]
    seen = len(srv.log)
    part = ts.open(read_spec(spec, f"{srv.url}/dav/seg.zarr3/"), read=True).result()[3:9, 17:30, 5:21].read().result()
    np.testing.assert_array_equal(part, data[3:9, 17:30, 5:21])
    srv.settle()
    ranged = [line for line in srv.log[seen:] if re.search(r'"GET /dav/seg\.zarr3/c/', line)]
    assert ranged and all(re.search(r'" 206 ', line) for line in ranged), ranged


@pytest.mark.parametrize("name", ["pre_unsharded", "pre_sharded"])
def test_cloudvolume_reads_through_proxy_equal_source(deployment, name):
    from cloudvolume import CloudVolume

    srv, _, datasets, _ = deployment
    _, data = datasets[name]
    cv = CloudVolume(f"precomputed://{srv.url}/dav/{name}", mip=0, progress=False, cache=False,
                     fill_missing=False, use_https=False)
    np.testing.assert_array_equal(np.asarray(cv[:, :, :]), data)


def test_plain_http_mount_reads_without_listings(deployment):
    srv, _, datasets, _ = deployment
    spec, data = datasets["img.zarr"]
    np.testing.assert_array_equal(_read(read_spec(spec, f"{srv.url}/plain/img.zarr/")), data)
    status, _, _ = get(f"{srv.url}/plain/")
    assert status == 404  # plain HTTP has no listings to offer
    status, headers, _ = get(f"{srv.url}/-/open/plain/img.zarr")
    assert status == 200  # followed to the viewer: the format was found by probing marker files


def test_listing_comes_from_propfind(deployment):
    srv, *_ = deployment
    status, headers, body = get(f"{srv.url}/dav/", {"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = body.decode()
    for name, fmt in [("img.zarr", "zarr2"), ("seg.zarr3", "zarr3"), ("vol.n5", "n5"), ("pre_sharded", "precomputed")]:
        assert f'<a href="{name}/">{name}/</a>' in text
        assert re.search(rf'{re.escape(name)}/</a></td><td></td><td><span class="fmt">{fmt}</span>', text), name
    assert '<a href="big.bin">big.bin</a>' in text and "3,145,728 B" in text
    status, _, body = get(f"{srv.url}/dav/notes/")
    assert b"readme.txt" in body and b".hidden" not in body
    status, _, body = get(f"{srv.url}/dav/notes")  # a folder without its slash: redirected, then listed
    assert status == 200 and b"readme.txt" in body
    assert get(f"{srv.url}/dav/missing/")[0] == 404


def test_range_head_and_416_pass_through(deployment):
    srv, _, _, root = deployment
    whole = (root / "big.bin").read_bytes()
    status, headers, body = get(f"{srv.url}/dav/big.bin", {"Range": "bytes=1000-1999"})
    assert status == 206 and body == whole[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(whole)}"
    status, headers, body = get(f"{srv.url}/dav/big.bin", {"Range": "bytes=-100"})
    assert status == 206 and body == whole[-100:]
    status, headers, _ = get(f"{srv.url}/dav/big.bin", {"Range": f"bytes={len(whole) + 5}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"
    status, headers, body = get(f"{srv.url}/dav/big.bin", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(whole) and body == b""
    status, _, body = get(f"{srv.url}/dav/big.bin")  # larger than one piece: streamed
    assert status == 200 and body == whole
    assert get(f"{srv.url}/dav/nope.bin")[0] == 404
    status, headers, _ = get(f"{srv.url}/dav/notes/readme.txt")
    etag = headers["ETag"]
    assert get(f"{srv.url}/dav/notes/readme.txt", {"If-None-Match": etag})[0] == 304


def test_if_match_and_if_unmodified_since_go_upstream_and_412_comes_back(deployment):
    srv, _, _, root = deployment
    shard = root / "notes" / "shard.bin"
    shard.write_bytes(b"old shard " * 100)
    status, headers, body = get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9"})
    assert status == 206 and body == b"old shard "
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9", "If-Match": etag})[0] == 206
    # Rewritten upstream between two reads, as a shard whose index tensorstore has already read.
    shard.write_bytes(b"new shard, other size " * 100)
    later = os.stat(shard).st_mtime + 100
    os.utime(shard, (later, later))
    status, _, body = get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9", "If-Match": etag})
    assert status == 412 and b"old shard" not in body
    assert get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9", "If-Unmodified-Since": modified})[0] == 412
    status, headers, body = get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9"})
    assert status == 206 and body == b"new shard," and headers["ETag"] != etag
    assert get(f"{srv.url}/dav/notes/shard.bin", {"Range": "bytes=0-9", "If-Match": headers["ETag"]})[0] == 206


def test_missing_chunk_costs_one_upstream_request(deployment):
    srv, dav, _, _ = deployment
    dav.reset_stats()
    for _ in range(3):
        assert get(f"{srv.url}/dav/img.zarr/9/9/9")[0] == 404
        assert get(f"{srv.url}/plain/img.zarr/9/9/9")[0] == 404
    counts = dav.stats()["counts"]
    # One GET per read, and no PROPFIND/HEAD to ask whether the missing chunk is a folder.
    assert counts == {"GET": 6, "GET /img.zarr/9/9/9": 6}, counts
    status, _, body = get(f"{srv.url}/dav/notes")  # a real folder is still redirected to its listing
    assert status == 200 and b"readme.txt" in body


def test_listing_cache_is_bounded(deployment, monkeypatch):
    from server import remote
    from server.config import UpstreamConfig

    _, dav, _, _ = deployment
    monkeypatch.setattr(remote, "LISTING_BUDGET", 8 * 256)  # room for about 8 remembered misses

    async def run() -> None:
        storage = remote.RemoteStorage(f"webdav+{dav.url}/",
                                       UpstreamConfig(username=dav.user, password=DAV_PASSWORD, metadata_ttl=600))
        try:
            for i in range(20):
                assert await storage.list_dir(f"missing-{i}") is None
            asked = storage.upstream_requests
            assert await storage.list_dir("missing-19") is None
            assert storage.upstream_requests == asked  # recent: still cached
            assert await storage.list_dir("missing-0") is None
            assert storage.upstream_requests == asked + 1  # the oldest was dropped, not kept forever
        finally:
            await storage.close()

    asyncio.run(run())


class _PublicBucket(http.server.SimpleHTTPRequestHandler):
    """Answers like a public S3/GCS bucket to an anonymous reader: 403 for a key that does not exist."""

    def send_error(self, code, message=None, explain=None):
        super().send_error(403 if code == 404 else code, message, explain)

    def log_message(self, *args):
        pass


def test_public_bucket_403_for_missing_keys_is_404(tmp_path, start_server):
    data = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16)
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "img.zarr")},
                     "metadata": {"shape": [16, 16], "chunks": [8, 8], "dtype": "<u2"}}, create=True).result()
    store[:8, :8].write(data[:8, :8]).result()  # the other three chunks stay missing
    bucket = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_PublicBucket, directory=str(tmp_path)))
    threading.Thread(target=bucket.serve_forever, daemon=True).start()
    try:
        srv = start_server("serve", "--mount", f"b=http://127.0.0.1:{bucket.server_port}/")
        assert get(f"{srv.url}/b/img.zarr/1.1")[0] == 404
        expected = np.zeros_like(data)
        expected[:8, :8] = data[:8, :8]
        np.testing.assert_array_equal(_read({"driver": "zarr", "kvstore": f"{srv.url}/b/img.zarr/"}), expected)
        assert get(f"{srv.url}/-/open/b/img.zarr")[0] == 200  # format probing meets 403s for zarr.json too
    finally:
        bucket.shutdown()
        bucket.server_close()


def test_metadata_is_served_from_cache(deployment):
    srv, dav, _, _ = deployment
    first = get(f"{srv.url}/dav/img.zarr/.zarray")
    dav.reset_stats()
    for _ in range(20):
        status, headers, body = get(f"{srv.url}/dav/img.zarr/.zarray")
        assert status == 200 and body == first[2] and headers["Content-Type"] == "application/json"
    assert dav.stats()["counts"].get("GET /img.zarr/.zarray", 0) == 0
    assert get(f"{srv.url}/dav/img.zarr/.zarray", {"Range": "bytes=0-9"})[2] == first[2][:10]


def test_metadata_revalidates_by_etag_after_ttl(deployment):
    import time

    srv, dav, _, root = deployment
    meta = root / "notes" / "attributes.json"
    meta.write_text('{"v": 1}')
    dav.reset_stats()
    assert get(f"{srv.url}/fresh/notes/attributes.json")[2] == b'{"v": 1}'
    time.sleep(0.4)
    assert get(f"{srv.url}/fresh/notes/attributes.json")[2] == b'{"v": 1}'
    counts = dav.stats()["counts"]
    assert counts["GET /notes/attributes.json"] == 2 and counts["conditional /notes/attributes.json"] == 1
    meta.write_text('{"v": 22}')  # a new size, so a new ETag
    time.sleep(0.4)
    assert get(f"{srv.url}/fresh/notes/attributes.json")[2] == b'{"v": 22}'


def test_upstream_password_never_reaches_clients_or_logs(deployment):
    srv, dav, _, _ = deployment
    for path in ["/dav/", "/dav/img.zarr/.zarray", "/dav/nope", "/plain/", "/-/health", "/dav/big.bin"]:
        status, headers, body = get(srv.url + path)
        assert DAV_PASSWORD.encode() not in body and DAV_PASSWORD not in str(headers)
        assert "Authorization" not in headers and "WWW-Authenticate" not in headers
    srv.settle()
    assert srv.requested(r'"GET /dav/big\.bin ')  # the lines checked below are there
    assert not any(DAV_PASSWORD in line for line in srv.log + srv.stdout)


def test_wrong_upstream_credentials_give_502_without_secrets(tmp_path, start_server):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(b"x" * 10)
    dav = WebDAVServer(root, password="right-password")
    try:
        srv = start_server("serve", "--mount", f"d=webdav+{dav.url}/")  # no credentials at all
        status, _, body = get(srv.url + "/d/f.bin")
        assert status == 502 and b"credentials" in body
        conf = tmp_path / "c.toml"
        conf.write_text(f'[[mounts]]\nname = "d"\nsource = "webdav+{dav.url}/"\n'
                        f'[mounts.upstream]\nusername = "{dav.user}"\npassword_env = "WRONG_PW"\n')
        srv = start_server("serve", "--config", str(conf), env=dict(os.environ, WRONG_PW="not-the-password-xyz"))
        status, _, body = get(srv.url + "/d/f.bin")
        assert status == 502 and b"not-the-password-xyz" not in body
        srv.settle()
        assert srv.requested(r'"GET /d/f\.bin .* 502 ')
        assert not any("not-the-password-xyz" in line for line in srv.log)
    finally:
        dav.kill()
