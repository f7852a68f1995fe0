"""Soak: mixed concurrent load on one ``ngserve serve`` for a while, watching its memory.

    python scripts/soak.py [--seconds 60] [--concurrency 8] [--sample 5] [--max-requests 2000000]

Writes the demo OME-Zarr (``ngserve demo``'s writer) and a 4 MiB file twice: once
for a local mount and once behind a real WebDAV server (wsgidav, basic auth), which
ngserve mounts as a remote.  A third mount, ``private``, is the local data again
with ``access = "token"``.  Then ``--concurrency`` loops send, until ``--seconds``
have passed or ``--max-requests`` were sent, a seeded random mix of: chunk and
metadata reads, Range reads of the large file, listings, the same through the
WebDAV mount, reads with a share token, 401s (the protected mount without one),
404s, and the views: every chunk of the demo image translated by ``/-/precomputed/``
(computed once, then from the chunk cache) and its ``/-/zarr/`` metadata.  Every
answer's status is checked against what that request must get.

ngserve's RSS (with any child processes) is sampled every ``--sample`` seconds and
printed as a table with the request counts.  Exits 1 if any answer was 5xx or not
what it should be, or if memory keeps growing: the last sample above
``--max-growth`` (1.2) times the sample at 20 s (or at a third of a shorter run).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from webdav_server import WebDAVServer  # noqa: E402

from server.commands.demo import DEMO_NAME as DEMO, write_demo  # noqa: E402
from server.tokens import mint  # noqa: E402

SECRET = os.urandom(32).hex()
BIG = 4 << 20  # past LocalStorage.SMALL_FILE: streamed, not cached
REFERENCE_AT = 20.0  # seconds: RSS here is the baseline the last sample is held to


def write_data(folder: Path) -> tuple[list[str], list[str]]:
    """The demo dataset and a large file in ``folder``: (file paths, folder paths) relative to it."""
    folder.mkdir(parents=True)
    write_demo(folder)
    (folder / "big.bin").write_bytes(os.urandom(BIG))
    files, dirs = [], [""]
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        (dirs if path.is_dir() else files).append(rel + ("/" if path.is_dir() else ""))
    return files, dirs


def start_ngserve(config: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=ROOT)
    for line in proc.stdout:
        m = re.search(r"serving on (http://\S+?)/ ", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
    raise RuntimeError(f"ngserve did not start:\n{log.read_text()}")


def view_chunk_urls(base: str, dataset: str) -> list[str]:
    """Every chunk of every scale (virtual ones included) of ``dataset`` through /-/precomputed/."""
    prefix = f"/-/precomputed/{dataset}"
    with urllib.request.urlopen(base + prefix + "/info", timeout=60) as resp:
        info = json.load(resp)
    urls = []
    for scale in info["scales"]:
        (cx, cy, cz), (ox, oy, oz) = scale["chunk_sizes"][0], scale["voxel_offset"]
        sx, sy, sz = scale["size"]
        for x, y, z in itertools.product(range(0, sx, cx), range(0, sy, cy), range(0, sz, cz)):
            box = [(ox + x, ox + min(x + cx, sx)), (oy + y, oy + min(y + cy, sy)), (oz + z, oz + min(z + cz, sz))]
            urls.append(f"{prefix}/{scale['key']}/" + "_".join(f"{a}-{b}" for a, b in box))
    return urls


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children (workers, when there are several)."""
    p = psutil.Process(pid)
    total = p.memory_info().rss
    for child in p.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Load:
    """The request mix: each kind is (weight, function giving (method path headers), allowed statuses)."""

    def __init__(self, files: list[str], dirs: list[str], token: str, seed: int, view_chunks: list[str]) -> None:
        self.files, self.dirs, self.token = files, dirs, token
        self.rng = random.Random(seed)
        chunk_files = [f for f in files if f != "big.bin"]
        r = self.rng

        def ranged(prefix: str):
            start = r.randrange(BIG - 1)
            return f"{prefix}/big.bin", {"Range": f"bytes={start}-{min(BIG - 1, start + r.randrange(1, 1 << 18))}"}

        self.kinds = {
            "data": (30, lambda: (f"/local/{r.choice(chunk_files)}", {}), {200}),
            "range": (15, lambda: ranged("/local"), {206}),
            "listing": (8, lambda: (f"/local/{r.choice(dirs)}", {"Accept": "text/html"}), {200}),
            "proxy": (15, lambda: (f"/remote/{r.choice(chunk_files)}", {}), {200}),
            "proxy range": (8, lambda: ranged("/remote"), {206}),
            "proxy listing": (4, lambda: (f"/remote/{r.choice(dirs)}", {"Accept": "text/html"}), {200}),
            "token": (8, lambda: (f"/-/t/{token}/private/{r.choice(chunk_files)}", {}), {200}),
            "401": (6, lambda: (f"/private/{r.choice(files)}", {}), {401}),
            "404": (6, lambda: (f"/local/{r.choice(dirs)}no-such-{r.randrange(10**6)}", {}), {404}),
            # The views: translated chunks (computed, then from the chunk cache) and repaired metadata.
            "view chunk": (8, lambda: (r.choice(view_chunks), {}), {200}),
            "view metadata": (3, lambda: (f"/-/zarr/local/{DEMO}/.zattrs", {}), {200}),
        }
        self.names = list(self.kinds)
        self.weights = [self.kinds[k][0] for k in self.names]

    def pick(self) -> tuple[str, str, dict, set[int]]:
        kind = self.rng.choices(self.names, self.weights)[0]
        _, make, allowed = self.kinds[kind]
        path, headers = make()
        return kind, path, headers, allowed


async def run_load(base: str, load: Load, seconds: float, concurrency: int, max_requests: int,
                   counts: Counter, errors: Counter, examples: list[str]) -> None:
    deadline = time.monotonic() + seconds
    sent = 0

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.monotonic() < deadline and sent < max_requests:  # bounded in time and count
            sent += 1
            kind, path, headers, allowed = load.pick()
            try:
                async with session.get(base + path, headers=headers, allow_redirects=False) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, detail = None, type(exc).__name__
            else:
                detail = str(status)
            counts[kind] += 1
            if status not in allowed:
                errors["5xx" if status and status >= 500 else kind] += 1
                if len(examples) < 10:
                    examples.append(f"{kind}: GET {path} -> {detail}")

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(loop(session) for _ in range(concurrency)))


async def sample_rss(pid: int, every: float, seconds: float, counts: Counter, errors: Counter,
                     samples: list[tuple[float, int, int, int]]) -> None:
    start = time.monotonic()
    while True:
        t = time.monotonic() - start
        samples.append((t, rss(pid), sum(counts.values()), sum(errors.values())))
        if t >= seconds:
            return
        await asyncio.sleep(min(every, max(0.0, seconds - t)))


async def soak(args: argparse.Namespace, base: str, pid: int, load: Load) -> tuple[list, Counter, Counter, list]:
    counts, errors, examples, samples = Counter(), Counter(), [], []
    sampler = asyncio.create_task(sample_rss(pid, args.sample, args.seconds, counts, errors, samples))
    await run_load(base, load, args.seconds, args.concurrency, args.max_requests, counts, errors, examples)
    await sampler
    return samples, counts, errors, examples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to load the server (default 60)")
    ap.add_argument("--concurrency", type=int, default=8, help="request loops at once (default 8)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    ap.add_argument("--max-requests", type=int, default=2_000_000, help="stop after this many requests in all")
    ap.add_argument("--max-growth", type=float, default=1.2, help="fail if the last RSS exceeds this times the reference")
    ap.add_argument("--workers", type=int, default=1, help="ngserve worker processes (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.seconds <= 0 or args.sample <= 0 or args.concurrency < 1:
        ap.error("--seconds and --sample must be positive, --concurrency at least 1")

    with tempfile.TemporaryDirectory(prefix="ngserve-soak-") as tmp:
        tmp = Path(tmp)
        print("writing data...", flush=True)
        files, dirs = write_data(tmp / "local")
        write_data(tmp / "upstream")
        (tmp / "upstream" / "big.bin").write_bytes((tmp / "local" / "big.bin").read_bytes())  # same bytes both ways
        dav = WebDAVServer(tmp / "upstream")
        (tmp / "secret").write_text(SECRET)
        config = tmp / "ngserve.toml"
        config.write_text(f"""
[server]
port = 0
workers = {args.workers}
access_log = false
data_dir = "state"
[auth]
secret_file = "secret"
[[mounts]]
name = "local"
source = "local"
[[mounts]]
name = "private"
source = "local"
access = "token"
[[mounts]]
name = "remote"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_env = "SOAK_DAV_PASSWORD"
""")
        log = tmp / "ngserve.log"
        proc, base = start_ngserve(config, dict(os.environ, SOAK_DAV_PASSWORD=dav.password), log)
        try:
            token = mint(SECRET.encode(), "private", "", 24 * 3600)
            load = Load(files, dirs, token, args.seed, view_chunk_urls(base, f"local/{DEMO}"))
            print(f"soaking {base} for {args.seconds:g} s with {args.concurrency} loops...", flush=True)
            samples, counts, errors, examples = asyncio.run(soak(args, base, proc.pid, load))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            dav.kill()
        tracebacks = log.read_text().count("Traceback")
    return report(args, samples, counts, errors, examples, tracebacks)


def report(args, samples, counts, errors, examples, tracebacks: int) -> int:
    print(f"\n{'t (s)':>7} {'RSS (MiB)':>10} {'requests':>10} {'errors':>7}")
    for t, rss_bytes, n, e in samples:
        print(f"{t:7.1f} {rss_bytes / 2**20:10.1f} {n:10d} {e:7d}")
    total = sum(counts.values())
    print(f"\n{total} requests, {total / args.seconds:.0f}/s")
    for kind in sorted(counts):
        print(f"  {kind:14} {counts[kind]:8d}   errors {errors.get(kind, 0)}")
    if errors.get("5xx"):
        print(f"  {'5xx':14} {'':8}   errors {errors['5xx']}")
    for line in examples:
        print("  e.g. " + line)
    reference_at = min(REFERENCE_AT, args.seconds / 3)
    reference = next((s for s in samples if s[0] >= reference_at), samples[0])
    last = samples[-1]
    growth = last[1] / reference[1]
    print(f"\nRSS at {last[0]:.0f} s is {growth:.2f}x the RSS at {reference[0]:.0f} s (limit {args.max_growth}x)")
    failed = []
    if growth > args.max_growth:
        failed.append("RSS kept growing")
    if sum(errors.values()):
        failed.append(f"{sum(errors.values())} answers were wrong ({errors.get('5xx', 0)} of them 5xx)")
    if tracebacks:
        failed.append(f"the server logged {tracebacks} tracebacks")
    print("FAIL: " + "; ".join(failed) if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
