#!/usr/bin/env python3
"""Where a request's CPU goes: ngserve against bare aiohttp handlers, per request.

A companion to ``bench_serve.py``.  On the segmentation-like array of
``bench_serve.py --data labels`` (5 KiB chunks, so byte copying hardly counts), each
variant runs as one process with uvloop on 127.0.0.1 and gets 5 s of
``wrk -t 1 -c 32`` random chunk requests after a 2 s warm-up; the figure is the
server's CPU time (user + system) divided by the requests it answered, which other
jobs on a shared machine disturb far less than requests/s.  Variants:

- ``bare``: an aiohttp handler that stats the file and returns its cached bytes;
- ``like-ngserve``: the same, plus ngserve's response headers, two middlewares and a
  CORS ``on_response_prepare`` signal (aiohttp's share of ngserve's work);
- ``ngserve``: ``python -m server serve DIR --quiet`` (one worker).

    python scripts/bench_serve_overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import ARRAY, GRID, LUA, ORIGIN, free_port, loadavg, make_data, session_cpu_seconds  # noqa: E402

MINI = r'''
import email.utils, os, sys
from aiohttp import web
like, port, root = sys.argv[1] == "like-ngserve", int(sys.argv[2]), sys.argv[3]
cache = {}
HEADERS = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": '"0-0"',
           "Last-Modified": email.utils.formatdate(0, usegmt=True), "X-Content-Type-Options": "nosniff"}

async def chunk(request):
    path = os.path.join(root, request.match_info["p"])
    os.stat(path)
    data = cache.get(path)
    if data is None:
        with open(path, "rb") as f:
            data = cache[path] = f.read()
    return web.Response(body=data, headers=dict(HEADERS) if like else None)

async def cors(request, response):
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "Content-Range, Content-Length, Content-Encoding, ETag"

@web.middleware
async def middleware(request, handler):
    if request.method == "OPTIONS":
        return web.Response(status=204)
    try:
        return await handler(request)
    except web.HTTPException:
        raise

app = web.Application(middlewares=[middleware, middleware] if like else [])
if like:
    app.on_response_prepare.append(cors)
app.router.add_get("/{p:.*}", chunk)
import uvloop
uvloop.install()
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
'''


def measure(argv: list[str], port: int, lua: Path, cwd: Path | None = None) -> tuple[float, float]:
    """(CPU us per request, requests/s) of the server started by ``argv``."""
    proc = subprocess.Popen(argv, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/{ARRAY}/.zarray", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"server did not start: {argv}") from None
                time.sleep(0.1)
        wrk = ["wrk", "-t1", "-c32", "--timeout", "2s", "-s", str(lua), url]
        subprocess.run(wrk[:3] + ["-d2s"] + wrk[3:], capture_output=True, timeout=60)  # warm-up
        cpu0 = session_cpu_seconds(proc.pid)
        out = subprocess.run(wrk[:3] + ["-d5s"] + wrk[3:], capture_output=True, text=True, timeout=60).stdout
        cpu = session_cpu_seconds(proc.pid) - cpu0
        m = re.search(r"requests=(\d+) duration_us=(\d+)", out)
        if not m:
            raise RuntimeError(f"wrk failed: {out}")
        n, us = int(m.group(1)), int(m.group(2))
        return cpu / n * 1e6, n / (us / 1e6)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ngserve-overhead-"))
    repo = Path(__file__).resolve().parents[1]
    try:
        data = tmp / "data"
        data.mkdir()
        make_data(data, "labels")
        lua = tmp / "random_chunks.lua"
        lua.write_text(LUA.format(grid=GRID, last=GRID - 1, prefix=f"/{ARRAY}/", origin=ORIGIN))
        mini = tmp / "mini.py"
        mini.write_text(MINI)
        print(f"load average at start: {loadavg()}")
        results: dict[str, list[tuple[float, float]]] = {"bare": [], "like-ngserve": [], "ngserve": []}
        for i in range(args.rounds):
            for name in results:
                port = free_port()
                if name == "ngserve":
                    argv = [sys.executable, "-m", "server", "serve", str(data), "--port", str(port), "--quiet"]
                else:
                    argv = [sys.executable, str(mini), name, str(port), str(data)]
                r = measure(argv, port, lua, cwd=repo)
                results[name].append(r)
                print(f"round {i + 1}  {name:<14} {r[0]:6.1f} us CPU/request  {r[1]:8.0f} req/s  load {loadavg()}",
                      flush=True)
        print()
        for name, rs in results.items():
            print(f"{name:<14} median {statistics.median(r[0] for r in rs):6.1f} us CPU/request")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
