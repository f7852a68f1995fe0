"""Random access to one file, local or served over http(s) with Range requests.

The file readers (TIFF, MRC, HDF5, NIfTI) need a seekable binary file for their
libraries and a thread-safe ``read_at(offset, size)`` for chunk reads that
tensorstore runs on several threads at once.  A local file gives both with
``os.pread``.  Over HTTP, :class:`HttpRangeFile` asks only for the bytes it needs.

It is written here rather than taken from fsspec: fsspec's HTTP file runs its
own event-loop thread and aiohttp session, whereas this needs blocking ranged
GETs with a small block cache (libraries read headers and IFDs in many small
pieces), and it must append a :class:`Location`'s query (a share token) to every
request while keeping it out of error messages.
"""

from __future__ import annotations

import abc
import io
import os
import re
import threading
import urllib.error
import urllib.request
from collections import OrderedDict

from .location import HTTP_TIMEOUT, Location, SourceError

BLOCK = 256 << 10  # small reads are rounded out to blocks and cached
CACHE_BLOCKS = 64  # 16 MiB per open file
DIRECT = 4 * BLOCK  # reads at least this large bypass the cache (chunk data, read once)


class RandomAccessFile(io.RawIOBase):
    """A read-only, seekable file whose bytes come from :meth:`read_at` (thread-safe, position-free)."""

    name: str

    def __init__(self, name: str, size: int) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self._pos = 0

    @abc.abstractmethod
    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer at the end of the file); safe from any thread."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read_at(self._pos, min(len(view), max(0, self.size - self._pos)))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self.read_at(self._pos, max(0, self.size - self._pos))
        self._pos += len(data)
        return data


class LocalFile(RandomAccessFile):
    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from None
        super().__init__(path, size)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset) if size > 0 else b""

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class HttpRangeFile(RandomAccessFile):
    """A file on an http(s) server that answers Range requests (as ngserve does)."""

    def __init__(self, url: str, query: str = "") -> None:
        self.url = url  # for messages: without the query, which may hold a token
        self._query = "?" + query if query else ""
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        super().__init__(url, self._size())

    def _request(self, method: str = "GET", headers: dict | None = None):
        req = urllib.request.Request(self.url + self._query, method=method, headers=headers or {})
        try:
            return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (404, 410):
                raise SourceError(f"{self.url}: no such file (HTTP {exc.code})") from None
            if exc.code in (401, 403):
                raise SourceError(f"{self.url}: access denied (HTTP {exc.code})") from None
            if exc.code in (405, 501) and method == "HEAD":
                return None
            raise SourceError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def _size(self) -> int:
        resp = self._request("HEAD")
        if resp is not None:
            with resp:
                length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit():
                return int(length)
        # No HEAD (or no length in it): a one-byte range states the total, as Neuroglancer also asks.
        with self._request(headers={"Range": "bytes=0-0"}) as resp:
            total = re.fullmatch(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range") or "")
            if resp.status != 206 or total is None:
                raise SourceError(f"{self.url}: the server does not answer Range requests, needed to read the file in parts")
            return int(total.group(1))

    def _fetch(self, start: int, stop: int) -> bytes:
        with self._request(headers={"Range": f"bytes={start}-{stop - 1}"}) as resp:
            if resp.status != 206:
                raise SourceError(f"{self.url}: the server does not answer Range requests, needed to read the file in parts")
            data = resp.read()
        if len(data) != stop - start:
            raise SourceError(f"{self.url}: short read ({len(data)} of {stop - start} bytes); the file changed?")
        return data

    def read_at(self, offset: int, size: int) -> bytes:
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        if size >= DIRECT:
            return self._fetch(offset, offset + size)
        first, last = offset // BLOCK, (offset + size - 1) // BLOCK
        with self._lock:
            blocks = {i: self._cache.get(i) for i in range(first, last + 1)}
        missing = [i for i, b in blocks.items() if b is None]
        if missing:  # one request for the whole run of missing blocks
            lo, hi = missing[0] * BLOCK, min(self.size, (missing[-1] + 1) * BLOCK)
            data = self._fetch(lo, hi)
            with self._lock:
                for i in range(missing[0], missing[-1] + 1):
                    block = data[(i - missing[0]) * BLOCK: (i - missing[0] + 1) * BLOCK]
                    blocks[i] = block
                    self._cache[i] = block
                    self._cache.move_to_end(i)
                while len(self._cache) > CACHE_BLOCKS:
                    self._cache.popitem(last=False)
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        start = offset - first * BLOCK
        return joined[start: start + size]


def open_file(loc: Location) -> RandomAccessFile:
    """The file at ``loc`` (a local path or an http(s) URL) for random access."""
    if loc.is_http:
        return HttpRangeFile(loc.root, loc.query)
    return LocalFile(loc.root)
