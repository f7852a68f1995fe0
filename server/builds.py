"""Bounded work off the event loop: ``/-/open`` state builds, ``/-/precomputed/`` chunks.

The builder blocks (tensorstore reads, statistics) and its reads come back to
this very server over loopback.  It therefore runs on a pool of its own: if it
shared the default executor that serves large files and listings, a few
concurrent builds would hold every thread while waiting for reads that need a
thread, and the server would wedge for good.  Builds are also capped, with a
small queue (beyond it: 503 with Retry-After), and each has a deadline (504).
A build that overruns its deadline keeps its slot until its thread finishes,
so abandoned work still counts against the cap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Callable, TypeVar

from aiohttp import web

T = TypeVar("T")

THREADS = 2  # builds at once: each is mostly waiting on reads, and the machine has other work
QUEUE = 6  # builds waiting for a thread before new ones are turned away
TIMEOUT = 60.0  # seconds until the client gets a 504
RETRY_AFTER = 5  # seconds, for the 503


class BuildPool:
    """A small thread pool with admission control and a deadline per job."""

    def __init__(
        self, threads: int = THREADS, queue: int = QUEUE, timeout: float = TIMEOUT,
        name: str = "ngserve-open", busy: str = "views are being prepared", slow: str = "preparing the view",
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, name)
        self._limit = threads + queue
        self._timeout = timeout
        self._busy, self._slow = busy, slow  # the 503 and 504 texts: "too many <busy>", "<slow> took longer"
        self.pending = 0  # admitted jobs whose thread has not finished (or that were never started)

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self.pending >= self._limit:
            raise web.HTTPServiceUnavailable(
                headers={"Retry-After": str(RETRY_AFTER)},
                text=f"503 too many {self._busy}; try again in {RETRY_AFTER} s\n",
            )
        loop = asyncio.get_running_loop()
        self.pending += 1
        job = self._pool.submit(fn, *args)
        job.add_done_callback(lambda _: self._release_on(loop))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), self._timeout)
        except asyncio.TimeoutError:
            job.cancel()  # frees the slot now if it never started; a running job keeps it until it ends
            raise web.HTTPGatewayTimeout(text=f"504 {self._slow} took longer than {self._timeout:g} s\n") from None

    def _release(self) -> None:
        self.pending -= 1

    def _release_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """From the job's thread: free its slot on the loop, unless the loop has closed meanwhile (a
        server stopped while the job ran, e.g. a notebook's: nothing is left to free it for)."""
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:
            pass

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
