#!/usr/bin/env python3
"""Benchmark ``ngserve serve`` against what people run today and against nginx.

One run, same data, same load, three servers, one after another:

1. ``ngserve serve DIR --workers 2 --quiet``
2. Python's ``http.server.ThreadingHTTPServer`` with an ``Access-Control-Allow-Origin``
   header: the ``cors_webserver.py`` / ``python -m http.server`` set-up users run today
   (HTTP/1.0, a thread and a connection per request, as those scripts default to)
3. nginx: sendfile on, 2 workers, access_log off, run as a non-daemon from a temporary
   prefix

and, with ``--deploy``, the institutional set-ups of deploy/nginx-ngserve.conf (nginx with 2
workers in front, keep-alive to its upstreams):

4. ``accel``: ngserve (2 workers, ``accel_redirect``) checks each request and nginx sends the
   file with sendfile (X-Accel-Redirect)
5. ``one``: a single ngserve process (``--workers 1``), no nginx
6. ``replicas``: nginx balancing between two single-process ngserve replicas
7. ``verdicts``: nginx from ``ngserve nginx-config`` sends every file itself and asks ngserve
   (2 workers) only for a verdict per folder (``auth_request`` to ``/-/authz``, cached for
   ``verdict_ttl``); the array is on a protected mount (``access = "users"``) and wrk sends the
   user's basic-auth header with every request

The data is a 512^3 uint8 zarr v2 array in 64^3 chunks (512 chunk files), written
with tensorstore using zarr-python's default compressor, blosc lz4 level 5 with byte
shuffle.  The voxels are blocky structure plus noise; lz4 finds nothing to squeeze
in the noise, so every chunk is its full 256 KiB, the size of a raw EM chunk.
``--data labels`` drops the noise: segmentation-like chunks of a few KiB, where
per-request overhead rather than byte copying decides.

The load is ``wrk``: keep-alive, 32 connections, 2 threads, 10 s per server, each
request a uniformly random chunk key made by a Lua script.  All three servers run
side by side (idle when not loaded); after an unmeasured warm-up of each, they are
measured in turn for 3 rounds and the medians reported, so that other people's load on
a shared machine falls on all three alike.  Before loading a server the script checks
that it answers a chunk with the right bytes and a CORS header.

Everything listens on 127.0.0.1 only, every child is bounded by a timeout, and the
temporary folder and all processes are removed at the end, also on Ctrl-C.

    python scripts/bench_serve.py                # the numbers in BENCHMARKS.md
    python scripts/bench_serve.py --duration 5   # quicker
    python scripts/bench_serve.py --deploy --only ngserve --only nginx --only accel --only one --only replicas
    python scripts/bench_serve.py --only nginx --only accel --only verdicts
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPE = 512
CHUNK = 64
CHUNK_OF = {"image": 64, "labels": 64, "large": 128}  # large: 2 MiB chunks, above the 1 MiB kept in memory
ARRAY = "vol.zarr"
COMPRESSOR = {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}
ORIGIN = "http://localhost:8080"  # browsers send one; servers must answer with CORS

LUA = """
-- Random chunk keys of a {grid}^3 zarr v2 array at {prefix}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  math.randomseed(os.time() * 1009 + id * 7919)
  wrk.headers["Origin"] = "{origin}"{headers}
end
function request()
  local path = string.format("{prefix}%d.%d.%d",
    math.random(0, {last}), math.random(0, {last}), math.random(0, {last}))
  return wrk.format("GET", path)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

THREADING_SERVER = """
import functools, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

class CORSRequestHandler(SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()
    def log_message(self, *args):
        pass

handler = functools.partial(CORSRequestHandler, directory=sys.argv[2])
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""

# Both nginx set-ups: 2 workers, sendfile, no access log, everything in a temporary prefix.
NGINX_HTTP = """
{user}
worker_processes 2;
pcre_jit on;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
"""

NGINX_CONF = NGINX_HTTP + """    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ add_header Access-Control-Allow-Origin * always; }}
    }}
}}
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: str
    mib_s: float
    load_before: str
    load_after: str
    cpu_us: float  # server CPU (user+system, all its processes) per request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def versions() -> str:
    import aiohttp

    out = [f"aiohttp {aiohttp.__version__}"]
    try:
        import uvloop

        out.append(f"uvloop {uvloop.__version__}")
    except ImportError:
        out.append("no uvloop")
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    out += [nginx.replace("nginx version: ", ""), wrk.split(" Copyright")[0]]
    return ", ".join(out)


# -- data ------------------------------------------------------------------------------
def make_data(root: Path, kind: str = "image") -> tuple[int, float]:
    global CHUNK
    CHUNK = CHUNK_OF[kind]
    """Write the 512^3 array; return (chunk files, mean chunk bytes).

    ``image``: blocky structure plus noise, chunks about as big as raw (EM-like).
    ``labels``: the blocky structure alone, like a segmentation: chunks of a few KiB,
    so per-request overhead rather than byte copying decides the figures.
    """
    import tensorstore as ts

    rng = np.random.default_rng(20240531)
    store = ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root / ARRAY)},
            "metadata": {
                "shape": [SHAPE] * 3,
                "chunks": [CHUNK] * 3,
                "dtype": "|u1",
                "compressor": COMPRESSOR,
                "fill_value": 0,
            },
        },
        create=True,
        delete_existing=True,
    ).result()
    # Blocky structure: 8^3 blocks of one level each, so every chunk is different.
    coarse = rng.integers(16, 200, size=(SHAPE // 8,) * 3, dtype=np.uint8)
    for z in range(0, SHAPE, CHUNK):
        base = coarse[z // 8 : (z + CHUNK) // 8].repeat(8, 0).repeat(8, 1).repeat(8, 2)
        if kind in ("image", "large"):
            base = base + rng.integers(0, 32, size=base.shape, dtype=np.uint8)
        store[z : z + CHUNK].write(base).result()
    chunks = [p for p in (root / ARRAY).iterdir() if not p.name.startswith(".")]
    return len(chunks), sum(p.stat().st_size for p in chunks) / len(chunks)


# -- servers ---------------------------------------------------------------------------
class Server:
    headers: dict[str, str] = {}  # what every request must send (credentials), wrk's included

    def __init__(self, name: str, argv: list[str], port: int, cwd: Path | None = None) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        # A session of its own, so stopping it also stops its workers.
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)

    def wait_ready(self, path: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=self.headers),
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_ngserve(data: Path | None, tmp: Path, src: Path | None = None, name: str = "ngserve --workers 2",
                  workers: int = 2, extra: list[str] | None = None) -> Server:
    """``python -m server`` from ``src`` (default: this checkout); the working folder
    comes first on sys.path, so another checkout's code runs, e.g. for before/after.
    ``data`` None: the mounts come from a ``--config`` in ``extra``."""
    port = free_port()
    srv = Server(name, [sys.executable, "-m", "server", "serve", *([str(data)] if data else []), "--port", str(port),
                        "--workers", str(workers), "--quiet", *(extra or [])], port,
                 cwd=src or Path(__file__).resolve().parents[1])
    srv.wait_ready("/-/health")
    # Every worker binds its own socket; wait until all answer before loading.
    pids, deadline = set(), time.monotonic() + 30
    while len(pids) < workers and time.monotonic() < deadline:
        with urllib.request.urlopen(srv.url + "/-/health", timeout=2) as r:
            pids.add(re.search(rb'"pid": ?(\d+)', r.read()).group(1))
    if len(pids) < workers:
        raise RuntimeError(f"{name}: only {len(pids)} of {workers} workers answered")
    return srv


class Group:
    """Several processes measured as one server: nginx in front of ngserve replicas."""

    def __init__(self, name: str, front: Server, members: list[Server]) -> None:
        self.name, self.url, self.members = name, front.url, [front, *members]
        self.headers = front.headers
        self.sessions = [m.proc.pid for m in self.members]

    def stop(self) -> None:
        for m in self.members:
            m.stop()


FRONT_CONF = NGINX_HTTP + """    upstream ngserve {{
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ngserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Request-ID $request_id;
            proxy_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            proxy_next_upstream error timeout http_502;
        }}
        location /_ngserve_files/ {{
            internal;
            alias {root}/;
            max_ranges 1;
            add_header Content-Encoding $upstream_http_content_encoding;
            add_header Vary $upstream_http_vary;
            add_header Access-Control-Allow-Origin $upstream_http_access_control_allow_origin;
            add_header Access-Control-Expose-Headers $upstream_http_access_control_expose_headers;
            add_header X-Content-Type-Options $upstream_http_x_content_type_options;
            add_header X-Request-ID $upstream_http_x_request_id;
        }}
    }}
}}
"""


def start_front(name: str, tmp: Path, data: Path, members: list[Server]) -> Group:
    """nginx as deploy/nginx-ngserve.conf sets it up, in front of ``members``."""
    port = free_port()
    prefix = tmp / f"front-{port}"
    (prefix / "tmp").mkdir(parents=True)
    user = "user root;" if os.geteuid() == 0 else ""
    servers = "".join(f"        server 127.0.0.1:{m.port};\n" for m in members)
    conf = prefix / "nginx.conf"
    conf.write_text(FRONT_CONF.format(user=user, prefix=prefix, port=port, root=data, servers=servers))
    front = Server("nginx front", ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)], port)
    group = Group(name, front, members)
    try:
        front.wait_ready(f"/{ARRAY}/.zarray")
    except BaseException:
        group.stop()  # the replicas too: they are nobody else's to stop
        raise
    return group


def start_accel(data: Path, tmp: Path) -> Group:
    cfg = tmp / "accel.toml"
    cfg.write_text('[server]\naccel_redirect = "/_ngserve_files/"\n')
    backend = start_ngserve(data, tmp, extra=["--config", str(cfg)])
    return start_front("nginx + ngserve accel_redirect", tmp, data, [backend])


VERDICT_USER, VERDICT_PASSWORD = "bench", "bench-password"


def start_verdicts(data: Path, tmp: Path) -> Group:
    """nginx configured by ``ngserve nginx-config`` in front of ngserve (2 workers) guarding the
    data with ``access = "users"``: nginx sends the files, ngserve gives a verdict per folder."""
    import base64

    repo = Path(__file__).resolve().parents[1]
    (tmp / "verdict-secret").write_text(os.urandom(32).hex())
    user = subprocess.run([sys.executable, "-m", "server", "user", "add", VERDICT_USER, "--password-stdin"],
                          input=VERDICT_PASSWORD, capture_output=True, text=True, check=True, cwd=repo, timeout=60).stdout
    cfg = tmp / "verdicts.toml"
    cfg.write_text('[auth]\nsecret_file = "verdict-secret"\ntrusted_proxies = ["127.0.0.1"]\n\n'
                   f'[[mounts]]\nname = ""\nsource = "{data}"\naccess = "users"\n\n{user}')
    backend = start_ngserve(None, tmp, extra=["--config", str(cfg)], name="ngserve for verdicts")
    port = free_port()
    prefix = tmp / f"verdicts-{port}"
    (prefix / "tmp").mkdir(parents=True)
    generated = subprocess.run(
        [sys.executable, "-m", "server", "nginx-config", "--config", str(cfg), "--upstream", f"127.0.0.1:{backend.port}",
         "--listen", f"127.0.0.1:{port}", "--cache-dir", str(prefix / "verdicts")],
        capture_output=True, text=True, check=True, cwd=repo, timeout=60).stdout
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_HTTP.format(user="user root;" if os.geteuid() == 0 else "", prefix=prefix)
                    + generated + "}\n")
    front = Server("nginx + ngserve verdicts", ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"),
                                                 "-c", str(conf)], port)
    creds = base64.b64encode(f"{VERDICT_USER}:{VERDICT_PASSWORD}".encode()).decode()
    front.headers = {"Authorization": "Basic " + creds}
    group = Group(front.name, front, [backend])
    try:
        front.wait_ready(f"/{ARRAY}/.zarray")
    except BaseException:
        group.stop()
        raise
    return group


def start_one(data: Path, tmp: Path) -> Server:
    return start_ngserve(data, tmp, workers=1, name="ngserve, one process")


def start_replicas(data: Path, tmp: Path) -> Group:
    members = [start_ngserve(data, tmp, workers=1, name=f"replica {i + 1}") for i in range(2)]
    return start_front("nginx + 2 replicas (1 process each)", tmp, data, members)


def start_threading(data: Path, tmp: Path) -> Server:
    port = free_port()
    script = tmp / "threading_cors_server.py"
    script.write_text(THREADING_SERVER)
    srv = Server("ThreadingHTTPServer+CORS", [sys.executable, str(script), str(port), str(data)], port)
    srv.wait_ready(f"/{ARRAY}/.zarray")
    return srv


def start_nginx(data: Path, tmp: Path) -> Server:
    port = free_port()
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    # Running as root, nginx's workers would drop to "nobody", who cannot read the
    # private temporary folder; keep them as the invoking user.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=port, root=data))
    srv = Server("nginx (sendfile, 2 workers)", ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"),
                                                  "-c", str(conf)], port)
    srv.wait_ready(f"/{ARRAY}/.zarray")
    return srv


def check_answers(srv: Server, data: Path) -> None:
    """One chunk, exact bytes and a CORS header: a fast wrong server is no use."""
    key = f"{ARRAY}/3.1.2"
    req = urllib.request.Request(f"{srv.url}/{key}", headers={"Origin": ORIGIN, **srv.headers})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = r.read()
        cors = r.headers.get("Access-Control-Allow-Origin")
    if body != (data / key).read_bytes():
        raise RuntimeError(f"{srv.name}: wrong bytes for {key}")
    if cors not in ("*", ORIGIN):
        raise RuntimeError(f"{srv.name}: no CORS header")


# -- load ------------------------------------------------------------------------------
def run_wrk(url: str, lua: Path, duration: int, connections: int, threads: int) -> dict[str, int]:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "2s",
           "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^RESULT (.*)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def session_cpu_seconds(sid: int) -> float:
    """User+system CPU of every live process in session ``sid`` (a server and its workers).

    Requests/s on a shared machine swing with other people's load; the CPU a server
    spends per request swings much less, so it is the steadier before/after figure.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def measure(srv: Server, lua: Path, args: argparse.Namespace) -> Result:
    before = loadavg()
    sessions = getattr(srv, "sessions", None) or [srv.proc.pid]
    cpu0 = sum(map(session_cpu_seconds, sessions))
    r = run_wrk(srv.url, lua, args.duration, args.connections, args.threads)
    cpu = sum(map(session_cpu_seconds, sessions)) - cpu0
    after = loadavg()
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    detail = ", ".join(f"{k} {r[k]}" for k in ("connect", "read", "write", "status", "timeout") if r[k])
    seconds = r["duration_us"] / 1e6
    return Result(srv.name, r["requests"] / seconds, r["p50_us"] / 1000, r["p99_us"] / 1000, r["max_us"] / 1000,
                  errors, detail or "none", r["bytes"] / seconds / 2**20, before, after,
                  cpu / max(r["requests"], 1) * 1e6)


def row(label: str, r: Result) -> str:
    return (f"{label:<34} {r.rps:>8.0f} {r.mib_s:>7.0f} {r.p50_ms:>7.2f} {r.p99_ms:>8.2f} {r.max_ms:>7.1f} "
            f"{r.cpu_us:>8.0f}  "
            f"{r.errors:<6}  {r.load_before} -> {r.load_after}")


def deploy_ratios(per: dict[str, list[Result]], key: dict[str, str]) -> None:
    """The deployment figures of issue 13: accel against nginx and plain ngserve; two replicas
    behind nginx against one process.  Ratios of the same round, measured back to back."""
    def ratio(a: str, b: str) -> str:
        rs = [x.rps / y.rps for x, y in zip(per[key[a]], per[key[b]])]
        return f"{statistics.median(rs):.2f}x requests/s ({', '.join(f'{x:.2f}x' for x in rs)})"

    if "accel" in key and "nginx" in key:
        m = statistics.median(x.rps / y.rps for x, y in zip(per[key["accel"]], per[key["nginx"]]))
        print(f"accel / nginx:                 {ratio('accel', 'nginx')}  target >= 0.9x: "
              f"{'met' if m >= 0.9 else 'MISSED'}")
    if "verdicts" in key and "nginx" in key:
        m = statistics.median(x.rps / y.rps for x, y in zip(per[key["verdicts"]], per[key["nginx"]]))
        print(f"verdicts / nginx:              {ratio('verdicts', 'nginx')}  target >= 0.9x: "
              f"{'met' if m >= 0.9 else 'MISSED'}")
    if "accel" in key and "ngserve" in key:
        print(f"accel / plain ngserve:         {ratio('accel', 'ngserve')}")
    if "replicas" in key and "one" in key:
        print(f"2 replicas behind nginx / one process: {ratio('replicas', 'one')}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of measured load per server and round (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load per server first (default 3)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measure the servers in turn this many times and report medians (default 3): on a "
                        "shared machine, interleaving spreads other people's load over all servers alike")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--data", choices=["image", "labels", "large"], default="image",
                   help="image: noisy, ~256 KiB chunks (default); labels: blocky, chunks of a few KiB; "
                        "large: noisy 2 MiB chunks, which ngserve sends with sendfile rather than from memory")
    p.add_argument("--deploy", action="store_true",
                   help="also the deployment set-ups: accel (nginx sends what ngserve allows), one (a single "
                        "ngserve process), replicas (nginx in front of two single-process replicas) and verdicts "
                        "(nginx from `ngserve nginx-config` sends every file, ngserve judges once per folder)")
    p.add_argument("--only", choices=["ngserve", "threading", "nginx", "accel", "one", "replicas", "verdicts"],
                   action="append",
                   help="run only these servers (repeatable); ratios need ngserve and the other")
    p.add_argument("--baseline-src", type=Path, metavar="DIR",
                   help="also measure ngserve from another checkout (e.g. before a change), as 'baseline'")
    args = p.parse_args()
    os.environ["PATH"] += os.pathsep + "/usr/sbin"  # nginx lives there on Debian
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench_serve: {tool} is not installed (Debian: apt-get install {tool})", file=sys.stderr)
            return 2

    print(f"machine: {machine()}")
    print(f"software: {versions()}")
    print(f"load average at start: {loadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="ngserve-bench-"))
    servers: list[Server] = []
    rounds: list[list[Result]] = []
    labels: dict[str, str] = {}  # starter -> the name its results carry
    try:
        data = tmp / "data"
        data.mkdir()
        t0 = time.monotonic()
        n, mean = make_data(data, args.data)
        print(f"data ({args.data}): {SHAPE}^3 uint8 zarr v2, {CHUNK}^3 chunks, blosc lz4 clevel 5 shuffle: {n} chunk files, "
              f"mean {mean / 1024:.1f} KiB ({mean / CHUNK**3:.0%} of raw), written in {time.monotonic() - t0:.1f} s")
        grid = SHAPE // CHUNK

        def lua_for(srv: Server) -> Path:
            """The load script, sending the server's credentials (if any) with every request."""
            lines = "".join(f'\n  wrk.headers["{k}"] = "{v}"' for k, v in srv.headers.items())
            path = tmp / f"random_chunks-{id(srv)}.lua"
            path.write_text(LUA.format(grid=grid, last=grid - 1, prefix=f"/{ARRAY}/", origin=ORIGIN, headers=lines))
            return path

        print(f"load: wrk -t {args.threads} -c {args.connections} -d {args.duration}s --timeout 2s -s random_chunks.lua "
              f"(keep-alive, uniformly random chunk keys, Origin header), {args.rounds} rounds, servers in turn; "
              f"{args.warmup} s unmeasured warm-up per server first\n")

        starters = {"ngserve": start_ngserve, "threading": start_threading, "nginx": start_nginx}
        if args.deploy or set(args.only or ()) & {"accel", "one", "replicas", "verdicts"}:
            starters.update(accel=start_accel, one=start_one, replicas=start_replicas, verdicts=start_verdicts)
        if args.baseline_src:
            starters["baseline"] = lambda d, t: start_ngserve(d, t, args.baseline_src, "baseline ngserve --workers 2")
        for key in (args.only or [k for k in starters if k != "baseline"]) + (["baseline"] if args.baseline_src else []):
            srv = starters[key](data, tmp)
            labels[key] = srv.name
            servers.append(srv)
            check_answers(srv, data)
            run_wrk(srv.url, lua_for(srv), args.warmup, args.connections, args.threads)  # warm caches; not counted
        head = (f"{'round  server':<34} {'req/s':>8} {'MiB/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>7} "
                f"{'CPU us/req':>8}  "
                f"errors  load before -> after")
        print(head)
        print("-" * len(head))
        for i in range(args.rounds):
            results = []
            for srv in servers:
                time.sleep(1)
                results.append(measure(srv, lua_for(srv), args))
                print(row(f"{i + 1}      {srv.name}", results[-1]), flush=True)
            rounds.append(results)
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    names = [r.name for r in rounds[0]]
    per = {name: [rs[k] for rs in rounds] for k, name in enumerate(names)}
    print(f"median of {len(rounds)} rounds:")
    print(f"{'server':<34} {'req/s':>8} {'p99 ms':>8} {'CPU us/req':>10} {'errors':>7}")
    for name in names:
        rs = per[name]
        print(f"{name:<34} {statistics.median(r.rps for r in rs):>8.0f} "
              f"{statistics.median(r.p99_ms for r in rs):>8.2f} {statistics.median(r.cpu_us for r in rs):>10.0f} "
              f"{sum(r.errors for r in rs):>7}"
              + ("   (" + "; ".join(r.error_detail for r in rs if r.errors) + ")" if any(r.errors for r in rs) else ""))
    key = {{"threading": "ThreadingHTTPServer+CORS"}.get(k, k): name for k, name in labels.items()}
    if "ngserve" in key:
        ng = per[key["ngserve"]]
        print()

        def ratios(other: str) -> list[float]:  # same round, measured back to back
            return [a.rps / b.rps for a, b in zip(ng, per[key[other]])]

        if "ThreadingHTTPServer+CORS" in key:
            rs = ratios("ThreadingHTTPServer+CORS")
            m = statistics.median(rs)
            print(f"ngserve / ThreadingHTTPServer: {m:.1f}x requests/s, median of rounds "
                  f"({', '.join(f'{x:.1f}x' for x in rs)})  target >= 5x: {'met' if m >= 5 else 'MISSED'}")
        if "baseline" in key:
            rs = ratios("baseline")
            cpu = [b.cpu_us / a.cpu_us for a, b in zip(ng, per[key["baseline"]])]
            print(f"ngserve / baseline ngserve:    {statistics.median(rs):.2f}x requests/s, median of rounds "
                  f"({', '.join(f'{x:.2f}x' for x in rs)}); baseline needs {statistics.median(cpu):.2f}x the CPU "
                  f"per request ({', '.join(f'{x:.2f}x' for x in cpu)})")
        if "nginx" in key:
            rs = ratios("nginx")
            m = statistics.median(rs)
            print(f"ngserve / nginx:               {m:.0%} of requests/s, median of rounds "
                  f"({', '.join(f'{x:.0%}' for x in rs)})  target >= 50%: {'met' if m >= 0.5 else 'MISSED'}")
        p99 = statistics.median(r.p99_ms for r in ng)
        print(f"ngserve p99 latency:           {p99:.1f} ms median of rounds (worst {max(r.p99_ms for r in ng):.1f} ms)"
              f"  target < 50 ms: {'met' if p99 < 50 else 'MISSED'}")
        errors = sum(r.errors for r in ng)
        print(f"ngserve errors:                {errors}  target 0: {'met' if errors == 0 else 'MISSED'}")
    print()
    deploy_ratios(per, key)
    print(f"\nload average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have stopped the servers and removed the data
        print("bench_serve: interrupted; servers stopped, temporary data removed", file=sys.stderr)
        sys.exit(130)
