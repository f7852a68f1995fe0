"""Prometheus metrics: what every request, upstream and cache did, served at ``/-/metrics``.

With ``--workers N`` each worker writes its figures to memory-mapped files in
the folder named by ``PROMETHEUS_MULTIPROC_DIR`` (the runner makes and removes
it) and any worker answering a scrape sums all of them.  prometheus_client
picks that mode when it is first imported, so nothing here may be imported by
the parent process before the runner has set the variable.

Requests are counted in plain Python (a dictionary lookup, three additions
and a bisect: about a fifth of what prometheus_client's locked increments and
histogram observation cost per request) and handed to prometheus_client once a
second and before each scrape; figures that change slowly (open connections,
bytes held by caches) are sampled then too.  So with several workers a scrape
shows the other workers' requests as of at most a second ago.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
import weakref

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY, disable_created_metrics, multiprocess

disable_created_metrics()  # a *_created series per counter doubles the scrape for nothing Prometheus needs

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("ngserve_requests", "Requests answered, by route kind and status", ["kind", "status"])
RESPONSE_BYTES = Counter("ngserve_response_bytes", "Bytes sent (headers and body), by route kind", ["kind"])
LATENCY = Histogram("ngserve_request_duration_seconds", "Time to answer a request, by route kind", ["kind"],
                    buckets=_LATENCY)
AUTH_FAILURES = Counter("ngserve_auth_failures", "Answers refusing a client (401, 403, 429)", ["status"])
UPSTREAM_REQUESTS = Counter("ngserve_upstream_requests", "Requests sent to a remote mount's upstream", ["mount"])
UPSTREAM_ERRORS = Counter("ngserve_upstream_errors",
                          "Upstream requests that failed (no answer, timeout, 5xx, refused credentials)", ["mount"])
UPSTREAM_LATENCY = Histogram("ngserve_upstream_duration_seconds", "Time until an upstream's answer headers",
                             ["mount"], buckets=_LATENCY)
CACHE_HITS = Counter("ngserve_cache_hits", "Reads answered from a cache", ["cache"])
CACHE_MISSES = Counter("ngserve_cache_misses", "Reads a cache could not answer", ["cache"])
CACHE_BYTES = Gauge("ngserve_cache_bytes", "Bytes held in memory by a cache", ["cache"], multiprocess_mode="livesum")
ACCEL_BYTES = Counter("ngserve_accel_bytes",
                      "Body bytes handed to nginx to send (X-Accel-Redirect): the file, or the range asked")
LOG_DROPPED = Counter("ngserve_log_dropped",
                      "Log lines dropped because the log output (stderr) was not read fast enough")
CONNECTIONS = Gauge("ngserve_open_connections", "Open client connections", multiprocess_mode="livesum")

_pending: dict[tuple[str, int], list] = {}  # (kind, status) -> [count, bytes, seconds, per-bucket counts]
_accel_pending = [0]  # bytes handed to nginx since the last flush
_caches: list[tuple[str, weakref.ref]] = []  # (cache name, ByteBudgetLRU) sampled for CACHE_BYTES
_servers: weakref.WeakSet = weakref.WeakSet()  # aiohttp Servers whose connections are counted


def observe_request(kind: str, status: int, sent: int, seconds: float) -> None:
    """Count one answered request (called by the access logger, once the body is out)."""
    acc = _pending.get((kind, status))
    if acc is None:
        acc = _pending[(kind, status)] = [0, 0, 0.0, [0] * (len(_LATENCY) + 1)]
    acc[0] += 1
    acc[1] += sent
    acc[2] += seconds
    acc[3][bisect_left(_LATENCY, seconds)] += 1  # the first bucket whose bound is >= seconds; last: +Inf


def observe_accel(size: int) -> None:
    """Count body bytes nginx sends for us: ``ngserve_response_bytes`` sees only the header answer."""
    _accel_pending[0] += size


def _flush() -> None:
    """Hand the requests counted since the last flush to prometheus_client (on the event loop)."""
    if _accel_pending[0]:
        ACCEL_BYTES.inc(_accel_pending[0])
        _accel_pending[0] = 0
    for (kind, status), acc in _pending.items():
        count, sent, seconds, buckets = acc
        if not count:
            continue
        acc[:] = [0, 0, 0.0, [0] * len(buckets)]
        REQUESTS.labels(kind, str(status)).inc(count)
        RESPONSE_BYTES.labels(kind).inc(sent)
        if status in (401, 403, 429):
            AUTH_FAILURES.labels(str(status)).inc(count)
        # Histogram has no public way to add many observations at once; its bucket and sum
        # values (plain, or memory-mapped in multi-process mode) take an amount.
        child = LATENCY.labels(kind)
        child._sum.inc(seconds)
        for i, n in enumerate(buckets):
            if n:
                child._buckets[i].inc(n)


def watch_cache(name: str, lru) -> None:
    """Report ``lru.used`` (a :class:`server.lru.ByteBudgetLRU`) as the bytes held by cache ``name``."""
    _caches.append((name, weakref.ref(lru)))


watching_connections = False


def watch_server(server) -> None:
    """Count the open connections of an aiohttp ``web.Server`` (its ``connections``)."""
    global watching_connections
    watching_connections = True
    if server is not None and hasattr(server, "connections"):
        _servers.add(server)


def _sample() -> None:
    held: dict[str, int] = {}
    alive = []
    for name, ref in _caches:
        lru = ref()
        if lru is not None:
            held[name] = held.get(name, 0) + lru.used
            alive.append((name, ref))
    _caches[:] = alive
    for name, used in held.items():
        CACHE_BYTES.labels(name).set(used)
    CONNECTIONS.set(sum(len(s.connections) for s in _servers))


async def _sampler(app: web.Application):
    async def loop() -> None:
        while True:
            _flush()
            _sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    task = asyncio.ensure_future(loop())
    yield
    task.cancel()
    _flush()


def _collect() -> bytes:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


MODE = web.AppKey("metrics_mode", str)


async def handle_metrics(request: web.Request) -> web.Response:
    """``/-/metrics``: Prometheus text format, for everyone or for signed-in users."""
    mode = request.app[MODE]
    if mode == "off":
        raise web.HTTPNotFound()
    if mode == "users":
        from .auth import AUTHORITY

        authority = request.app[AUTHORITY]
        await authority.require_identity(request, "sign in to read the metrics")
        if not (await authority.identify(request)).user:  # a share token is for data, not for operators
            raise web.HTTPForbidden(text="403 only signed-in users may read the metrics\n")
    if not watching_connections:
        watch_server(getattr(request.protocol, "_manager", None))  # see server.access_log
    _flush()  # this worker's figures as of now (on the loop: the counts are not locked)
    _sample()
    body = await asyncio.get_running_loop().run_in_executor(None, _collect)  # reads every worker's files
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def setup(app: web.Application, mode: str) -> None:
    app[MODE] = mode
    app.cleanup_ctx.append(_sampler)
    app.router.add_get("/-/metrics", handle_metrics)
