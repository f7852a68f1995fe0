"""``/-/mesh/<path>/``: meshes made on demand, answered like files, cached by source validators,
authorized like the data, on WebDAV mounts and behind share tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from conftest import ServerProcess
from http_get import get
from server import MountConfig, ServerConfig, create_app
from server.tokens import mint
from test_meshes import decode, near_boundary, read_manifest
from volumes import write_ome_zarr
from webdav_server import WebDAVServer

SECRET = "mesh-view-secret-0123456789abcdef"
BIG = 2**64 - 2


def labels_zyx() -> np.ndarray:
    z, y, x = np.ogrid[:40, :70, :90]
    out = np.zeros((40, 70, 90), np.uint64)
    out[((z - 20) / 15.0) ** 2 + ((y - 35) / 25.0) ** 2 + ((x - 45) / 30.0) ** 2 < 1] = 5
    out[2:9, 3:12, 70:85] = BIG
    return out


def write_labels(path: Path, labels: np.ndarray) -> None:
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"},
             "metadata": {"shape": list(labels.shape), "chunks": [16, 32, 32], "dtype": "<u8", "fill_value": 0,
                          "dimension_separator": "/"}},
            create=True, delete_existing=True).result().write(labels).result()


@pytest.fixture
async def app_client(aiohttp_client, tmp_path):
    write_labels(tmp_path / "labels.zarr", labels_zyx())
    write_ome_zarr(tmp_path / "image.zarr", np.ones((8, 16, 16), np.float32), levels=1)
    config = ServerConfig(mounts=[MountConfig("", str(tmp_path))], data_dir=tmp_path / "state")
    config.validate()
    app = create_app(config)
    return app, await aiohttp_client(app), tmp_path


async def fetch(client, url: str, headers: dict | None = None, method: str = "GET"):
    resp = await client.request(method, url, headers=headers or {})
    return resp.status, resp.headers, await resp.read()


class Served:
    """A mesh read over HTTP, shaped like meshes.MultiLodMesh for the decoder in test_meshes."""

    def __init__(self, manifest: bytes, data: bytes) -> None:
        self.manifest, self.data = manifest, data


async def test_meshes_answer_like_files_and_follow_the_labels(app_client):
    from server.views_mesh import MESHES

    app, client, _ = app_client
    status, headers, body = await fetch(client, "/-/mesh/labels.zarr/info")
    info = json.loads(body)
    assert status == 200 and info["@type"] == "neuroglancer_multilod_draco" and "ETag" in headers
    assert info["transform"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]  # plain zarr: 1 nm voxels
    status, h_index, manifest = await fetch(client, "/-/mesh/labels.zarr/5.index")
    assert status == 200 and h_index["Content-Type"] == "application/octet-stream"
    status, h_data, data = await fetch(client, "/-/mesh/labels.zarr/5")
    assert status == 200 and h_data["ETag"] != h_index["ETag"]
    assert app[MESHES].computed == 1  # the manifest's computation made the data too
    decoded = decode(Served(manifest, data), info)
    inside = labels_zyx().transpose(2, 1, 0) == 5
    for _, _, nm, _ in (f for f in decoded["lods"][0] if f[1] is not None):
        assert near_boundary(nm, inside).all()
    # Range (how the client reads one fragment), HEAD and conditional requests, like any file.
    sizes = decoded["manifest"]["lods"][0][1]
    first = int(sizes[0])
    status, h, part = await fetch(client, "/-/mesh/labels.zarr/5", {"Range": f"bytes=0-{first - 1}"})
    assert status == 206 and part == data[:first] and h["Content-Range"] == f"bytes 0-{first - 1}/{len(data)}"
    status, h, empty = await fetch(client, "/-/mesh/labels.zarr/5.index", method="HEAD")
    assert status == 200 and empty == b"" and int(h["Content-Length"]) == len(manifest)
    assert (await fetch(client, "/-/mesh/labels.zarr/5.index", {"If-None-Match": h_index["ETag"]}))[0] == 304
    assert app[MESHES].computed == 1
    # An id above 2**63 is an id like any other.
    status, _, big = await fetch(client, f"/-/mesh/labels.zarr/{BIG}.index")
    assert status == 200 and read_manifest(big)["lod_scales"][0] == 1.0


async def test_a_sharded_precomputed_segmentation_with_an_offset(app_client):
    """A precomputed source (its store has a channel dimension its x, y, z axes leave out), with a
    voxel offset and anisotropic voxels: meshes land on the labels in nm."""
    from volumes.write import write_precomputed

    _, client, root = app_client
    labels = labels_zyx()
    write_precomputed(root / "seg", labels, resolution_xyz=(8, 8, 40), voxel_offset_xyz=(10, 20, 5),
                      kind="segmentation", sharded=True, levels=2)
    info = json.loads((await fetch(client, "/-/mesh/seg/info"))[2])
    assert info["transform"] == [8, 0, 0, 0, 0, 8, 0, 0, 0, 0, 40, 0]
    status, _, manifest = await fetch(client, "/-/mesh/seg/5.index")
    assert status == 200, manifest
    data = (await fetch(client, "/-/mesh/seg/5"))[2]
    decoded = decode(Served(manifest, data), info)
    points = np.concatenate([f[2] for f in decoded["lods"][0] if f[1] is not None])
    voxels = points / np.array([8, 8, 40]) - np.array([10, 20, 5])
    assert near_boundary(voxels, labels.transpose(2, 1, 0) == 5).all()
    assert len(decoded["lods"]) == 2  # the source's two levels


async def test_concurrent_first_requests_mesh_once(app_client):
    from server.views_mesh import MESHES

    app, client, _ = app_client
    answers = await asyncio.gather(*[fetch(client, f"/-/mesh/labels.zarr/5{s}") for s in (".index", "") * 4])
    assert all(a[0] == 200 for a in answers) and app[MESHES].computed == 1
    assert len({a[2] for a in answers[::2]}) == 1


async def test_an_edited_source_chunk_under_the_segment_gives_a_new_mesh(app_client):
    from server.views_mesh import MESHES

    app, client, root = app_client
    _, h1, m1 = await fetch(client, "/-/mesh/labels.zarr/5.index")
    labels = labels_zyx()
    labels[0:16, 32:64, 32:64] = 5  # one source chunk, rewritten: the segment grows
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "labels.zarr") + "/"}}).result()
    store[0:16, 32:64, 32:64].write(labels[0:16, 32:64, 32:64]).result()
    _, h2, m2 = await fetch(client, "/-/mesh/labels.zarr/5.index")
    assert h2["ETag"] != h1["ETag"] and m2 != m1 and app[MESHES].computed == 2
    _, _, data = await fetch(client, "/-/mesh/labels.zarr/5")
    info = json.loads((await fetch(client, "/-/mesh/labels.zarr/info"))[2])
    inside = labels.transpose(2, 1, 0) == 5
    decoded = decode(Served(m2, data), info)
    points = np.concatenate([f[2] for f in decoded["lods"][0] if f[1] is not None])
    assert near_boundary(points, inside).all() and points[:, 2].min() <= 1  # reaches z = 0 now


async def test_absent_segments_bad_names_and_image_data_answer_one_line(app_client):
    _, client, _ = app_client
    status, _, body = await fetch(client, "/-/mesh/labels.zarr/6.index")
    assert status == 404 and body.count(b"\n") == 1 and b"segment 6 is not in /labels.zarr" in body
    assert (await fetch(client, "/-/mesh/labels.zarr/0.index"))[0] == 404
    for name in ("5.idx", "-5", str(2**64), "abc"):
        status, _, body = await fetch(client, f"/-/mesh/labels.zarr/{name}")
        assert status == 404 and body.count(b"\n") == 1, name
    status, _, body = await fetch(client, "/-/mesh/image.zarr/info")
    assert status == 422 and body.count(b"\n") == 1 and b"image data has no segments" in body, body
    assert b"Traceback" not in body
    assert (await fetch(client, "/-/mesh/nothing.zarr/info"))[0] == 404


async def test_the_translated_view_names_its_mesh_source(app_client):
    """The precomputed info's ``mesh`` resolves, as the client resolves it (``..`` climbs path
    components), to the mesh view of the same data; image volumes name none."""
    _, client, _ = app_client
    info = json.loads((await fetch(client, "/-/precomputed/labels.zarr/info"))[2])
    parts = "-/precomputed/labels.zarr".split("/")
    for component in info["mesh"].split("/"):
        parts = parts[:-1] if component == ".." else parts + [component]
    assert "/".join(parts) == "-/mesh/labels.zarr"
    status, _, body = await fetch(client, "/" + "/".join(parts) + "/info")
    assert status == 200 and json.loads(body)["@type"] == "neuroglancer_multilod_draco"
    assert "mesh" not in json.loads((await fetch(client, "/-/precomputed/image.zarr/info"))[2])


def test_webdav_labels_and_share_tokens(tmp_path):
    root = tmp_path / "data"
    (root / "lab").mkdir(parents=True)
    dav_root = tmp_path / "dav"
    dav_root.mkdir()
    labels = labels_zyx()
    for where in (root / "lab", dav_root):
        write_labels(where / "labels.zarr", labels)
    dav = WebDAVServer(dav_root, password="dav-pw-mesh")
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "dav.pw").write_text("dav-pw-mesh")
    conf = tmp_path / "ngserve.toml"
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
        inside = labels.transpose(2, 1, 0) == 5
        for base in (f"{srv.url}/-/mesh/dav/labels.zarr",
                     f"{srv.url}/-/t/{mint(SECRET.encode(), 'lab', 'labels.zarr', 3600)}/-/mesh/lab/labels.zarr"):
            status, _, body = get(base + "/info")
            assert status == 200, (base, body)
            info = json.loads(body)
            status, _, manifest = get(base + "/5.index")
            assert status == 200, (base, manifest)
            status, _, data = get(base + "/5")
            assert status == 200
            points = np.concatenate([f[2] for f in decode(Served(manifest, data), info)["lods"][0] if f[1] is not None])
            assert near_boundary(points, inside).all()
            assert get(base + "/6.index")[0] == 404
        assert get(f"{srv.url}/-/mesh/lab/labels.zarr/5.index")[0] == 401
        # A token for exactly the path the request names, but not the dataset the mesh reads.
        narrow = mint(SECRET.encode(), "lab", "labels.zarr/5.index", 3600)
        assert get(f"{srv.url}/-/t/{narrow}/-/mesh/lab/labels.zarr/5.index")[0] == 403
    finally:
        srv.stop()
        dav.kill()
