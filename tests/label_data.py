"""Label volumes the mesh and skeleton tests write, and readers of what the commands write that
share no code with ngserve (a sharded-file reader, a skeleton decoder)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorstore as ts

from volumes import write_ome_zarr

ROOT = Path(__file__).resolve().parent.parent
BIG = 2**60 + 3  # an id above 2^53: exact only if never passed through a float
VOXEL_XYZ = (8.0, 8.0, 20.0)  # nanometres; anisotropic so that axis order mistakes show
OFFSET_XYZ = (3, 0, 5)  # precomputed voxel_offset, in voxels


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, **kw)


def shapes() -> np.ndarray:
    """(z, y, x) labels: a ball (7), a box (BIG), a tube along x (12) and a small cube (5)."""
    z, y, x = np.mgrid[:40, :72, :80]
    lab = np.zeros((40, 72, 80), np.uint64)
    lab[((x - 22) * 8) ** 2 + ((y - 22) * 8) ** 2 + ((z - 16) * 20) ** 2 < 150**2] = 7
    lab[(abs(x - 58) < 12) & (abs(y - 20) < 10) & (abs(z - 20) < 9)] = BIG
    lab[((y - 55) ** 2 + (z - 20) ** 2 < 36) & (x > 5) & (x < 75)] = 12
    lab[30:36, 60:66, 3:9] = 5
    return lab


def write_zarr(path: Path, lab: np.ndarray) -> Path:
    write_ome_zarr(path, lab, label=True, method="mode", voxel_size=VOXEL_XYZ[::-1], unit="nanometer", levels=2,
                   chunks=(16, 32, 32))
    return path


def write_precomputed(path: Path, lab: np.ndarray, levels: int = 2) -> Path:
    """Precomputed labels (x, y, z, channel), each level the every-other-voxel subsample of level 0."""
    xyz = np.ascontiguousarray(lab.transpose(2, 1, 0))
    for level in range(levels):
        f = 2**level
        data = xyz[::f, ::f, ::f]
        store = ts.open({
            "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(path)},
            "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
            "scale_metadata": {"size": list(data.shape), "resolution": [v * f for v in VOXEL_XYZ],
                               "voxel_offset": [o // f for o in OFFSET_XYZ], "chunk_size": [32, 32, 16],
                               "encoding": "compressed_segmentation", "compressed_segmentation_block_size": [8, 8, 8]},
            "create": True,
        }).result()
        store[..., 0].write(data).result()
    return path


def read_info(path: Path) -> dict:
    return json.loads((path / "info").read_text())


def sharded_value(folder: Path, key: int, with_preceding: int = 0) -> bytes | None:
    """The value stored under ``key`` in a ``neuroglancer_uint64_sharded_v1`` folder, read from the
    spec alone; ``with_preceding`` more bytes before it (a mesh's fragments)."""
    spec = read_info(folder)["sharding"]
    assert spec["hash"] == "murmurhash3_x86_128" and spec["preshift_bits"] == 0
    import mmh3

    hashed = mmh3.hash64(int(key).to_bytes(8, "little"), x64arch=False, signed=False)[0]
    minishard = hashed & ((1 << spec["minishard_bits"]) - 1)
    shard = (hashed >> spec["minishard_bits"]) & ((1 << spec["shard_bits"]) - 1)
    digits = -(-spec["shard_bits"] // 4)
    path = folder / (f"{shard:0{digits}x}.shard" if digits else "0.shard")
    if not path.exists():
        return None
    data = path.read_bytes()
    index_end = 16 << spec["minishard_bits"]
    start, end = np.frombuffer(data[16 * minishard: 16 * minishard + 16], "<u8")
    raw = data[index_end + int(start): index_end + int(end)]
    if spec["minishard_index_encoding"] == "gzip":
        raw = gzip.decompress(raw)
    table = np.frombuffer(raw, "<u8").reshape(3, -1).astype(np.int64)
    keys = np.cumsum(table[0])
    starts = np.zeros(len(keys), np.int64)
    position = 0
    for i in range(len(keys)):
        starts[i] = position + table[1, i]
        position = starts[i] + table[2, i]
    hit = np.flatnonzero(keys.astype(np.uint64) == np.uint64(key))
    if not len(hit):
        return None
    i = int(hit[0])
    a = index_end + int(starts[i])
    assert spec["data_encoding"] == "raw"
    return data[a - with_preceding: a + int(table[2, i])]


def decode_skeleton(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, m = np.frombuffer(data[:8], "<u4")
    vertices = np.frombuffer(data, "<f4", 3 * n, 8).reshape(n, 3)
    edges = np.frombuffer(data, "<u4", 2 * m, 8 + 12 * n).reshape(m, 2)
    radii = np.frombuffer(data, "<f4", n, 8 + 12 * n + 8 * m)
    assert len(data) == 8 + 12 * n + 8 * m + 4 * n
    return vertices, edges, radii


def read_mesh(folder: Path, segment: int) -> list[dict]:
    """One segment's sharded multi-resolution mesh, decoded from the spec: per LOD, the vertices
    (nanometres, through the info transform) and faces of all its fragments joined."""
    import struct

    import DracoPy

    info = read_info(folder)
    assert info["@type"] == "neuroglancer_multilod_draco" and info["vertex_quantization_bits"] == 16
    manifest = sharded_value(folder, segment)
    assert manifest is not None, segment
    chunk = np.array(struct.unpack_from("<3f", manifest, 0))
    origin = np.array(struct.unpack_from("<3f", manifest, 12))
    (lods,) = struct.unpack_from("<I", manifest, 24)
    at = 28 + 4 * lods
    offsets = np.frombuffer(manifest, "<f4", 3 * lods, at).reshape(lods, 3)
    at += 12 * lods
    counts = np.frombuffer(manifest, "<u4", lods, at)
    at += 4 * lods
    layout = []
    for lod in range(lods):
        n = int(counts[lod])
        positions = np.frombuffer(manifest, "<u4", 3 * n, at).reshape(3, n).T
        at += 12 * n
        sizes = np.frombuffer(manifest, "<u4", n, at)
        at += 4 * n
        layout.append((positions, sizes))
    assert at == len(manifest)
    total = int(sum(s.sum() for _, s in layout))
    data = sharded_value(folder, segment, with_preceding=total)[:total]
    matrix = np.array(info["transform"], dtype=float).reshape(3, 4)
    out, cursor = [], 0
    for lod, (positions, sizes) in enumerate(layout):
        vertices, faces, base = [], [], 0
        for p, size in zip(positions, sizes):
            blob = data[cursor: cursor + int(size)]
            cursor += int(size)
            if not size:
                continue
            mesh = DracoPy.decode(blob)
            q = np.asarray(mesh.points, dtype=float).reshape(-1, 3)
            assert q.min() >= 0 and q.max() <= 65535
            stored = origin + offsets[lod] + chunk * 2**lod * (p + q / 65535)
            vertices.append(stored @ matrix[:, :3].T + matrix[:, 3])
            faces.append(np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3) + base)
            base += len(q)
        out.append({"vertices": np.concatenate(vertices) if vertices else np.zeros((0, 3)),
                    "faces": np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)})
    return out
