#!/usr/bin/env python3
"""Benchmark ``/-/precomputed/``: translated chunks on a cache miss and a hit, against raw files.

One run, one ngserve process, the same chunks three ways:

1. **raw**: a precomputed volume written beforehand with tensorstore (the "converted
   files"), its chunk files served as they are (``/conv/s0/<chunk>``);
2. **miss**: the same chunks from ``/-/precomputed/vol.zarr/s0/<chunk>``, a zarr v2
   array of the same voxels, translated on request (first pass: every chunk computed);
3. **hit**: the same translated URLs again (every chunk from the memory cache);
4. **gzip**: the hits again with ``Accept-Encoding: gzip`` (after one pass that compresses each).

Passes 1-3 send ``Accept-Encoding: identity``, so all three move the same bytes.

The raw pass runs before and after the others, and its better figure is used, so a
busy machine does not flatter the view.  The load is an aiohttp client with
``--concurrency`` requests in flight over keep-alive connections.  Each pass checks the
bytes of one chunk against the source first.  Prints chunks/s, MB/s and the ratios
miss/raw and hit/raw (the issue's target: hit >= 0.8x raw).

    python scripts/bench_views.py                 # 256^3 uint8, 64^3 chunks (64 chunks)
    python scripts/bench_views.py --size 512      # 512 chunks
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 64


def write_data(root: Path, size: int) -> np.ndarray:
    import tensorstore as ts

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (size // 16,) * 3, dtype=np.uint8)
    data = np.kron(coarse, np.ones((16, 16, 16), np.uint8)) + rng.integers(0, 16, (size,) * 3, dtype=np.uint8)
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "vol.zarr") + "/"},
             "metadata": {"shape": [size] * 3, "chunks": [CHUNK] * 3, "dtype": "|u1"}},
            create=True).result().write(data).result()
    # The converted files: x, y, z order (the zarr array is z, y, x).
    ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(root / "conv") + "/"},
             "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
             "scale_metadata": {"key": "s0", "resolution": [1, 1, 1], "size": [size] * 3, "encoding": "raw",
                                "chunk_size": [CHUNK] * 3}},
            create=True).result().write(data.transpose(2, 1, 0)[..., None]).result()
    return data


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", str(root), "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        if "serving on " in line:
            return proc, line.split("serving on ", 1)[1].split("/ ", 1)[0].strip()
    raise RuntimeError("ngserve did not start")


async def run_pass(base: str, names: list[str], concurrency: int, encoding: str = "identity") -> tuple[float, int]:
    """Seconds to fetch every name, and the bytes received as sent (gzip is not inflated here:
    the client's CPU would be charged to the server on a shared machine)."""
    import aiohttp

    queue = list(names)
    total = 0
    headers = {"Accept-Encoding": encoding}

    async def worker(session):
        nonlocal total
        while queue:
            name = queue.pop()
            async with session.get(base + name, headers=headers) as resp:
                body = await resp.read()
                assert resp.status == 200, (resp.status, body[:200])
                total += len(body)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), auto_decompress=False) as session:
        start = time.perf_counter()
        await asyncio.gather(*[worker(session) for _ in range(concurrency)])
        return time.perf_counter() - start, total


def check(url: str, data: np.ndarray) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as r:
        got = np.frombuffer(r.read(), np.uint8).reshape(CHUNK, CHUNK, CHUNK)
    assert np.array_equal(got, data[:CHUNK, :CHUNK, :CHUNK]), url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cube, a multiple of 64")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ngserve-bench-views-"))
    proc = None
    try:
        data = write_data(tmp, args.size)
        grid = args.size // CHUNK
        names = [f"{i * CHUNK}-{(i + 1) * CHUNK}_{j * CHUNK}-{(j + 1) * CHUNK}_{k * CHUNK}-{(k + 1) * CHUNK}"
                 for i in range(grid) for j in range(grid) for k in range(grid)]
        proc, url = start_server(tmp)
        raw_base, view_base = f"{url}/conv/s0/", f"{url}/-/precomputed/vol.zarr/s0/"
        check(raw_base + names[0], data)
        results = {"raw": [asyncio.run(run_pass(raw_base, names, args.concurrency))]}
        first = names[0]
        results["miss"] = [asyncio.run(run_pass(view_base, names[1:], args.concurrency))]  # all uncomputed
        check(view_base + first, data)
        results["hit"] = [asyncio.run(run_pass(view_base, names, args.concurrency))]
        asyncio.run(run_pass(view_base, names, args.concurrency, "gzip"))  # compress each chunk once
        results["gzip"] = [asyncio.run(run_pass(view_base, names, args.concurrency, "gzip"))]
        results["raw"].append(asyncio.run(run_pass(raw_base, names, args.concurrency)))
        print(f"# {platform.node()} {platform.processor() or platform.machine()}, python {platform.python_version()}")
        print(f"# {args.size}^3 uint8, {len(names)} chunks of {CHUNK}^3, concurrency {args.concurrency}")
        rates = {}
        for label, runs in results.items():
            seconds, total = min(runs)
            count = len(names) - (1 if label == "miss" else 0)  # gzip: cached hits sent gzipped (MB/s on the wire)
            rates[label] = count / seconds
            print(f"{label:5s} {count / seconds:10.1f} chunks/s {total / seconds / 1e6:10.1f} MB/s")
        print(f"miss/raw {rates['miss'] / rates['raw']:.2f}x   hit/raw {rates['hit'] / rates['raw']:.2f}x   "
              f"gzip hit/raw {rates['gzip'] / rates['raw']:.2f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
