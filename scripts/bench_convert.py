"""Benchmark ``ngserve convert`` against other ways of making a multiscale OME-Zarr from a TIFF stack.

    python scripts/bench_convert.py [--size Z,Y,X] [--levels 5] [--chunk 128] [--workdir DIR]
                                    [--compression default|blosc-zstd|blosc-lz4|gzip|none]

The script writes a uint16 stack of 2-D TIFF slices (default 512 x 2048 x 2048, 4 GiB; ``--size``
shrinks it) and converts it, in one run, with:

* ``ngserve convert`` (``volumes.convert``), and the same with ``--dask local`` and 2 workers
  (its peak RSS is the driver's only: the LocalCluster's worker processes are not counted);
* ngff-zarr's ``to_ngff_zarr`` with a dask array of the slices;
* ome-zarr-py's ``write_image`` with the same dask array;
* a plain implementation of scroll_to_ome's algorithm: load a z-slab of one chunk's thickness,
  mean-downsample it level by level with numpy, write every level's part.  By default it
  compresses as ngserve does by default (blosc zstd level 3 with byte shuffle), so the two differ
  by their algorithm only.

Codecs: with ``--compression default`` (the default) every tool writes its own default:
ngserve OME-Zarr 0.4 (zarr v2) with blosc zstd level 3 and byte shuffle; ngff-zarr and ome-zarr-py
OME-Zarr 0.5 (zarr v3) with zarr-python's default, plain zstd level 0 (zstd's level 3) without
shuffle.  ``--compression blosc-zstd|blosc-lz4|gzip|none`` makes every tool write that codec, each
through its own option (ngserve's ``compression``; ``compressors=`` for ngff-zarr;
``storage_options["compressor"]`` for ome-zarr-py), with ngserve's parameters (blosc: zstd level 3
or lz4 level 5, byte shuffle; gzip level 5).  The table shows the codec each tool actually wrote,
read back from its level 0's metadata.

Each runs in its own process; the script prints wall time, voxels/s and peak RSS (VmHWM) for each
and their ratios to ngserve.  ``--rss-check`` then runs ``ngserve convert`` once more on the first
quarter of the slices (symlinks, nothing rewritten) and prints both peaks: memory must not grow
with the input (the stack is 4x the quarter).  A competitor whose package is missing is reported as such
(``pip install 'ngserve[bench]'``).  Run it on a quiet machine; record results in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each competitor is a script run as ``python -c CODE STACK OUT LEVELS CHUNK COMPRESSION``; it
# prints nothing but may fail; the harness times it and reads its peak RSS.
_ZARR_CODEC = """
import zarr
def zarr_codecs(name):  # zarr v3 codecs equal to ngserve's --compression NAME (None: the tool's default)
    if name == "default":
        return None
    if name == "none":
        return []
    if name == "gzip":
        return [zarr.codecs.GzipCodec(level=5)]
    cname = name.split("-", 1)[1]
    return [zarr.codecs.BloscCodec(cname=cname, clevel=3 if cname == "zstd" else 5, shuffle="shuffle")]
"""
_SLICES = """
import sys, glob, numpy as np, tifffile, dask, dask.array as da
from tifffile import natural_sorted
stack, out, levels, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
compression = sys.argv[5]
files = natural_sorted(glob.glob(stack + "/*.tif"))
first = tifffile.imread(files[0])
planes = [da.from_delayed(dask.delayed(tifffile.imread)(f), first.shape, first.dtype) for f in files]
arr = da.stack(planes).rechunk((chunk, chunk, chunk))
"""

COMPETITORS = {
    "ngserve convert": """
import sys, volumes
options = {} if sys.argv[5] == "default" else {"compression": sys.argv[5]}
volumes.convert(sys.argv[1], sys.argv[2], levels=int(sys.argv[3]), chunk=int(sys.argv[4]), **options)
""",
    "ngserve convert --dask local": """
import sys, volumes
options = {} if sys.argv[5] == "default" else {"compression": sys.argv[5]}
volumes.convert(sys.argv[1], sys.argv[2], levels=int(sys.argv[3]), chunk=int(sys.argv[4]), dask="local", workers=2,
                **options)
""",
    "ngff-zarr to_ngff_zarr": _SLICES + _ZARR_CODEC + """
import ngff_zarr as nz
image = nz.to_ngff_image(arr, dims=["z", "y", "x"])
multiscales = nz.to_multiscales(image, scale_factors=[2 ** i for i in range(1, levels)], chunks=chunk)
codecs = zarr_codecs(compression)
nz.to_ngff_zarr(out, multiscales, **({} if codecs is None else {"compressors": codecs}))
""",
    "ome-zarr-py write_image": _SLICES + _ZARR_CODEC + """
from ome_zarr.io import parse_url
from ome_zarr.scale import Scaler
from ome_zarr.writer import write_image
root = zarr.group(store=parse_url(out, mode="w").store)
codecs = zarr_codecs(compression)
options = dict(chunks=(chunk, chunk, chunk), **({} if codecs is None else {"compressor": codecs}))
write_image(image=arr, group=root, axes="zyx", scaler=Scaler(max_layer=levels - 1, method="local_mean"),
            storage_options=options)
""",
    "scroll_to_ome algorithm": """
import sys, glob, numpy as np, tifffile, tensorstore as ts
from tifffile import natural_sorted
from volumes.convert_stores import _zarr2_compressor
stack, out, levels, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
compression = "blosc-zstd" if sys.argv[5] == "default" else sys.argv[5]
files = natural_sorted(glob.glob(stack + "/*.tif"))
first = tifffile.imread(files[0])
shape = [len(files), *first.shape]
stores = []
for level in range(levels):
    dims = [-(-s // 2 ** level) for s in shape]
    stores.append(ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": f"{out}/{level}/"},
                           "metadata": {"shape": dims, "chunks": [min(chunk, d) for d in dims], "dtype": first.dtype.str,
                                        "compressor": _zarr2_compressor(compression, first.dtype.itemsize),
                                        "dimension_separator": "/"}, "create": True}).result())
for z0 in range(0, shape[0], chunk):  # one chunk's thickness of slices at a time, as scroll_to_ome does
    slab = np.stack([tifffile.imread(f) for f in files[z0:z0 + chunk]])
    stores[0][z0:z0 + slab.shape[0]].write(slab).result()
    for level in range(1, levels):
        p = [(0, s % 2) for s in slab.shape]
        f = np.pad(slab.astype(np.float32), p, mode="edge")
        slab = f.reshape(f.shape[0] // 2, 2, f.shape[1] // 2, 2, f.shape[2] // 2, 2).mean(axis=(1, 3, 5)).round().astype(first.dtype)
        lo = z0 // 2 ** level
        stores[level][lo:lo + slab.shape[0]].write(slab).result()  # rewrites chunks shared with the next slab
""",
}

_TAIL = """
import re
print("HWM", int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024)
"""


def write_stack(folder: Path, shape: tuple[int, int, int]) -> None:
    import numpy as np
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for z in range(shape[0]):
        plane = (1000 + 800 * np.sin(xx / 40 + z / 25) * np.cos(yy / 55) + rng.normal(0, 50, shape[1:])).astype(np.uint16)
        tifffile.imwrite(folder / f"z{z}.tif", plane)


def codec_of(out: Path) -> str:
    """The format and codec of the first array under ``out`` (level 0), as its metadata states."""
    for meta in sorted(out.rglob(".zarray")) + sorted(out.rglob("zarr.json")):
        m = json.loads(meta.read_text())
        if "compressor" in m:  # zarr v2
            c = m["compressor"]
            if c is None:
                return "v2 none"
            if c["id"] == "blosc":
                return f"v2 blosc {c['cname']}/{c['clevel']} shuffle {c['shuffle']}"
            return f"v2 {c['id']}/{c.get('level')}"
        if m.get("node_type") == "array":
            parts = []
            for codec in m["codecs"][1:]:
                conf = codec.get("configuration", {})
                if codec["name"] == "blosc":
                    parts.append(f"blosc {conf['cname']}/{conf['clevel']} {conf['shuffle']}")
                else:
                    parts.append(f"{codec['name']}/{conf.get('level', '')}".rstrip("/"))
            return "v3 " + (" + ".join(parts) or "none")
    return "?"


def run(name: str, code: str, stack: Path, out: Path, levels: int, chunk: int, compression: str = "default") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code + _TAIL, str(stack), str(out), str(levels), str(chunk), compression],
                       capture_output=True, text=True, cwd=ROOT, env=_env())
    seconds = time.perf_counter() - started
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        return {"name": name, "error": last}
    peak = int(re.search(r"HWM (\d+)", r.stdout).group(1))
    codec = codec_of(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"name": name, "seconds": seconds, "peak": peak, "codec": codec}


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="512,2048,2048", help="Z,Y,X of the uint16 stack (default 512,2048,2048)")
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--workdir", help="where to write the stack and outputs (default: a temporary folder)")
    ap.add_argument("--compression", default="default", choices=["default", "blosc-zstd", "blosc-lz4", "gzip", "none"],
                    help="the codec every tool writes (default: each tool's own default)")
    ap.add_argument("--only", action="append", help="run only competitors whose name contains this (repeatable)")
    ap.add_argument("--rss-check", action="store_true",
                    help="also convert a quarter of the slices with ngserve and compare its peak RSS with the full run")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.size.split(","))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_convert-"))
    stack = work / "stack"
    if not stack.exists():
        print(f"writing a {'x'.join(map(str, shape))} uint16 TIFF stack to {stack} …", file=sys.stderr)
        write_stack(stack, shape)
    voxels = math.prod(shape)
    results = []
    for name, code in COMPETITORS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        print(f"running {name} …", file=sys.stderr)
        results.append(run(name, code, stack, work / "out.zarr", args.levels, args.chunk, args.compression))
    base = next((r for r in results if r["name"] == "ngserve convert" and "seconds" in r), None)
    print(f"{'tool':28} {'wall s':>8} {'Mvox/s':>8} {'peak MiB':>9} {'time / ngserve':>15}  codec")
    for r in results:
        if "error" in r:
            print(f"{r['name']:28} error: {r['error']}")
            continue
        ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base else "-"
        print(f"{r['name']:28} {r['seconds']:8.1f} {voxels / r['seconds'] / 1e6:8.1f} {r['peak'] / 2**20:9.0f} {ratio:>15}"
              f"  {r['codec']}")
    if args.rss_check:
        quarter = work / "quarter"
        shutil.rmtree(quarter, ignore_errors=True)
        quarter.mkdir()
        for z in range(max(1, shape[0] // 4)):
            (quarter / f"z{z}.tif").symlink_to(stack / f"z{z}.tif")
        small = run("ngserve convert (quarter)", COMPETITORS["ngserve convert"], quarter, work / "out.zarr",
                    args.levels, args.chunk, args.compression)
        shutil.rmtree(quarter)
        full = base or run("ngserve convert", COMPETITORS["ngserve convert"], stack, work / "out.zarr", args.levels,
                           args.chunk, args.compression)
        if "peak" in small and "peak" in full:
            print(f"peak RSS: {small['peak'] / 2**20:.0f} MiB at 1/4 of the stack, {full['peak'] / 2**20:.0f} MiB "
                  f"at the whole stack ({full['peak'] / small['peak']:.2f}x)")
        results.append(small)
    print(json.dumps({"shape": shape, "levels": args.levels, "chunk": args.chunk, "compression": args.compression,
                      "results": results}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
