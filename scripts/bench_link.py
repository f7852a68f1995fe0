"""Benchmark: ``ngserve link`` on a local 1024³ uint16 OME-Zarr with 5 levels.

Measures the wall time of the whole command (interpreter start, metadata,
contrast statistics, URL), and compares the contrast statistics ngstate takes
(the coarsest level with about 64³ voxels) with the alternative of a strided
view of the full-resolution level (what single-level data gets).

    python scripts/bench_link.py [--data DIR] [--runs 5]

The dataset is written once (a few minutes) and reused from DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorstore as ts

SHAPE = (1024, 1024, 1024)
LEVELS = 5
CHUNK = 128
SLAB = 64


def _create(path: Path, shape) -> ts.TensorStore:
    return ts.open({
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": {"shape": list(shape), "chunks": [min(CHUNK, s) for s in shape], "dtype": "<u2",
                     "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
                     "dimension_separator": "/"},
        "create": True, "delete_existing": True,
    }).result()


def write_dataset(root: Path) -> None:
    """Smooth structure plus noise, in [~600, ~1400], written slab by slab (never 2 GB in memory)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = np.arange(SHAPE[1], dtype=np.float32)[:, None]
    x = np.arange(SHAPE[2], dtype=np.float32)[None, :]
    plane = 300 * np.sin(x / 50) * np.cos(y / 70)
    level0 = _create(root / "0", SHAPE)
    for z0 in range(0, SHAPE[0], SLAB):
        z = np.arange(z0, z0 + SLAB, dtype=np.float32)[:, None, None]
        slab = 1000 + plane[None] + 100 * np.sin(z / 30) + rng.normal(0, 20, (SLAB, *SHAPE[1:])).astype(np.float32)
        level0[z0:z0 + SLAB].write(slab.astype(np.uint16)).result()
        print(f"  level 0: {z0 + SLAB}/{SHAPE[0]} planes", file=sys.stderr, end="\r")
    previous = level0
    for level in range(1, LEVELS):
        view = ts.downsample(previous, [2, 2, 2], method="mean")
        store = _create(root / str(level), view.shape)
        for z0 in range(0, view.shape[0], SLAB):
            store[z0:z0 + SLAB].write(view[z0:z0 + SLAB].read().result()).result()
        previous = store
    datasets = [{"path": str(i), "coordinateTransformations": [
        {"type": "scale", "scale": [2.0**i * 0.5] * 3},
        {"type": "translation", "translation": [(2.0**i - 1) * 0.25] * 3}]} for i in range(LEVELS)]
    (root / ".zgroup").write_text('{"zarr_format": 2}')
    (root / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "name": "bench", "datasets": datasets,
        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]}]}))
    print(file=sys.stderr)


def time_cli(path: Path, runs: int) -> list[float]:
    cmd = [sys.executable, "-m", "server", "link", str(path), "--served-at", f"{path.parent}=http://127.0.0.1:9"]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def time_stats(path: Path, runs: int) -> tuple[list[float], list[float], list[float], list[float]]:
    from volumes import contrast_range, open_dataset

    opened, ours, strided = [], [], []
    ranges = []
    for _ in range(runs):
        t = time.perf_counter()
        ds = open_dataset(path)
        opened.append(time.perf_counter() - t)
        t = time.perf_counter()
        ranges.append(contrast_range(ds))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        view = ts.downsample(ds.open_level(0), [16, 16, 16], method="stride")  # also 64³ voxels
        data = view.read().result()
        np.percentile(data, [0.5, 99.5])
        strided.append(time.perf_counter() - t)
    return opened, ours, strided, ranges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/ngserve-bench", help="folder for the dataset (kept between runs)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    path = Path(args.data) / "bench.ome.zarr"
    if not (path / ".zattrs").exists():
        print(f"writing {path} (once)…", file=sys.stderr)
        t = time.perf_counter()
        write_dataset(path)
        print(f"written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    cli = time_cli(path, args.runs)
    opened, ours, strided, ranges = time_stats(path, args.runs)
    med = statistics.median
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"dataset: {path}, {SHAPE} uint16, {LEVELS} levels, {CHUNK}³ chunks")
    print(f"ngserve link (whole command, median of {args.runs}): {med(cli):.3f} s  (min {min(cli):.3f}, max {max(cli):.3f})")
    print(f"  open_dataset (metadata):                      {med(opened) * 1000:.1f} ms")
    print(f"  contrast from level 4 (64³):                  {med(ours) * 1000:.1f} ms  range {ranges[0]}")
    print(f"  alternative: stride-16 view of level 0 (64³): {med(strided) * 1000:.1f} ms")
    print(f"  ratio alternative / ours:                     {med(strided) / med(ours):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
