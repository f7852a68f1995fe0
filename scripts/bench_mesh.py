"""Benchmark ``ngserve mesh`` against igneous (``mesh forge --sharded`` + ``mesh merge-sharded``).

    python scripts/bench_mesh.py [--small] [--size N] [--segments 1000] [--workers N]
                                 [--igneous-venv /work/.venv-igneous] [--workdir DIR]

The script writes a uint64 precomputed label volume (default 512^3, about ``--segments`` Voronoi
cells with a tenth of them left as background; ``--small``: 128^3 and 60 segments, a quick check
that everything runs), then meshes it, in one run, with:

* ``ngserve mesh LABELS OUT`` (every core, sharded multi-resolution meshes, LODs from the labels'
  pyramid: the precomputed view's virtual scales for this one-level volume);
* igneous through its local file queue: ``igneous mesh forge --sharded`` then ``igneous mesh
  merge-sharded --nlod`` (as many LODs as ngserve wrote), each queue run by ``igneous --parallel N
  execute -x``.  igneous is installed into its own venv (``--igneous-venv``, created with
  ``python -m venv`` + ``pip install igneous-pipeline`` when missing), so its pinned versions never
  touch this environment's.

For each it prints wall time, the peak of the summed RSS of its process tree (sampled every
50 ms with psutil: process pools count in full) and the largest single process's RSS, then the
ratios igneous / ngserve.  It also prints the first-mesh latency of one segment through a running
``ngserve serve``'s ``/-/mesh/`` view (on-demand meshes).
Run it on a quiet machine; record results in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent


def write_labels(path: Path, size: int, segments: int, seed: int = 1) -> list[int]:
    """A ``size``^3 uint64 precomputed segmentation of Voronoi cells (ids large and sparse, as real
    ones are); every tenth cell is background.  The ids written."""
    import tensorstore as ts
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, (segments, 3))
    ids = rng.permutation(np.unique(rng.integers(1, 2**40, 2 * segments, dtype=np.uint64)))[:segments]
    ids[::10] = 0
    tree = cKDTree(seeds)
    store = ts.open({
        "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(path)},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
        "scale_metadata": {"size": [size] * 3, "resolution": [8, 8, 8], "voxel_offset": [0, 0, 0],
                           "chunk_size": [64, 64, 64], "encoding": "compressed_segmentation",
                           "compressed_segmentation_block_size": [8, 8, 8]},
        "create": True, "delete_existing": True,
    }).result()
    slab = 64
    yx = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(-1, 2) + 0.5
    for z0 in range(0, size, slab):
        block = np.empty((size, size, slab), np.uint64)  # x, y, z
        for dz in range(slab):
            points = np.column_stack([yx[:, 1], yx[:, 0], np.full(len(yx), z0 + dz + 0.5)])  # x, y, z
            _, nearest = tree.query(points, workers=-1)
            block[:, :, dz] = ids[nearest].reshape(size, size).T
        store[:, :, z0:z0 + slab, 0].write(block).result()
    return [int(i) for i in ids if i]


class Peak:
    """Samples the summed RSS of a process and all its descendants until it ends."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.largest = pid, 0, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
            while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.largest = max(self.largest, rss)
                self.peak = max(self.peak, total)
                time.sleep(0.05)
        except psutil.Error:
            pass


def timed(steps: list[list[str]], env: dict | None = None) -> dict:
    """Run ``steps`` one after another; wall time and peak RSS over all of them."""
    start = time.perf_counter()
    tree_peak = largest = 0
    for argv in steps:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = Peak(proc.pid)
        out, err = proc.communicate()
        peak.thread.join(1)
        tree_peak, largest = max(tree_peak, peak.peak), max(largest, peak.largest)
        if proc.returncode:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-3000:]}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tree_peak_mib": tree_peak / 2**20, "largest_process_mib": largest / 2**20}


def igneous_venv(path: Path) -> Path:
    """The igneous executable of the venv at ``path``, made (and igneous installed) if missing."""
    exe = path / "bin" / "igneous"
    if not exe.exists():
        print(f"installing igneous-pipeline into {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "igneous-pipeline"], check=True)
    return exe


def first_mesh_latency(labels: Path, segment: int) -> float:
    """Seconds from asking a fresh ``ngserve serve`` for one segment's mesh to having it."""
    # --quiet: nothing reads its output after the first line, and a full pipe would stall its log.
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", str(labels.parent), "--port", "0", "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # "ngserve: serving on http://127.0.0.1:PORT/  (viewer: ...)"
            if line.startswith("ngserve: serving on "):
                url = line.split()[3].rstrip("/")
        if url is None:
            raise SystemExit("ngserve serve did not say where it listens")
        base = f"{url}/-/mesh/{labels.name}"
        with urllib.request.urlopen(base + "/info") as r:
            json.loads(r.read())
        start = time.perf_counter()
        with urllib.request.urlopen(f"{base}/{segment}.index") as r:
            r.read()
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="128^3 and 60 segments: check that it runs")
    parser.add_argument("--size", type=int, help="edge of the cubic volume (default 512; 128 with --small)")
    parser.add_argument("--segments", type=int, help="Voronoi cells (default 1000; 60 with --small)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both tools")
    parser.add_argument("--igneous-venv", type=Path, default=Path("/work/.venv-igneous"))
    parser.add_argument("--workdir", type=Path, help="keep the data and outputs here (default: a temporary folder)")
    args = parser.parse_args()
    size = args.size or (128 if args.small else 512)
    count = args.segments or (60 if args.small else 1000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_mesh."))
    work.mkdir(parents=True, exist_ok=True)
    igneous = igneous_venv(args.igneous_venv)
    try:
        theirs, ours = work / "labels_igneous", work / "labels"
        print(f"writing {size}^3 uint64 labels, {count} cells ...", flush=True)
        ids = write_labels(ours, size, count)
        results = {}
        out = work / "ngserve.mesh"
        shutil.rmtree(out, ignore_errors=True)
        results["ngserve mesh"] = timed([[sys.executable, "-m", "server", "mesh", str(ours), str(out),
                                          "--workers", str(args.workers)]])
        lods = _lods(out, ids)

        # igneous writes into the labels' own folder: give it a copy.
        shutil.rmtree(theirs, ignore_errors=True)
        shutil.copytree(ours, theirs)
        queue = work / "igneous-queue"
        shutil.rmtree(queue, ignore_errors=True)
        cloudpath, fq = f"file://{theirs}", f"fq://{queue}"
        execute = [str(igneous), "--parallel", str(args.workers), "execute", "-x", fq]
        results["igneous forge + merge-sharded"] = timed([
            [str(igneous), "mesh", "forge", cloudpath, "--queue", fq, "--sharded", "--mip", "0"],
            execute,
            [str(igneous), "mesh", "merge-sharded", cloudpath, "--queue", fq, "--nlod", str(lods)],
            execute,
        ], env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
        if not list(theirs.glob("mesh*/*.shard")):
            raise SystemExit(f"igneous wrote no mesh shards in {theirs}")

        latency = first_mesh_latency(ours, ids[len(ids) // 2])
        voxels = size ** 3
        print(f"\n{size}^3 uint64, {len(ids)} segments, {args.workers} workers, {lods} levels of detail")
        for name, r in results.items():
            print(f"{name:32s} {r['seconds']:8.1f} s  {voxels / r['seconds'] / 1e6:7.1f} Mvoxel/s  "
                  f"tree peak {r['tree_peak_mib']:7.0f} MiB  largest process {r['largest_process_mib']:6.0f} MiB")
        a, b = results["igneous forge + merge-sharded"], results["ngserve mesh"]
        print(f"igneous / ngserve: {a['seconds'] / b['seconds']:.2f}x wall time, "
              f"{a['tree_peak_mib'] / max(b['tree_peak_mib'], 1):.2f}x tree peak RSS")
        print(f"on demand (/-/mesh/, fresh server): first mesh of segment {ids[len(ids) // 2]} in {latency:.2f} s")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _lods(folder: Path, ids: list[int]) -> int:
    """How many levels of detail ngserve wrote (from one segment's manifest, read with the tests' shard reader)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from label_data import sharded_value  # the tests' independent reader

    for segment in ids:
        manifest = sharded_value(folder, segment)
        if manifest:
            return int(np.frombuffer(manifest, "<u4", 1, 24)[0])
    return 1


if __name__ == "__main__":
    main()
