"""``ngserve mesh``: sharded multi-resolution meshes of zarr and precomputed labels, read back with
the test's own shard and manifest reader (and cloud-volume), checked against the labels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from label_data import (
    BIG, OFFSET_XYZ, ROOT, VOXEL_XYZ, cli, read_info, read_mesh, shapes, sharded_value, write_precomputed, write_zarr,
)

SEGMENTS = (7, BIG, 12, 5)


def _check_geometry(folder, lab, offset_xyz, segments=SEGMENTS):
    """LOD 0 of each segment: every vertex sits in a cell of voxel centres holding both the segment
    and something else (on its boundary, to the voxel), and the closed surface's volume matches
    the segment's voxels."""
    xyz = np.pad(lab.transpose(2, 1, 0), 1)  # background around the volume, as the mesh is closed there
    voxel = np.array(VOXEL_XYZ)
    for segment in segments:
        lod0 = read_mesh(folder, segment)[0]
        v, f = lod0["vertices"], lod0["faces"]
        assert len(f) > 20, segment
        inside = xyz == np.uint64(segment)
        # Voxel-centre cell around each vertex (in padded voxel indices): its 8 corners.
        cell = np.floor(v / voxel - np.array(offset_xyz) - 0.5).astype(int) + 1
        hits = np.zeros(len(v), int)
        for corner in np.ndindex(2, 2, 2):
            idx = np.clip(cell + corner, 0, np.array(xyz.shape) - 1)
            hits += inside[tuple(idx.T)]
        assert ((hits > 0) & (hits < 8)).all(), (segment, int(((hits == 0) | (hits == 8)).sum()))
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        volume = abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6
        expected = int(inside.sum()) * float(np.prod(voxel))
        assert abs(volume - expected) < 0.12 * expected, (segment, volume, expected)


def test_zarr_labels_get_sharded_meshes_beside_them(tmp_path):
    lab = shapes()
    labels = write_zarr(tmp_path / "cells.zarr", lab)
    r = cli("mesh", labels, "--workers", "2")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cells.zarr.mesh"
    assert r.stdout.startswith(f"{out}: 4 segments, 2 levels of detail, 1 shards"), r.stdout
    info = read_info(out)
    assert info["sharding"]["hash"] == "murmurhash3_x86_128" and info["sharding"]["data_encoding"] == "raw"
    assert sorted(os.listdir(out)) == ["0.shard", "info"]  # nothing of the work left behind
    assert not list(tmp_path.glob(".*partial*"))
    _check_geometry(out, lab, (0, 0, 0))
    coarse = read_mesh(out, 7)[1]
    assert 0 < len(coarse["faces"]) < len(read_mesh(out, 7)[0]["faces"])  # LOD 1 from the coarser level


def test_precomputed_labels_name_the_mesh_in_their_info_and_cloudvolume_reads_it(tmp_path):
    from cloudvolume import CloudVolume

    lab = shapes()
    labels = write_precomputed(tmp_path / "seg", lab)
    r = cli("mesh", labels, "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert read_info(labels)["mesh"] == "mesh" and "(named in the labels' info)" in r.stdout
    _check_geometry(labels / "mesh", lab, OFFSET_XYZ)
    cv = CloudVolume(f"file://{labels}", progress=False)
    mesh = cv.mesh.get(7, lod=0)[7]
    ours = read_mesh(labels / "mesh", 7)[0]["vertices"]
    np.testing.assert_allclose(mesh.vertices.min(axis=0), ours.min(axis=0), atol=1e-3)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), ours.max(axis=0), atol=1e-3)


def test_segments_subset(tmp_path):
    lab = shapes()
    labels = write_zarr(tmp_path / "cells.zarr", lab)
    out = tmp_path / "some"
    r = cli("mesh", labels, out, "--segments", f"12,{BIG}", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{out}: 2 segments")
    _check_geometry(out, lab, (0, 0, 0), segments=(12, BIG))
    assert sharded_value(out, 7) is None and sharded_value(out, 5) is None


def test_resume_after_kill_gives_identical_bytes(tmp_path):
    rng = np.random.default_rng(3)
    lab = np.zeros((48, 192, 256), np.uint64)  # 4 x 3 x 2 LOD-0 nodes, many segments in each
    for i in range(1, 120):
        z, y, x = rng.integers(0, (48, 192, 256))
        lab[max(z - 4, 0):z + 4, max(y - 9, 0):y + 9, max(x - 9, 0):x + 9] = i
    labels = write_zarr(tmp_path / "big.zarr", lab)
    whole = tmp_path / "whole"
    r = cli("mesh", labels, whole, "--workers", "1")
    assert r.returncode == 0, r.stderr

    out = tmp_path / "resumed"
    nodes = tmp_path / ".resumed.partial" / "nodes"
    proc = subprocess.Popen([sys.executable, "-m", "server", "mesh", str(labels), str(out), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (nodes.exists() and len(list(nodes.glob("*.npz"))) >= 3):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(nodes.glob("*.npz")))
    assert not out.exists() and 3 <= finished_before < 24 + 6 + 2  # killed mid-run
    r = cli("mesh", labels, out, "--workers", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed after" in r.stdout
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))
    for name in os.listdir(whole):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


@pytest.mark.parametrize("args, message", [
    (["--segments", "1,x"], "--segments: 'x' is not a segment id"),
    (["--segments", ""], "--segments: no ids given"),
    (["--segments", "99"], "--segments: 99 is not in"),
])
def test_bad_segment_lists_are_one_line(tmp_path, args, message):
    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    r = cli("mesh", labels, *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "cells.zarr.mesh").exists()


def test_image_and_existing_output_are_refused(tmp_path):
    from volumes import write_ome_zarr

    image = tmp_path / "image.zarr"
    write_ome_zarr(image, np.zeros((8, 8, 8), np.float32), levels=1)
    r = cli("mesh", image)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no segments to mesh" in r.stderr, r.stderr
    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    (tmp_path / "cells.zarr.mesh").mkdir()
    r = cli("mesh", labels)
    assert r.returncode == 2 and "already exists; give --overwrite" in r.stderr, r.stderr
    r = cli("mesh", labels, "--overwrite", "--workers", "1")
    assert r.returncode == 0 and read_info(tmp_path / "cells.zarr.mesh")["@type"] == "neuroglancer_multilod_draco"


def test_links_attach_the_prepared_mesh_and_skeletons_instead_of_meshing_on_demand(tmp_path, start_server):
    import json
    import urllib.request

    import ngstate

    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    srv = start_server("serve", "--mount", f"lab={tmp_path}")
    served = {str(tmp_path): srv.url + "/lab"}

    def sources():
        return ngstate.build_state([labels], served_at=served).to_json()["layers"][0]["source"]

    assert sources()[1] == f"precomputed://{srv.url}/-/mesh/lab/cells.zarr"  # on demand, before
    assert cli("mesh", labels, "--workers", "1").returncode == 0
    assert cli("skeleton", labels, "--dust", "100").returncode == 0
    after = sources()
    assert after[1:] == [f"precomputed://{srv.url}/lab/cells.zarr.mesh", f"precomputed://{srv.url}/lab/cells.zarr.skeletons"]
    for url, kind in zip(after[1:], ("neuroglancer_multilod_draco", "neuroglancer_skeletons")):
        with urllib.request.urlopen(url.removeprefix("precomputed://") + "/info") as r:
            assert json.loads(r.read())["@type"] == kind


def test_dask_local_writes_the_same_bytes(tmp_path):
    labels = write_zarr(tmp_path / "cells.zarr", shapes())
    pool, dask = tmp_path / "pool", tmp_path / "dask"
    assert cli("mesh", labels, pool, "--workers", "1").returncode == 0
    r = cli("mesh", labels, dask, "--dask", "local", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "node tasks on dask local" in r.stdout
    assert sorted(os.listdir(pool)) == sorted(os.listdir(dask))
    for name in os.listdir(pool):
        assert (pool / name).read_bytes() == (dask / name).read_bytes(), name
    r = cli("mesh", labels, tmp_path / "x", "--dask", "tcp://127.0.0.1:9")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot reach the scheduler" in r.stderr, r.stderr
