"""Multi-LOD meshes (meshes/): decoded with DracoPy and a manifest reader written here from the spec
(google/neuroglancer src/datasource/precomputed/meshes.md), checked against the labels they came from."""

from __future__ import annotations

import itertools
import struct

import DracoPy
import numpy as np
import pytest
from scipy.spatial import cKDTree

from meshes import LabelPyramid, MeshError, info_json, layout_for, mesh_node, mesh_segment
from volumes import open_dataset
from volumes.write import write_ome_zarr

BIG = 2**63 + 5  # an id above 2**63: never through a float or a signed type


def read_manifest(raw: bytes) -> dict:
    """The manifest as the spec lays it out (an independent reader: no code shared with meshes/)."""
    chunk_shape = struct.unpack_from("<3f", raw, 0)
    grid_origin = struct.unpack_from("<3f", raw, 12)
    (n,) = struct.unpack_from("<I", raw, 24)
    at = 28
    lod_scales = struct.unpack_from(f"<{n}f", raw, at)
    at += 4 * n
    vertex_offsets = np.frombuffer(raw, "<f4", 3 * n, at).reshape(n, 3)
    at += 12 * n
    counts = struct.unpack_from(f"<{n}I", raw, at)
    at += 4 * n
    lods = []
    for count in counts:
        positions = np.frombuffer(raw, "<u4", 3 * count, at).reshape(3, count).T
        at += 12 * count
        sizes = np.frombuffer(raw, "<u4", count, at)
        at += 4 * count
        lods.append((positions, sizes))
    assert at == len(raw), "manifest has trailing bytes"
    return {"chunk_shape": np.array(chunk_shape), "grid_origin": np.array(grid_origin), "lod_scales": lod_scales,
            "vertex_offsets": vertex_offsets, "lods": lods}


def z_key(p) -> int:
    return sum(((int(p[a]) >> b) & 1) << (3 * b + a) for b in range(32) for a in range(3))


def decode(mesh, info: dict) -> dict:
    """Per LOD: a list of (position, quantized ints, physical nm vertices, faces)."""
    manifest = read_manifest(mesh.manifest)
    bits = info["vertex_quantization_bits"]
    top = 2**bits - 1
    transform = np.array(info["transform"], dtype=float).reshape(3, 4)
    offset = 0
    out = {"manifest": manifest, "lods": []}
    for lod, (positions, sizes) in enumerate(manifest["lods"]):
        frags = []
        keys = [z_key(p) for p in positions]
        assert keys == sorted(keys), f"LOD {lod} nodes are not in Z-order"
        for p, size in zip(positions, sizes):
            data = mesh.data[offset : offset + int(size)]
            offset += int(size)
            if not size:
                frags.append((tuple(p), None, np.zeros((0, 3)), np.zeros((0, 3), int)))
                continue
            decoded = DracoPy.decode(data)
            q = np.asarray(decoded.points, dtype=np.float64)
            assert (q == np.rint(q)).all() and q.min() >= 0 and q.max() <= top
            stored = (manifest["grid_origin"] + manifest["vertex_offsets"][lod]
                      + manifest["chunk_shape"] * 2**lod * (p + q / top))
            nm = stored @ transform[:, :3].T + transform[:, 3]
            frags.append((tuple(p), q, nm, np.asarray(decoded.faces).reshape(-1, 3)))
        out["lods"].append(frags)
    assert offset == len(mesh.data)
    return out


def near_boundary(points_vox: np.ndarray, inside: np.ndarray, reach: float = 1.0) -> np.ndarray:
    """Whether each point (voxel corner coordinates) has a voxel centre of the segment and one of
    anything else (outside the volume counts) within ``reach`` voxels along every axis."""
    padded = np.pad(inside, 1)
    lo = np.ceil(points_vox - reach - 0.5).astype(int)
    hi = np.floor(points_vox + reach - 0.5).astype(int)
    any_in = np.zeros(len(points_vox), bool)
    any_out = np.zeros(len(points_vox), bool)
    span = int(np.ceil(2 * reach)) + 1
    for d in itertools.product(range(span), repeat=3):
        j = lo + np.array(d)
        ok = (j <= hi).all(1)
        jj = np.clip(j + 1, 0, np.array(padded.shape) - 1)
        v = padded[jj[:, 0], jj[:, 1], jj[:, 2]]
        any_in |= ok & v
        any_out |= ok & ~v
    return any_in & any_out


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def labels_zyx(shape=(70, 90, 110)) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint64)
    labels[((z - 35) / 22.0) ** 2 + ((y - 45) / 30.0) ** 2 + ((x - 60) / 40.0) ** 2 < 1] = BIG  # spans LOD-0 nodes
    labels[((z - 12) ** 2 + (y - 14) ** 2 + (x - 15) ** 2) < 7**2] = 7
    labels[60:, 70:, 95:] = 9  # against three faces of the volume: closed by padding, not by zmesh
    labels[30:33, 5:8, 100:103] = 11  # 27 voxels, gone from coarse levels
    return labels


@pytest.fixture(scope="module", params=[(1.0, 1.0, 1.0), (0.040, 0.004, 0.004)], ids=["isotropic", "anisotropic"])
def volume(request, tmp_path_factory):
    """An OME-Zarr label image (z, y, x in µm) with 3 mode-downsampled levels and an offset."""
    voxel = request.param
    labels = labels_zyx()
    path = tmp_path_factory.mktemp("mesh") / "labels.zarr"
    write_ome_zarr(path, labels, voxel_size=voxel, levels=3, method="mode", label=True, chunks=(32, 32, 32),
                   translation=[3 * v for v in voxel])
    pyramid = LabelPyramid.from_dataset(open_dataset(path))
    return labels, pyramid, voxel


def xyz(labels_zyx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(labels_zyx.transpose(2, 1, 0))


@pytest.mark.parametrize("segment", [BIG, 7, 9, 11])
def test_lod0_lies_on_the_segment_boundary_and_encloses_its_voxels(volume, segment):
    labels, pyramid, voxel = volume
    layout = layout_for(pyramid)
    info = info_json(layout)
    assert info["@type"] == "neuroglancer_multilod_draco" and info["vertex_quantization_bits"] in (10, 16)
    res_nm = np.array(voxel[::-1]) * 1000  # x, y, z nm
    assert np.allclose(pyramid.resolution, res_nm)
    decoded = decode(mesh_segment(pyramid, segment, layout), info)
    frags = [f for f in decoded["lods"][0] if f[1] is not None]
    assert frags
    inside = xyz(labels) == np.uint64(segment)
    offset = np.array([3, 3, 3])  # the translation, in voxels
    volume_vox = 0.0
    for _, _, nm, faces in frags:
        vox = nm / res_nm - offset
        assert near_boundary(vox, inside).all(), "a vertex is more than one voxel from the segment's boundary"
        volume_vox += signed_volume(vox, faces)
    count = int(inside.sum())
    # Marching cubes cuts the voxels' corners: smaller than the voxel count, by less for larger segments.
    tolerance = 0.12 if count > 5000 else 0.45
    assert abs(abs(volume_vox) - count) <= tolerance * count, (volume_vox, count)


def test_lod0_is_closed_across_fragments(volume):
    """Each edge of the joined LOD-0 fragments bounds two triangles: the node cuts leave no holes.

    A few edges where two cut planes cross come out of zmesh.chunk_mesh unmatched (a crack
    thinner than a voxel, 3 of 53k edges here); a cut at the wrong place leaves 2% unmatched.
    """
    labels, pyramid, voxel = volume
    layout = layout_for(pyramid)
    decoded = decode(mesh_segment(pyramid, BIG, layout), info_json(layout))
    frags = [f for f in decoded["lods"][0] if f[1] is not None]
    assert len(frags) > 1  # the ellipsoid spans several LOD-0 nodes
    res_nm = np.array(voxel[::-1]) * 1000
    # One vertex for points closer than 1/100 voxel: fragments quantize a shared cut point
    # relative to their own boxes, so its two copies differ by up to a quantization step.
    points = np.concatenate([nm / res_nm for _, _, nm, _ in frags])
    faces = np.concatenate([f + n for (_, _, _, f), n in zip(frags, np.cumsum([0] + [len(x[2]) for x in frags[:-1]]))])
    root = np.arange(len(points))

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, j in cKDTree(points).query_pairs(0.05):
        root[find(i)] = find(j)
    same = np.array([find(i) for i in range(len(points))])
    edges: dict = {}
    for tri in same[faces]:
        if len(set(tri.tolist())) < 3:
            continue  # a sliver from a cut next to a vertex
        for a, b in ((0, 1), (1, 2), (2, 0)):
            e = (min(tri[a], tri[b]), max(tri[a], tri[b]))
            edges[e] = edges.get(e, 0) + 1
    counts = np.array(list(edges.values()))
    assert (counts != 2).mean() < 0.002, np.unique(counts, return_counts=True)


def test_lods_come_from_the_label_pyramid(volume):
    labels, pyramid, voxel = volume
    layout = layout_for(pyramid)
    info = info_json(layout)
    assert [lv.factors for lv in pyramid.levels][:3] == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    mesh = mesh_segment(pyramid, BIG, layout)
    decoded = decode(mesh, info)
    manifest = decoded["manifest"]
    assert manifest["lod_scales"] == (1.0, 2.0, 4.0)
    assert (manifest["vertex_offsets"] == 0).all()
    # Near-cubic nodes in nm: the anisotropic z axis gets 10x fewer voxels per node.
    res_nm = np.array(voxel[::-1]) * 1000
    extent = manifest["chunk_shape"] * res_nm
    assert extent.max() / extent.min() < 1.2
    top = 2 ** info["vertex_quantization_bits"] - 1
    mid = top // 2 + 1  # the client's partition point
    for lod in range(1, 3):
        kids = {tuple(p) for p, *_ in decoded["lods"][lod - 1]}
        nodes = {tuple(p) for p, *_ in decoded["lods"][lod]}
        assert {(x >> 1, y >> 1, z >> 1) for x, y, z in kids} <= nodes, "a node without its parent"
        f = 2**lod
        coarse = xyz(labels)[::f, ::f, ::f]  # where each coarse voxel is (values: checked below)
        coarse_inside = np.asarray(pyramid.levels[lod].store.read().result()) == np.uint64(BIG)
        assert coarse_inside.shape == coarse.shape
        filled = [fr for fr in decoded["lods"][lod] if fr[1] is not None]
        assert filled
        for _, q, nm, faces in filled:
            # Within one voxel of the coarse level's boundary, plus the simplifier's one voxel.
            vox = (nm / res_nm - 3) / f
            assert near_boundary(vox, coarse_inside, reach=2.0).all()
            # No triangle crosses the 2x2x2 child grid (the client splits by vertex position).
            side = np.sign(q[faces] - mid)  # [m, 3 corners, 3 axes]
            assert not ((side.max(1) > 0) & (side.min(1) < 0)).any()
    # A segment too small for coarse levels gets one LOD.
    assert read_manifest(mesh_segment(pyramid, 11, layout).manifest)["lod_scales"] == (1.0,)


def test_mesh_node_gives_every_segment_of_a_node(volume):
    labels, pyramid, voxel = volume
    layout = layout_for(pyramid)
    (node,) = layout.nodes_covering(0, [18, 17, 15], [19, 18, 16])  # the centre of segment 7 (x, y, z + offset)
    pieces = mesh_node(pyramid, layout, 0, node)
    lo, hi = (np.array(b, int) - 3 for b in layout.node_box(0, node))  # minus the offset: array indices
    grid = xyz(labels)
    near = set(np.unique(grid[tuple(slice(max(0, a - 1), b + 1) for a, b in zip(lo, hi))]).tolist()) - {0}
    inner = set(np.unique(grid[tuple(slice(max(0, a + 1), b - 1) for a, b in zip(lo, hi))]).tolist()) - {0}
    assert inner <= set(pieces) <= near and 7 in pieces
    alone = mesh_node(pyramid, layout, 0, node, segments=[7])
    assert np.array_equal(np.sort(alone[7].vertices, 0), np.sort(pieces[7].vertices, 0))


def test_absent_segments_and_image_data(volume, tmp_path):
    labels, pyramid, voxel = volume
    assert mesh_segment(pyramid, 8) is None
    assert mesh_segment(pyramid, 0) is None
    assert mesh_segment(pyramid, 2**64 - 1) is None
    image = tmp_path / "image.zarr"
    write_ome_zarr(image, np.zeros((8, 8, 8), np.float32), levels=1)
    with pytest.raises(MeshError, match="image data has no segments"):
        LabelPyramid.from_dataset(open_dataset(image))


def test_small_levels_are_searched_once(volume):
    """find() keeps the small levels it read: the next search reads none (a server's later segments
    then cost no whole-volume read), so an edit to that copy shows in the next answer."""
    labels, pyramid, voxel = volume
    fresh = LabelPyramid(pyramid.levels, pyramid.resolution)
    level, lo, hi = fresh.find(7)
    assert level == len(fresh.levels) - 1 and set(fresh.scans) == {level}
    kept = fresh.scans[level]
    kept[kept == np.uint64(7)] = 0
    kept[0, 0, 0] = 7
    first = list(fresh.levels[level].lo)  # the array's voxel 0, in the level's absolute voxels
    assert fresh.find(7) == (level, first, [x + 1 for x in first])
