"""Benchmark: random 64³ chunk reads through ngserve's WebDAV proxy vs straight from the WebDAV server.

    python scripts/bench_proxy.py [--size 384] [--requests 600] [--concurrency 16] [--rounds 3]

Writes an uncompressed uint8 zarr v2 volume with 64³ chunks (256 KiB each),
serves it with wsgidav (basic auth, loopback) and mounts that in ``ngserve
serve --config``.  Each round reads the same random chunk sequence both ways,
alternating which goes first.  Then it reads one metadata file many times
through the proxy and counts how many of those reached the WebDAV server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import tensorstore as ts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from webdav_server import WebDAVServer  # noqa: E402

CHUNK = 64


def write_volume(root: Path, size: int) -> list[str]:
    """The volume's chunk keys."""
    data = np.random.default_rng(0).integers(0, 256, (size,) * 3, dtype=np.uint8)
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "vol.zarr")},
             "metadata": {"shape": [size] * 3, "chunks": [CHUNK] * 3, "dtype": "|u1", "compressor": None}},
            create=True).result().write(data).result()
    n = size // CHUNK
    return [f"{z}.{y}.{x}" for z in range(n) for y in range(n) for x in range(n)]


def start_ngserve(config: Path, env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--config", str(config), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        m = re.search(r"serving on (http://\S+?)/ ", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("ngserve did not start")


async def read_all(base: str, keys: list[str], concurrency: int, headers: dict) -> tuple[float, int]:
    """Seconds and bytes to GET every key, ``concurrency`` at a time."""
    queue = list(keys)
    total = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal total
        while queue:
            key = queue.pop()
            async with session.get(f"{base}/vol.zarr/{key}") as r:
                body = await r.read()
                assert r.status == 200 and len(body) == CHUNK**3, (r.status, len(body))
                total += len(body)

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.get(f"{base}/vol.zarr/.zarray") as r:  # warm the connection
            await r.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - start, total


async def metadata_reads(base: str, n: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"{base}/vol.zarr/.zarray") as r:
                assert r.status == 200
                await r.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=384, help="edge of the cubic volume (multiple of 64)")
    ap.add_argument("--requests", type=int, default=600, help="random chunk reads per round and way")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        tmp = Path(tmp)
        (tmp / "dav").mkdir()
        keys = write_volume(tmp / "dav", args.size)
        dav = WebDAVServer(tmp / "dav")
        config = tmp / "ngserve.toml"
        config.write_text(f'[server]\nport = 0\n[[mounts]]\nname = "dav"\nsource = "webdav+{dav.url}/"\n'
                          f'[mounts.upstream]\nusername = "{dav.user}"\npassword_env = "DAV_PW"\n')
        proc, url = start_ngserve(config, dict(os.environ, DAV_PW=dav.password))
        try:
            auth = {"Authorization": "Basic " + base64.b64encode(f"{dav.user}:{dav.password}".encode()).decode()}
            rng = random.Random(1)
            rows = []
            for i in range(args.rounds):
                sample = [rng.choice(keys) for _ in range(args.requests)]
                ways = [("direct", dav.url, auth), ("proxy", url + "/dav", {})]
                if i % 2:
                    ways.reverse()
                result = {}
                for name, base, a in ways:
                    secs, nbytes = asyncio.run(read_all(base, sample, args.concurrency, a))
                    result[name] = nbytes / secs / 1e6
                rows.append(result)
            dav.reset_stats()
            asyncio.run(metadata_reads(url + "/dav", 500))
            upstream_meta = dav.stats()["counts"].get("GET /vol.zarr/.zarray", 0)
        finally:
            proc.terminate()
            proc.wait()
            dav.kill()

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"random 64³ uint8 chunks (256 KiB), {args.requests} reads per way per round, "
          f"concurrency {args.concurrency}, volume {args.size}³")
    print("| round | direct MB/s | proxy MB/s | proxy / direct |")
    print("|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['direct']:.1f} | {r['proxy']:.1f} | {r['proxy'] / r['direct']:.0%} |")
    d = float(np.median([r["direct"] for r in rows]))
    p = float(np.median([r["proxy"] for r in rows]))
    print(f"| median | {d:.1f} | {p:.1f} | {p / d:.0%} |")
    print(f"\n500 reads of vol.zarr/.zarray through the proxy reached the WebDAV server {upstream_meta} time(s).")
    print(f"load: {load}")


if __name__ == "__main__":
    main()
