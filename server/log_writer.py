"""Log output that never blocks the server.

A plain ``StreamHandler`` writes on the thread that logs: the event loop.  When stderr is a
pipe nobody reads (a supervisor that never drains it, a script holding ``stdout=PIPE``) the
pipe's 64 KiB buffer fills, the write blocks, and every request stalls behind it.

:class:`QueuedStreamHandler` formats each record where it is logged (the request id lives in a
context variable there) and hands the text to one writer thread per process through a queue
bounded in size.  When the queue is full, lines are dropped rather than waited for, counted in
``ngserve_log_dropped_total``, and reported in one line once output flows again.  At exit the
queue is written out, unless the output has stopped moving (nobody reads it): then the process
does not wait for it.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import weakref
from typing import TextIO

from . import metrics

MAX_QUEUED = 1 << 20  # characters waiting to be written (about a MiB), per process
BATCH = 512  # lines taken from the queue at once
PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # a pipe write this small is atomic (POSIX: at least 512)
STALL_SECONDS = 1.0  # at exit, give up on output that made no progress for this long
_STOP = object()
_handlers: weakref.WeakSet[QueuedStreamHandler] = weakref.WeakSet()


class QueuedStreamHandler(logging.Handler):
    """Writes formatted records to ``stream`` from its own thread; drops what does not fit."""

    def __init__(self, stream: TextIO, max_queued: int = MAX_QUEUED) -> None:
        super().__init__()
        self.stream = stream
        self.max_queued = max_queued
        self._start()
        _handlers.add(self)

    def _start(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._state = threading.Lock()  # the counters below, shared with the writer thread
        self._queued = 0  # characters in the queue or being written
        self._dropped = 0  # lines dropped and not yet reported
        self._batches = 0  # batches written: the progress close() watches
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="ngserve-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._state:
            if self._closed or self._queued + len(line) > self.max_queued:
                self._dropped += 1
                metrics.LOG_DROPPED.inc()
                return
            if self._dropped:  # report the gap where it was, when lines follow it
                self._queue.put(self._dropped)
                self._dropped = 0
            self._queued += len(line)
            self._queue.put(line)

    def _drop_line(self, count: int) -> str:
        record = logging.LogRecord("ngserve", logging.WARNING, __file__, 0,
                                   "%d log lines dropped: output not read", (count,), None)
        return self.format(record) + "\n"

    def _write_loop(self) -> None:
        q = self._queue
        while True:
            batch = [q.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            self._write([x if isinstance(x, str) else self._drop_line(x) for x in batch if x is not _STOP])
            with self._state:
                self._queued -= sum(len(x) for x in batch if isinstance(x, str))
                self._batches += 1
                # Caught up after dropping, with no line after the gap to carry the report: say it now.
                late = self._dropped if q.empty() else 0
                self._dropped -= late
            if late:
                self._write([self._drop_line(late)])
            if batch[-1] is _STOP:
                return

    def _write(self, lines: list[str]) -> None:
        """Write whole lines, at most PIPE_BUF bytes at a time where lines allow: the kernel keeps
        such a write to a pipe in one piece, so workers sharing stderr never cut each other's lines."""
        chunk: list[str] = []
        size = 0
        for line in lines:
            n = len(line.encode("utf-8", "replace"))
            if chunk and size + n > PIPE_BUF:
                self._write_chunk(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            self._write_chunk(chunk)

    def _write_chunk(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # the output is gone (closed pipe or file): nothing to tell
            metrics.LOG_DROPPED.inc(len(lines))

    def close(self) -> None:
        """Write out what is queued and stop the thread; see the module's note on unread output."""
        with self._state:
            closed, self._closed = self._closed, True
        if not closed:
            self._queue.put(_STOP)
            seen = -1
            while self._thread.is_alive():
                with self._state:
                    progress = self._batches
                if progress == seen:
                    break  # stuck in a write nobody reads; the thread is a daemon
                seen = progress
                self._thread.join(STALL_SECONDS)
        super().close()


def _restart_after_fork() -> None:
    """Threads do not survive fork: a child gets its own writer (and an empty queue, since the
    parent writes the lines it queued)."""
    for handler in list(_handlers):
        if not handler._closed:
            handler._start()


os.register_at_fork(after_in_child=_restart_after_fork)
