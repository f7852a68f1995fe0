"""Computed answers (translated chunks) by key: memory, then an optional disk folder, then compute once.

Keys are opaque hex digests that already say everything the bytes depend on
(the view, the chunk, the validators of the source files read), so an entry is
never revalidated: a changed source simply asks for another key, and the old
entry ages out of the LRU budgets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Awaitable, Callable

from .lru import ByteBudgetLRU

log = logging.getLogger("ngserve")

Item = tuple[bytes, float]  # the bytes, and when they were computed (Last-Modified)


class DiskCache:
    """Files named by key under ``root``, within ``budget`` bytes (least recently used go first).

    Writes are atomic (a temporary sibling, then rename), so a crash or a second
    worker never sees half a file.  Each worker keeps its own index; a file another
    worker evicted is just a miss.
    """

    def __init__(self, root: Path, budget: int) -> None:
        self.root = Path(root)
        self.budget = budget
        self.used = 0
        self._index: OrderedDict[str, int] = OrderedDict()
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.root.glob("??/*"):
            if path.name.startswith(".") or not path.is_file():
                continue
            st = path.stat()
            found.append((st.st_mtime, path.name, st.st_size))
        for _, name, size in sorted(found):
            self._index[name] = size
            self.used += size
        self._evict()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Item | None:
        """Blocking: call off the event loop."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except OSError:
            self._forget(key)
            return None
        if key in self._index:
            self._index.move_to_end(key)
        return data, mtime

    def put(self, key: str, data: bytes) -> None:
        """Blocking: call off the event loop.  A failed write is logged and forgotten (it is a cache)."""
        if len(data) > self.budget:
            return
        path = self._path(key)
        tmp = path.parent / f".{key}.{os.getpid()}.tmp"
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("chunk cache: cannot write %s: %s", path, exc.strerror)
            tmp.unlink(missing_ok=True)
            return
        self._forget(key)
        self._index[key] = len(data)
        self.used += len(data)
        self._evict()

    def _forget(self, key: str) -> None:
        size = self._index.pop(key, None)
        if size is not None:
            self.used -= size

    def _evict(self) -> None:
        while self.used > self.budget and self._index:
            key, size = self._index.popitem(last=False)
            self.used -= size
            self._path(key).unlink(missing_ok=True)


def _nothing() -> None:
    pass


class ChunkCache:
    """Memory LRU in front of an optional :class:`DiskCache`; concurrent misses for a key compute once."""

    def __init__(self, memory_bytes: int, disk: DiskCache | None = None, name: str | None = None) -> None:
        self.memory: ByteBudgetLRU[Item] = ByteBudgetLRU(memory_bytes, lambda item: len(item[0]) + 64)
        self.disk = disk
        self._inflight: dict[str, asyncio.Task] = {}
        self._wanted: set[str] = set()  # keys being filled that some caller wants with normal priority
        self._hit = self._miss = _nothing
        if name:  # counted in the metrics as cache ``name``
            from . import metrics

            self._hit, self._miss = metrics.CACHE_HITS.labels(name).inc, metrics.CACHE_MISSES.labels(name).inc
            metrics.watch_cache(name, self.memory)

    async def get(self, key: str, compute: Callable[[], Awaitable[bytes]], low: bool = False) -> Item:
        """The item under ``key``, computed once if absent.  ``low``: wanted only in passing (an
        input of another entry): kept with low priority and not refreshed by a hit, so a stream of
        such entries never pushes out the ones clients ask for (unless one of those asks too)."""
        hit = self.memory.get(key, touch=not low)
        if hit is not None:
            self._hit()
            return hit
        self._miss()
        if not low:
            self._wanted.add(key)
        task = self._inflight.get(key)
        if task is None:
            # A task of its own: a client that goes away does not cancel the work others wait for.
            task = asyncio.ensure_future(self._fill(key, compute))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task) -> None:
        self._inflight.pop(key, None)
        self._wanted.discard(key)
        if not task.cancelled():
            task.exception()  # retrieved: when every waiter left, no "never retrieved" noise

    async def _fill(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> Item:
        loop = asyncio.get_running_loop()
        item = await loop.run_in_executor(None, self.disk.get, key) if self.disk else None
        if item is None:
            item = (await compute(), time.time())
            if self.disk:
                await loop.run_in_executor(None, self.disk.put, key, item[0])
        self.memory.put(key, item, low=key not in self._wanted)
        return item
