"""File answers: the one place for Range, conditional requests and file headers.

Every backend that serves bytes it holds (local files, cached remote metadata)
comes through :func:`file_response`, so 206/304/412/416 behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
from typing import Awaitable, Callable, NamedTuple

from aiohttp import web

from . import metrics
from .ranges import Unsatisfiable, parse_range

# Files Neuroglancer, tensorstore and cloud-volume fetch as JSON metadata.
METADATA_NAMES = frozenset(
    {"info", ".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json", "attributes.json"}
)

# Read a byte range [offset, offset+length) of the file.
RangeReader = Callable[[int, int], Awaitable[bytes]]

STREAM_PIECE = 1 << 20


class FileMeta(NamedTuple):
    """What the headers of a file answer need to know about the stored bytes.

    A NamedTuple: made on every request, it costs half of a frozen dataclass.
    """

    name: str  # the logical file name (without a ``.gz`` that was added for us)
    size: int  # bytes as stored (encoded size when ``encoding`` is set)
    mtime: float
    etag: str  # quoted strong validator
    encoding: str | None = None  # e.g. "gzip" for a precompressed sibling


def accepts_gzip(request: web.BaseRequest) -> bool:
    """Whether the client takes gzip: listed in Accept-Encoding and not refused with q=0."""
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            name, _, value = params.strip().partition("=")
            try:
                return name.strip().lower() != "q" or float(value) > 0
            except ValueError:
                return True  # a malformed weight is ignored, as if absent
    return False


def content_type(name: str) -> str:
    """Metadata is JSON; everything else is opaque bytes.

    Data folders are never served as HTML or script: the viewer and the login
    cookie share this origin, so a stray .html in a data folder must not run.
    """
    if name in METADATA_NAMES or name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    want = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == want for t in header.split(","))


def _header_date(request: web.BaseRequest, name: str) -> float | None:
    """The HTTP date in header ``name`` as Unix seconds; None when absent or invalid (ignored)."""
    value = request.headers.get(name)
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year or second past C's range
        return None


def _precondition_failed(request: web.BaseRequest, meta: FileMeta) -> bool:
    """If-Match (strong comparison), else If-Unmodified-Since: RFC 9110 13.2.2 steps 1-2.

    tensorstore reads a shard's index, then the chunks in it by Range with
    ``If-Match: <the index's ETag>``.  When these were ignored, a shard rewritten in
    between was answered with the new file's bytes at the old offsets: a decode error
    or, with uncompressed chunks, silently wrong voxels.  A 412 makes it re-read the index.
    """
    im = request.headers.get("If-Match")
    if im is not None:
        if im.strip() == "*":
            return False  # the file exists
        return not any(t.strip() == meta.etag for t in im.split(","))  # a W/ tag never matches
    since = _header_date(request, "If-Unmodified-Since")
    return since is not None and int(meta.mtime) > since


def _not_modified(request: web.BaseRequest, meta: FileMeta) -> bool:
    inm = request.headers.get("If-None-Match")
    if inm is not None:  # takes precedence over If-Modified-Since (RFC 9110 13.2.2)
        return _etag_matches(inm, meta.etag)
    since = _header_date(request, "If-Modified-Since")
    return since is not None and int(meta.mtime) <= since


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    # formatdate was ~3% of a worker's time under load; files share few mtimes.
    return email.utils.formatdate(seconds, usegmt=True)


def base_headers(meta: FileMeta) -> dict[str, str]:
    headers = {
        "Content-Type": content_type(meta.name),
        "Accept-Ranges": "bytes",
        "ETag": meta.etag,
        "Last-Modified": _http_date(int(meta.mtime)),
    }
    if meta.encoding:
        headers["Content-Encoding"] = meta.encoding
        headers["Vary"] = "Accept-Encoding"
    return headers


async def file_response(
    request: web.BaseRequest,
    meta: FileMeta,
    *,
    data: bytes | None = None,
    read: RangeReader | None = None,
    accel: str | None = None,
    sendfile: str | None = None,
) -> web.StreamResponse:
    """Answer ``request`` for a file, from ``data`` in memory, by streaming ``read``, or by
    handing it to nginx with ``X-Accel-Redirect: <accel>`` once the checks here pass.

    ``sendfile``: the local file ``read`` reads, which the kernel may then copy to the socket
    itself (plain TCP; TLS transports stream through ``read``)."""
    headers = base_headers(meta)
    if _precondition_failed(request, meta):
        headers["Content-Type"] = "text/plain; charset=utf-8"
        return web.Response(status=412, headers=headers, text="precondition failed: the file has changed\n")
    if _not_modified(request, meta):
        return web.Response(status=304, headers=headers)

    rng_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != meta.etag:
        rng_header = None  # the client's copy is stale: send the whole file
    try:
        rng = parse_range(rng_header, meta.size)
    except Unsatisfiable:
        headers["Content-Range"] = f"bytes */{meta.size}"
        headers["Content-Type"] = "text/plain; charset=utf-8"
        return web.Response(status=416, headers=headers, text="range not satisfiable\n")

    if accel is not None:
        # No body: nginx replaces this answer with the file at ``accel`` and makes the 200 or 206
        # from the same Range (a stale If-Range it judges by the same ETag).
        headers["X-Accel-Redirect"] = accel
        metrics.observe_accel(meta.size if rng is None else rng[1] - rng[0] + 1)
        return web.Response(status=200, headers=headers)

    status, first, last = 200, 0, meta.size - 1
    if rng is not None:
        status, (first, last) = 206, rng
        headers["Content-Range"] = f"bytes {first}-{last}/{meta.size}"
    length = last - first + 1

    if data is not None:
        return web.Response(status=status, headers=headers, body=data[first : last + 1])

    assert read is not None
    if request.method == "HEAD":  # headers only; aiohttp sends no body for HEAD
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        return resp
    if length <= STREAM_PIECE:
        return web.Response(status=status, headers=headers, body=await read(first, length))
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    try:
        await resp.prepare(request)
        pos = first
        if sendfile is not None:
            pos += await _sendfile(request, resp, sendfile, first, length)
            if pos == last + 1 or request.transport is None or request.transport.is_closing():
                await resp.write_eof()
                return resp
        while pos <= last:
            piece = await read(pos, min(STREAM_PIECE, last + 1 - pos))
            if not piece:
                # The file shrank since the stat.  Content-Length promised more, so
                # close the connection: the client sees a truncated answer at once
                # instead of waiting for bytes that will never come.
                request.transport.close()
                return resp
            await resp.write(piece)
            pos += len(piece)
    except ConnectionError:
        return resp  # the client went away mid-body; aiohttp closes the connection
    await resp.write_eof()
    return resp


async def _sendfile(request: web.BaseRequest, resp: web.StreamResponse, path: str, first: int, length: int) -> int:
    """Bytes of ``path`` from ``first`` the kernel sent after ``resp``'s headers: all ``length``
    of them, fewer when the file shrank (the connection is closed then, as Content-Length lied),
    or none when the transport cannot (TLS): the caller streams the rest."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    try:
        with open(path, "rb") as f:
            sent = await asyncio.get_running_loop().sendfile(transport, f, first, length, fallback=False)
    except (NotImplementedError, RuntimeError):  # RuntimeError: the transport is not sendfile-ready
        return 0
    except FileNotFoundError:  # removed since the stat: as a file that shrank to nothing
        sent = 0
    # aiohttp counts only what passed through its writer; the access log and metrics want these too.
    resp._payload_writer.output_size += sent
    if sent < length:
        transport.close()
    return sent


async def json_response(request: web.BaseRequest, name: str, body: object, etag: str) -> web.StreamResponse:
    """A JSON document computed by a view (repaired metadata, segment properties), answered like a
    file: ETag, conditional requests, Range and HEAD; revalidated on every use."""
    import json
    import time

    data = json.dumps(body, separators=(",", ":")).encode()
    # No file has this answer's date; "now" never makes an If-Modified-Since match wrongly.
    response = await file_response(request, FileMeta(name=name, size=len(data), mtime=time.time(), etag=etag), data=data)
    response.headers["Cache-Control"] = "no-cache"
    return response
