"""Run the app: bind once, then one or more worker processes on the same port."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import webbrowser
from typing import Callable

from aiohttp import web

from .auth import insecure_cookie_warning
from pathlib import Path

from ngstate import registry

from .config import ConfigError, ServerConfig, is_remote

log = logging.getLogger("ngserve")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as server.metrics reads it; not imported here (see serve)
KILL_GRACE = 10.0  # seconds past drain_seconds a worker has for its cleanup before it is killed


def _use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """Bind a TCP socket, turning the usual failures into one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot bind to host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: choose another with --port") from None
        raise ConfigError(f"cannot bind to {host}:{port}: {exc.strerror}") from None
    return sock


def _worker(
    config: ServerConfig, sock: socket.socket | None, port: int, access_log: bool, open_url: str | None = None
) -> None:
    """Serve until a signal.  In multi-worker mode each worker binds its own SO_REUSEPORT
    socket, so the kernel spreads connections evenly across processes.  ``open_url`` is
    opened in a browser once this worker listens (connections wait in the backlog)."""
    from .access_log import AccessLogger, quiet_bad_requests, setup_logging
    from .app import create_app

    setup_logging(config.log_format, access_log)
    quiet_bad_requests()

    _use_uvloop()
    if sock is None:
        sock = bind(config.host, port, reuse_port=True)
    sock.listen(1024)
    if open_url:
        threading.Thread(target=webbrowser.open, args=(open_url,), daemon=True).start()
    app = create_app(config)
    web.run_app(
        app,
        sock=sock,
        print=None,
        access_log=logging.getLogger("aiohttp.access"),  # lines or not, it counts the request metrics
        access_log_class=AccessLogger,  # who read what; share tokens redacted
        handle_signals=True,
        # On SIGTERM/SIGINT: stop listening, close idle connections, and give requests in
        # flight this long to finish before their connections are cut.
        shutdown_timeout=config.drain_seconds,
    )


def _spawned_worker(*args) -> None:
    """:func:`_worker` in a process of its own."""
    try:
        _worker(*args)
    except KeyboardInterrupt:
        # Told to stop (the parent passes SIGTERM on as SIGINT) while still starting, before
        # run_app handles the signals: end quietly, not with a traceback on stderr and exit code 1.
        pass


def _check_app(config: ServerConfig) -> None:
    """Build the app once before binding, so a bad source or data folder stops start-up
    with one line instead of a traceback in every worker."""
    from .app import create_app

    try:
        create_app(config)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot start: {exc.strerror or exc}: {exc.filename}") from None
    except ValueError as exc:
        raise ConfigError(f"cannot start: {exc}") from None


def serve(
    config: ServerConfig, *, access_log: bool = True, landing: str | Callable[[str], str] = "/"
) -> None:
    """Bind, print where we are, and serve ``config`` until interrupted.

    ``landing`` is the page announced (and opened with ``open_browser``): a path, or a function
    of the base URL giving a full URL (a view whose state names the port just bound).
    """
    config.validate()
    # prometheus_client picks single- or multi-process mode when first imported (in _check_app):
    # only our own folder, made below for several workers, may put it in multi-process mode.
    os.environ.pop(MULTIPROC_ENV, None)
    from .access_log import setup_logging

    setup_logging(config.log_format, access_log)  # the parent's own lines too (workers set it up again)
    _check_app(config)
    warning = insecure_cookie_warning(config)
    if warning:
        log.warning(warning)
    workers = config.workers
    multi = workers > 1 and hasattr(socket, "SO_REUSEPORT")
    if workers > 1 and not multi:
        log.warning("this platform has no SO_REUSEPORT: running one worker")
    sock = bind(config.host, config.port, reuse_port=False)
    port = sock.getsockname()[1]
    if multi:
        # The plain bind above proved the port free (a SO_REUSEPORT listener of another
        # ngserve would let a second SO_REUSEPORT bind share it silently).  Hold the
        # port with a SO_REUSEPORT socket the workers can join; it never listens.
        sock.close()
        sock = bind(config.host, port, reuse_port=True)
    else:
        sock.listen(1024)  # before the URLs are printed: a script that reads one may connect at once
    host = f"[{config.host}]" if ":" in config.host else config.host
    base = config.public_url or f"http://{host}:{port}"
    entry = _register(config, base, "127.0.0.1" if config.host in ("0.0.0.0", "::") else host, port)
    try:
        page = landing(base) if callable(landing) else base + landing  # may fail: then nothing was announced
    except BaseException:
        if entry is not None:
            registry.unregister(entry)
        raise
    print(f"ngserve: serving on {base}/  (viewer: {base}/-/viewer/, workers: {workers if multi else 1})", flush=True)
    if page != base + "/":
        print(f"ngserve: open {page}", flush=True)
    open_url = page if config.open_browser else None
    try:
        _serve(config, sock, port, access_log, open_url, workers if multi else 1)
    finally:
        if entry is not None:
            registry.unregister(entry)


def _register(config: ServerConfig, base: str, host: str, port: int) -> Path | None:
    """Put this server in the registry, so ``ngserve link``/``view`` on a local path find it.

    Only public local mounts: a protected one cannot be read by a plain link anyway.  Links
    use ``base`` (``public_url`` when set); readers check ``/-/health`` on the local address.
    The registry is the user's (the default data dir), whatever ``data_dir`` the server keeps its
    own state in: readers look in one place.
    """
    mounts = {m.name: m.source for m in config.mounts if not is_remote(m.source) and m.access == "public"}
    try:
        return registry.register(base, mounts, health_url=f"http://{host}:{port}")
    except OSError as exc:  # a read-only home must not stop the server
        log.warning("cannot record this server in %s: %s", registry.default_data_dir(), exc)
        return None


def _serve(config: ServerConfig, sock: socket.socket, port: int, access_log: bool, open_url: str | None,
           workers: int) -> None:
    if workers == 1:
        _worker(config, sock, port, access_log, open_url)
        return
    # The parent keeps its bound (not listening) socket only to hold the port.
    metrics_dir = tempfile.mkdtemp(prefix="ngserve-metrics-")  # the workers' metric files, summed per scrape
    os.environ[MULTIPROC_ENV] = metrics_dir  # spawned workers inherit it before importing prometheus_client
    try:
        _run_workers(config, workers, port, access_log, open_url)
    finally:
        sock.close()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _forget_worker_gauges(pid: int) -> None:
    """A finished worker's open connections and cache sizes no longer count (its counters still do)."""
    from prometheus_client import multiprocess  # in multi-process mode here: MULTIPROC_ENV is set

    multiprocess.mark_process_dead(pid)


def _run_workers(config: ServerConfig, workers: int, port: int, access_log: bool, open_url: str | None) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_spawned_worker, args=(config, None, port, access_log, open_url if i == 0 else None), daemon=True)
        for i in range(workers)
    ]
    stop_by: list[float] = []  # when the workers must be gone, once told to stop

    def stop(signum, frame):  # pass the signal on; the workers drain, then exit
        if not stop_by:
            stop_by.append(time.monotonic() + config.drain_seconds + KILL_GRACE)
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)

    # Handlers before the first start: a stop signal while workers start must reach them all,
    # not kill this process with its default action and leave the started ones holding the port.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        if stop_by:
            break
        p.start()
    gone: set[int] = set()
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(0.5)
            if not p.is_alive() and p.pid not in gone:
                gone.add(p.pid)
                _forget_worker_gauges(p.pid)
        if stop_by and time.monotonic() > stop_by[0]:  # a worker stuck past its drain: end it
            for p in procs:
                if p.is_alive():
                    log.warning("worker %d did not stop within drain_seconds; killing it", p.pid)
                    p.kill()
    if any(p.exitcode not in (None, 0, -signal.SIGINT, -signal.SIGTERM) for p in procs):  # None: never started
        sys.exit(1)
