#!/usr/bin/env python3
"""Benchmark meshes on demand: the first-mesh latency of one segment through ``/-/mesh/``.

One run, one ``ngserve serve`` process:

1. writes a ``--size``³ uint64 zarr v2 label volume (one level, ``--chunk``³ chunks) of
   about ``--segments`` segments: warped blocks with random 64-bit ids, written slab by slab;
2. asks the server for the mesh ``info`` once (opening the volume: not part of a segment's latency);
3. for ``--samples`` segments near the middle of the volume, times
   - **first**: ``GET <id>.index`` on a cold cache (find the segment, mesh every LOD, encode);
   - **data**: ``GET <id>`` just after (served from the cache the first request filled);
   - **again**: ``GET <id>.index`` once more (a cache hit, revalidated by source validators);
4. prints each figure's median and maximum, and the issue's target (first mesh within 1 s).

    python scripts/bench_mesh_on_demand.py                         # 512^3, ~1000 segments
    python scripts/bench_mesh_on_demand.py --size 96 --segments 27 # a quick run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def write_labels(path: Path, size: int, segments: int, chunk: int, seed: int = 7) -> tuple[np.ndarray, int]:
    """Warped blocks (``k``³ of them, ``k³ ≈ segments``), each a random 64-bit id; returns the ids and ``k``."""
    import tensorstore as ts

    k = max(1, round(segments ** (1 / 3)))
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2**63, size=k**3, dtype=np.uint64) * np.uint64(2) - np.uint64(1)  # odd: never 0
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"},
                     "metadata": {"shape": [size] * 3, "chunks": [chunk] * 3, "dtype": "<u8", "fill_value": 0,
                                  "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
                                  "dimension_separator": "/"}},
                    create=True, delete_existing=True).result()
    side = size / k
    amp, wave = side * 0.2, size / 5
    y, x = np.mgrid[:size, :size].astype(np.float32)
    for z0 in range(0, size, chunk):
        z = np.arange(z0, min(z0 + chunk, size), dtype=np.float32)[:, None, None]
        # Boundaries bent by smooth waves, so segments are not boxes (marching cubes has work to do).
        zw = z + amp * np.sin(y / wave)[None]
        yw = y[None] + amp * np.sin(x / wave)[None]
        xw = x[None] + amp * np.sin(z / wave)
        cell = [np.clip((w / side).astype(np.int64), 0, k - 1) for w in (zw, yw, xw)]
        store[z0 : z0 + len(z)].write(ids[(cell[0] * k + cell[1]) * k + cell[2]]).result()
    return ids, k


def timed_get(url: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - start, status, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="edge of the cubic volume, voxels (default 512)")
    parser.add_argument("--segments", type=int, default=1000, help="about this many segments (default 1000)")
    parser.add_argument("--chunk", type=int, default=64, help="zarr chunk edge (default 64)")
    parser.add_argument("--samples", type=int, default=5, help="segments timed (default 5)")
    args = parser.parse_args()
    if args.size < 8 or args.segments < 1 or args.samples < 1:
        parser.error("--size must be at least 8, --segments and --samples at least 1")

    from conftest import ServerProcess

    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        ids, k = write_labels(root / "labels.zarr", args.size, args.segments, args.chunk)
        print(f"wrote {args.size}^3 uint64 labels, {k**3} segments, {args.chunk}^3 chunks "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        srv = ServerProcess(["serve", str(root), "--port", "0", "--quiet"])
        try:
            base = f"{srv.url}/-/mesh/labels.zarr"
            opened, status, _ = timed_get(base + "/info")
            assert status == 200
            # Segments around the middle: whole cells, away from the volume's faces.
            middle = [(a * k + b) * k + c for a in range(k) for b in range(k) for c in range(k)
                      if all(0 < v < k - 1 for v in (a, b, c)) or k <= 2]
            rng = np.random.default_rng(1)
            chosen = rng.choice(middle, size=min(args.samples, len(middle)), replace=False)
            rows = []
            for index in chosen:
                seg = int(ids[index])
                first, status, manifest = timed_get(f"{base}/{seg}.index")
                assert status == 200, (seg, status)
                data_s, _, data = timed_get(f"{base}/{seg}")
                again, _, _ = timed_get(f"{base}/{seg}.index")
                lods = int.from_bytes(manifest[24:28], "little")
                rows.append((first, data_s, again, len(data), lods))
                print(f"segment {seg}: first {first * 1000:.0f} ms, data {data_s * 1000:.1f} ms, "
                      f"again {again * 1000:.1f} ms, {len(data) / 1024:.0f} KiB, {lods} LODs", flush=True)
        finally:
            srv.stop()

    def stat(i: int) -> str:
        values = [r[i] * 1000 for r in rows]
        return f"median {statistics.median(values):.1f} ms, max {max(values):.1f} ms"

    print()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"volume opened (mesh info): {opened * 1000:.0f} ms")
    print(f"first mesh of a segment (cold): {stat(0)}   (issue target: within 1000 ms)")
    print(f"fragment data right after:      {stat(1)}")
    print(f"manifest again (cache hit):     {stat(2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
