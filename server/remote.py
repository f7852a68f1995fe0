"""Remote storage: a WebDAV store (dCache, Nextcloud, Apache/nginx DAV) or a plain HTTP(S) bucket.

The mount's source names the backend: ``webdav+https://host/path`` (listings
by PROPFIND) or ``https://host/path`` (read-only HTTP, no listings).  We hold
the upstream credentials; the client never sees them, and neither do the logs
or our error answers, which name only the mount and a short reason.

Chunks are proxied: the client's Range and validators (If-None-Match,
If-Modified-Since, If-Range, If-Match, If-Unmodified-Since) go upstream
unchanged and its 200/206/304/412/416 come back, streamed.  The 412 matters:
tensorstore reads a shard's index and then its chunks with If-Match, so a shard
rewritten upstream in between must fail the read rather than give wrong bytes.

Metadata files (``info``, ``.zarray``, ``zarr.json``, ...) are small and read
over and over by every viewer, so they live in memory for ``metadata_ttl``
seconds and are then revalidated with ``If-None-Match``; answers for them go
through :func:`server.responses.file_response` like local files.  A miss on
any path is remembered as long, so the app's folder check after a 404 is free.
A plain-HTTP mount without credentials is read like a public S3/GCS bucket,
whose 403 for a missing key means 404 (Neuroglancer then sees a missing chunk).

Nothing an upstream sends is buffered without a bound: a metadata file over
``metadata_max_bytes`` and a PROPFIND answer over ``listing_max_bytes`` are
refused with 502, and listings are parsed in a worker thread.  Redirects are
followed by us, not aiohttp, and only to the source's own origin or a host in
``redirect_hosts``: the session sends our credentials, and its TLS context our
client certificate, to every host it talks to, so it must never talk to another.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import logging
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from volumes import MARKERS

from . import metrics
from .config import UpstreamConfig, parse_host
from .lru import ByteBudgetLRU
from .paths import is_visible
from .request_id import current_request_id
from .responses import METADATA_NAMES, FileMeta, content_type, file_response
from .secret_file import RotatingSecret
from .storage import Entry, Storage

log = logging.getLogger("ngserve.remote")

RETRY_STATUSES = frozenset({502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5  # hops followed for one request; a loop ends in 502
BACKOFF = 0.2  # seconds before the first retry; doubles each time
# Bodies up to this size are read whole before we answer, so a truncated
# upstream body becomes a clean 502; larger ones stream piece by piece.
WHOLE_BODY = 1 << 20
STREAM_PIECE = 1 << 18
PARSE_PIECE = 1 << 16  # a listing is fed to the XML parser this much at a time (see _parse_multistatus)
SMALL_REDIRECT_BODY = 1 << 16  # a redirect's body up to this size is read, so its connection is reused
METADATA_BUDGET = 64 << 20
LISTING_BUDGET = 16 << 20
_ABSENT_COST = 256  # bytes charged for remembering that a file is missing
_VALIDATORS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")

_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>'
)
_DAV = "{DAV:}"


@dataclass
class _Cached:
    data: bytes | None  # None: the upstream said the file does not exist
    etag: str | None
    mtime: float
    checked: float  # time.monotonic() when the upstream last confirmed it
    oversize: bool = False  # the file exists but is over metadata_max_bytes (data is None)


def _cost(item: _Cached) -> int:
    return _ABSENT_COST if item.data is None else len(item.data)


def _parse_multistatus(body: bytes, own: str) -> tuple[Entry | None, list[Entry]]:
    """The entry whose href is ``own`` and the visible others, sorted, from a PROPFIND answer.

    Runs in a worker thread.  The body is fed to the parser in pieces: one
    ``fromstring`` of a 50 MB answer is a single C call that holds the GIL
    for seconds, which would stall the event loop just as if it ran there.
    Each ``response`` is emptied once read, so memory stays near the entries.
    Raises ``ET.ParseError`` on a body that is not XML.
    """
    parser = ET.XMLPullParser(events=("end",))
    me, children = None, []
    for start in range(0, len(body), PARSE_PIECE):
        parser.feed(body[start : start + PARSE_PIECE])
        for _, elem in parser.read_events():
            if elem.tag != f"{_DAV}response":
                continue
            href = unquote(urlsplit((elem.findtext(f"{_DAV}href") or "").strip()).path).rstrip("/")
            is_dir = elem.find(f".//{_DAV}resourcetype/{_DAV}collection") is not None
            size_text = (elem.findtext(f".//{_DAV}getcontentlength") or "0").strip()
            # ASCII digits, and not thousands of them: int() refuses both with ValueError.
            size = int(size_text) if size_text.isascii() and size_text.isdigit() and len(size_text) < 20 else 0
            entry = Entry(href.rsplit("/", 1)[-1], is_dir, 0 if is_dir else size)
            if href == own:
                me = entry
            elif href and is_visible(entry.name):
                children.append(entry)
            elem.clear()
    parser.close()
    children.sort(key=lambda e: e.name)
    return me, children


def _listing_cost(hit: tuple[float, list[Entry] | None]) -> int:
    return _ABSENT_COST + sum(64 + len(e.name) for e in hit[1] or ())


def _origin_of(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower(), url.port


def _fail(status: int, reason: str) -> web.HTTPException:
    cls = web.HTTPGatewayTimeout if status == 504 else web.HTTPBadGateway
    return cls(text=f"{status} {reason}\n")


def _quoted_etag(etag: str | None, data: bytes) -> str:
    if etag and etag.startswith(('"', 'W/"')):
        return etag
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def _mtime(header: str | None) -> float:
    try:
        return email.utils.parsedate_to_datetime(header).timestamp() if header else time.time()
    except (TypeError, ValueError, IndexError):
        return time.time()


def _cached(resp: aiohttp.ClientResponse, data: bytes, checked: float) -> _Cached:
    """A cache entry for an upstream 200 answer with body ``data``."""
    return _Cached(data, _quoted_etag(resp.headers.get("ETag"), data), _mtime(resp.headers.get("Last-Modified")), checked)


class RemoteStorage(Storage):
    """A mount backed by a WebDAV or plain HTTP(S) upstream, through one pooled client session."""

    def __init__(self, source: str, upstream: UpstreamConfig | None = None, label: str = "", mount: str = "") -> None:
        self.config = upstream or UpstreamConfig()
        self.dav = source.lower().startswith("webdav+")
        url = source.split("+", 1)[1] if self.dav else source
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{source!r} is not an http(s) URL")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path.rstrip("/")
        self.label = label or parts.hostname  # how logs and errors name this upstream: no credentials
        c = self.config
        # Public S3/GCS buckets answer 403, not 404, for a missing key to anonymous readers.
        self.anonymous_bucket = not self.dav and not (c.username or c.bearer or c.client_cert)
        self._session: aiohttp.ClientSession | None = None
        self._meta = ByteBudgetLRU(METADATA_BUDGET, _cost)
        self._chunks = ByteBudgetLRU(self.config.chunk_cache_bytes, _cost) if self.config.chunk_cache_bytes else None
        self._listings: ByteBudgetLRU[tuple[float, list[Entry] | None]] = ByteBudgetLRU(LISTING_BUDGET, _listing_cost)
        self._inflight: dict[str, asyncio.Future] = {}
        # File validators for translated views: (checked, validator) by path, trusted for metadata_ttl.
        self._validated: ByteBudgetLRU[tuple[float, str | None]] = ByteBudgetLRU(LISTING_BUDGET, lambda _: 256)
        self._origin = _origin_of(URL(self.origin))
        self._redirect_hosts = {parse_host(h) for h in c.redirect_hosts}
        self.upstream_requests = 0  # requests sent upstream, retries included (tests count them)
        self._bearer = (RotatingSecret(c.bearer_file, c.bearer, self.label) if c.bearer and c.bearer_file
                        else None)
        # Metric children looked up once: labels() takes a lock and a dict lookup per call.
        self._m_requests = metrics.UPSTREAM_REQUESTS.labels(mount).inc
        self._m_errors = metrics.UPSTREAM_ERRORS.labels(mount).inc
        self._m_latency = metrics.UPSTREAM_LATENCY.labels(mount).observe
        self._m_meta = (metrics.CACHE_HITS.labels("upstream_metadata").inc,
                        metrics.CACHE_MISSES.labels("upstream_metadata").inc)
        self._m_chunks = (metrics.CACHE_HITS.labels("upstream_chunks").inc,
                          metrics.CACHE_MISSES.labels("upstream_chunks").inc)
        metrics.watch_cache("upstream_metadata", self._meta)
        if self._chunks is not None:
            metrics.watch_cache("upstream_chunks", self._chunks)

    # -- the client session ------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.origin.startswith("https:"):
            return False
        return self.config.ssl_context()

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use inside the worker's event loop."""
        if self._session is None or self._session.closed:
            c = self.config
            headers = {"User-Agent": "ngserve"}
            if c.bearer and self._bearer is None:
                headers["Authorization"] = f"Bearer {c.bearer}"
            elif c.username:
                pair = f"{c.username}:{c.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=256, limit_per_host=128),
                timeout=aiohttp.ClientTimeout(total=None, connect=c.connect_timeout, sock_read=c.read_timeout),
                headers=headers,
                auto_decompress=False,  # pass bytes through exactly; we ask for identity anyway
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _url(self, path: str, directory: bool = False) -> str:
        tail = quote(path) if path else ""
        url = f"{self.origin}{self.base_path}/{tail}"
        return url if not directory or url.endswith("/") else url + "/"

    async def _request(
        self, method: str, path: str, headers: dict[str, str], *, directory: bool = False, body: bytes | None = None
    ) -> aiohttp.ClientResponse:
        """Send an idempotent request, retrying connection failures and 502/503/504 with backoff.

        Redirects are followed by :meth:`_follow`.  The headers must arrive within
        connect + read timeout (each hop): aiohttp's per-read timeout alone never
        fires on an upstream that trickles bytes.
        A timeout is not retried, so the client hears 504 within the
        configured timeout; a 4xx is an answer, never retried.
        """
        url = self._url(path, directory)
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(BACKOFF * 2 ** (attempt - 1))
            try:
                resp = await self._follow(method, URL(url, encoded=True), headers, body, path)
            except asyncio.TimeoutError:
                log.warning("%s: %s /%s timed out", self.label, method, path)
                raise _fail(504, "upstream timed out") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                # We do not trust the upstream's certificate: retrying cannot help, and
                # "unreachable" sent operators looking at the network instead of ca_file.
                log.error("%s: the upstream's TLS certificate is not trusted (%s); set ca_file to its CA bundle",
                          self.label, getattr(exc.certificate_error, "verify_message", None) or "verify failed")
                raise _fail(502, "upstream TLS certificate not trusted") from None
            except aiohttp.ClientSSLError as exc:
                log.error("%s: TLS handshake with the upstream failed: %s", self.label, type(exc).__name__)
                raise _fail(502, "upstream TLS handshake failed") from None
            except aiohttp.ClientError as exc:
                log.warning("%s: %s /%s failed: %s", self.label, method, path, type(exc).__name__)
                if attempt + 1 < attempts:
                    continue
                if self.origin.startswith("https:") and isinstance(exc, aiohttp.ServerDisconnectedError):
                    # A TLS 1.3 server that wants a client certificate (an X.509 dCache door) finishes
                    # the handshake and then just hangs up when we have none or it distrusts ours;
                    # aiohttp sees only a disconnect, so name the likely cause rather than "unreachable".
                    log.error("%s: the upstream closed the TLS connection before answering; "
                              "if it requires a client certificate, check client_cert and client_key", self.label)
                    raise _fail(502, "upstream closed the TLS connection (client certificate refused?)") from None
                raise _fail(502, "upstream unreachable") from None
            if resp.status in RETRY_STATUSES and attempt + 1 < attempts:
                resp.release()
                continue
            return resp
        raise AssertionError("unreachable")

    async def _follow(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None, path: str
    ) -> aiohttp.ClientResponse:
        """Send one request, following at most MAX_REDIRECTS redirects to allowed hosts only.

        aiohttp would follow any redirect (dropping Authorization on another
        host, but not the client certificate), so we follow them ourselves and
        never connect to a host that is neither the source's origin nor listed.
        """
        headers = dict(headers)
        if self._bearer is not None:  # per request: the file may have been rotated since the last one
            headers["Authorization"] = f"Bearer {self._bearer.get()}"
        request_id = current_request_id()
        if request_id:  # the upstream's logs can then be matched with ours
            headers["X-Request-ID"] = request_id
        loop = asyncio.get_running_loop()
        for _ in range(MAX_REDIRECTS + 1):
            self.upstream_requests += 1
            self._m_requests()
            started = loop.time()
            try:
                resp = await asyncio.wait_for(
                    self.session().request(method, url, headers=headers, data=body, allow_redirects=False),
                    self.config.connect_timeout + self.config.read_timeout,
                )
            except (asyncio.TimeoutError, aiohttp.ClientError):
                self._m_errors()
                raise
            self._m_latency(loop.time() - started)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            if resp.content_length is not None and resp.content_length <= SMALL_REDIRECT_BODY:
                await resp.read()
            resp.release()
            try:
                url = resp.url.join(URL(location))
            except ValueError:
                raise _fail(502, "upstream sent an unreadable redirect") from None
            if not self._may_follow(url):
                log.warning("%s: upstream redirected /%s to %s, which is neither the source's origin nor in "
                            "redirect_hosts; add it there if it is trusted", self.label, path,
                            f"{url.scheme}://{url.host}:{url.port}")
                raise _fail(502, "upstream redirected to a host not in redirect_hosts")
            if resp.status == 303 and method != "HEAD":
                method, body = "GET", None
        log.warning("%s: upstream redirected /%s more than %d times", self.label, path, MAX_REDIRECTS)
        raise _fail(502, "upstream redirected too many times")

    def _may_follow(self, url: URL) -> bool:
        """Whether to follow a redirect to ``url``: our origin, or a listed host without going from https to http."""
        if url.scheme not in ("http", "https") or not url.host or url.user is not None or url.password is not None:
            return False  # credentials in the URL would clash with ours
        if _origin_of(url) == self._origin:
            return True
        if self._origin[0] == "https" and url.scheme != "https":
            return False  # credentials in clear text
        host = url.host.lower()
        return (host, None) in self._redirect_hosts or (host, url.port) in self._redirect_hosts

    def _is_missing(self, status: int) -> bool:
        return status in (404, 410) or (status == 403 and self.anonymous_bucket)

    def _fresh(self, item: _Cached) -> bool:
        return time.monotonic() - item.checked < self.config.metadata_ttl

    def _refuse(self, resp: aiohttp.ClientResponse, path: str) -> web.HTTPException:
        """Our answer for an upstream status we do not pass on."""
        status = resp.status
        if self._is_missing(status):
            return web.HTTPNotFound()
        self._m_errors()
        if status in (401, 403):
            log.error("%s: upstream refused our credentials (%d) for /%s", self.label, status, path)
            return _fail(502, "upstream refused the server's credentials")
        if status == 504:
            return _fail(504, "upstream gateway timed out")
        log.warning("%s: upstream answered %d for /%s", self.label, status, path)
        return _fail(502, f"upstream answered {status}")

    async def _read_body(self, resp: aiohttp.ClientResponse, cap: int) -> bytes | None:
        """The whole body, or None (and the connection closed) once it is over ``cap`` bytes.

        The session's read timeout bounds each gap between pieces, not the
        whole body: a large file on a slow but steady link is no fault.
        """
        if resp.content_length is not None and resp.content_length > cap:
            resp.close()
            return None
        pieces, size = [], 0
        try:
            async for piece in resp.content.iter_any():
                size += len(piece)
                if size > cap:  # no Content-Length, or a body longer than it said
                    resp.close()
                    return None
                pieces.append(piece)
        except asyncio.TimeoutError:
            raise _fail(504, "upstream timed out") from None
        except aiohttp.ClientError:
            raise _fail(502, "upstream sent a truncated answer") from None
        return b"".join(pieces)

    # -- small files: metadata, cached -------------------------------------------------
    async def _fetch_cached(self, cache: ByteBudgetLRU[_Cached], path: str) -> _Cached:
        """The file at ``path`` from ``cache`` if fresh, else from upstream (revalidating by ETag).

        Concurrent misses for one path share one upstream request.
        """
        item = cache.get(path)
        if item is not None and self._fresh(item):
            self._m_meta[0]()
            return item
        self._m_meta[1]()
        key = f"{id(cache)}:{path}"
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            item = await self._refresh(cache, path, item)
            future.set_result(item)
            return item
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: a lone request must not log "never retrieved"
            raise
        finally:
            del self._inflight[key]

    async def _refresh(self, cache: ByteBudgetLRU[_Cached], path: str, old: _Cached | None) -> _Cached:
        headers = {"Accept-Encoding": "identity"}
        if old is not None and old.etag:
            headers["If-None-Match"] = old.etag
        resp = await self._request("GET", path, headers)
        async with resp:
            now = time.monotonic()
            if resp.status == 304 and old is not None:
                old.checked = now
                return old
            if self._is_missing(resp.status):
                item = _Cached(None, None, 0.0, now)
            elif resp.status == 200:
                data = await self._read_body(resp, self.config.metadata_max_bytes)
                if data is None:
                    log.warning("%s: /%s is larger than metadata_max_bytes (%d); refusing it",
                                self.label, path, self.config.metadata_max_bytes)
                    item = _Cached(None, None, 0.0, now, oversize=True)
                else:
                    item = _cached(resp, data, now)
            else:
                raise self._refuse(resp, path)
        cache.put(path, item)
        return item

    async def read_small(self, path: str, limit: int = 1 << 20) -> bytes | None:
        item = await self._fetch_cached(self._meta, path)
        return item.data if item.data is not None and len(item.data) <= limit else None

    async def _answer_cached(self, request: web.Request, path: str, item: _Cached) -> web.StreamResponse:
        if item.oversize:
            # Streaming it instead would mean a second request, and a file no viewer could parse.
            raise _fail(502, "upstream metadata file is larger than metadata_max_bytes")
        if item.data is None:
            raise web.HTTPNotFound()
        meta = FileMeta(name=path.rsplit("/", 1)[-1], size=len(item.data), mtime=item.mtime, etag=item.etag or "")
        return await file_response(request, meta, data=item.data)

    # -- Storage -------------------------------------------------------------------------
    async def serve_file(self, request: web.Request, path: str) -> web.StreamResponse:
        name = path.rsplit("/", 1)[-1]
        if name in METADATA_NAMES:
            return await self._answer_cached(request, path, await self._fetch_cached(self._meta, path))
        if self._chunks is not None:
            item = self._chunks.get(path)
            if item is not None and self._fresh(item):
                self._m_chunks[0]()
                return await self._answer_cached(request, path, item)
            self._m_chunks[1]()
        return await self._proxy(request, path, name)

    async def _proxy(self, request: web.Request, path: str, name: str) -> web.StreamResponse:
        """Pass GET/HEAD through: the client's Range and validators up, status and body back."""
        headers = {"Accept-Encoding": "identity"}
        for h in _VALIDATORS:
            if h in request.headers:
                headers[h] = request.headers[h]
        resp = await self._request(request.method, path, headers)
        if self.dav and resp.status in (403, 405):
            # Many WebDAV servers refuse GET on a folder; say "not a file" so the app can redirect to path/.
            resp.close()
            entry = await self.stat(path)
            if entry is not None and entry.is_dir:
                raise web.HTTPNotFound()
            raise self._refuse(resp, path)
        try:
            return await self._relay(request, resp, path, name)
        finally:
            # close() rather than release(): an unfinished body (client gone, upstream cut)
            # must not go back to the pool; a finished one has already released itself.
            resp.close()

    async def _relay(
        self, request: web.Request, resp: aiohttp.ClientResponse, path: str, name: str
    ) -> web.StreamResponse:
        out = {"Content-Type": content_type(name), "Accept-Ranges": "bytes"}
        for h in ("ETag", "Last-Modified", "Content-Range"):
            if h in resp.headers:
                out[h] = resp.headers[h]
        if resp.status == 304:
            out.pop("Content-Type")
            return web.Response(status=304, headers=out)
        if resp.status in (412, 416):
            out["Content-Type"] = "text/plain; charset=utf-8"
            text = "precondition failed: the file has changed\n" if resp.status == 412 else "range not satisfiable\n"
            return web.Response(status=resp.status, headers=out, text=text)
        if self._is_missing(resp.status):
            # Remember it, so the app's "is it a folder?" check after our 404 costs no second request.
            self._meta.put(path, _Cached(None, None, 0.0, time.monotonic()))
            raise web.HTTPNotFound()
        if resp.status not in (200, 206):
            raise self._refuse(resp, path)
        length = resp.content_length
        if request.method == "HEAD":
            if length is not None:
                out["Content-Length"] = str(length)
            return web.Response(status=resp.status, headers=out)
        if length is not None and length <= WHOLE_BODY:
            body = await self._read_body(resp, WHOLE_BODY)
            if body is None:
                raise _fail(502, "upstream sent more than its Content-Length")
            if self._chunks is not None and resp.status == 200:
                self._chunks.put(path, _cached(resp, body, time.monotonic()))
            return web.Response(status=resp.status, headers=out, body=body)
        answer = web.StreamResponse(status=resp.status, headers=out)
        if length is not None:
            answer.content_length = length
        await answer.prepare(request)
        try:
            async for piece in resp.content.iter_chunked(STREAM_PIECE):
                await answer.write(piece)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            # Headers are gone already: cut the connection so the client sees a short body, not a valid file.
            log.warning("%s: upstream broke off /%s mid-answer (%s)", self.label, path, type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("upstream broke off") from None
        await answer.write_eof()
        return answer

    async def ping(self, timeout: float) -> str | None:
        """Why the upstream is not ready (one short phrase), or None when its root answers.

        A HEAD (plain HTTP) or PROPFIND Depth 0 (WebDAV) of the source's root, once, within
        ``timeout``: any answer but a 5xx or refused credentials counts (a bucket's root may be 404).
        """
        method, headers, body = ("PROPFIND", {"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                                 _PROPFIND_BODY) if self.dav else ("HEAD", {"Accept-Encoding": "identity"}, None)
        try:
            resp = await asyncio.wait_for(self._follow(method, URL(self._url("", True), encoded=True), headers,
                                                       body, ""), timeout)
        except asyncio.TimeoutError:
            return "upstream timed out"
        except aiohttp.ClientError as exc:
            return f"upstream unreachable ({type(exc).__name__})"
        except web.HTTPException as exc:
            return (exc.text or exc.reason).strip().split(" ", 1)[-1]
        async with resp:
            if resp.status >= 500:
                return f"upstream answered {resp.status}"
            if resp.status in (401, 403) and not self.anonymous_bucket:
                return f"upstream refused the server's credentials ({resp.status})"
        return None

    # -- listings --------------------------------------------------------------------------
    async def list_dir(self, path: str) -> list[Entry] | None:
        if not self.dav:
            return None  # plain HTTP has no listings
        hit = self._listings.get(path)
        if hit is not None and time.monotonic() - hit[0] < self.config.metadata_ttl:
            return hit[1]
        entries = await self._propfind(path, depth=1)
        result = None if entries is None else entries[1]
        self._listings.put(path, (time.monotonic(), result))
        return result

    async def stat(self, path: str) -> Entry | None:
        known = self._meta.get(path)
        if known is not None and known.data is None and not known.oversize and self._fresh(known):
            return None  # the upstream said 404 for it moments ago: neither a file nor a folder
        if not self.dav:
            resp = await self._request("HEAD", path, {"Accept-Encoding": "identity"})
            async with resp:
                if resp.status == 200:
                    return Entry(path.rsplit("/", 1)[-1], False, resp.content_length or 0)
                return None
        found = await self._propfind(path, depth=0)
        return None if found is None else found[0]

    async def validators(self, paths: list[str]) -> list[str | None]:
        return list(await asyncio.gather(*(self._validator(p) for p in paths)))

    async def _validator(self, path: str) -> str | None:
        """The upstream's ETag (else Last-Modified and length) by HEAD, as fresh as metadata (metadata_ttl)."""
        hit = self._validated.get(path)
        if hit is not None and time.monotonic() - hit[0] < self.config.metadata_ttl:
            return hit[1]
        try:
            resp = await self._request("HEAD", path, {"Accept-Encoding": "identity"})
        except web.HTTPException:
            return None  # unreachable now: nothing is cached, and the read itself will say why
        async with resp:
            if self._is_missing(resp.status):
                value = "absent"
            elif resp.status == 200:
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                value = etag or (f"{modified}/{resp.content_length}" if modified else None)
            else:
                value = None
        self._validated.put(path, (time.monotonic(), value))
        return value

    async def dataset_format(self, path: str) -> str | None:
        if self.dav:
            return await super().dataset_format(path)
        # No listings over plain HTTP: look for each format's marker file instead (cached, 404s too).
        for marker, _ in MARKERS:
            if await self.read_small(f"{path}/{marker}" if path else marker) is not None:
                return await self.format_of(path, [marker])
        return None

    async def _propfind(self, path: str, depth: int) -> tuple[Entry, list[Entry]] | None:
        """(the entry itself, its children) by PROPFIND, or None when absent or not a folder."""
        headers = {"Depth": str(depth), "Content-Type": "application/xml; charset=utf-8"}
        resp = await self._request("PROPFIND", path, headers, directory=depth == 1, body=_PROPFIND_BODY)
        async with resp:
            if resp.status in (404, 410):
                return None
            if resp.status != 207:
                raise self._refuse(resp, path)
            own = resp.url.path.rstrip("/")  # (decoded) hrefs name the URL that answered, after any redirect
            body = await self._read_body(resp, self.config.listing_max_bytes)
        if body is None:
            log.warning("%s: the listing of /%s is larger than listing_max_bytes (%d); refusing it",
                        self.label, path, self.config.listing_max_bytes)
            raise _fail(502, "upstream listing is larger than listing_max_bytes")
        try:
            if len(body) <= PARSE_PIECE:  # a stat's or a small folder's: cheaper here than a thread hop
                me, children = _parse_multistatus(body, own)
            else:
                me, children = await asyncio.get_running_loop().run_in_executor(None, _parse_multistatus, body, own)
        except ET.ParseError:
            raise _fail(502, "upstream sent an unreadable listing") from None
        if me is None or (depth == 1 and not me.is_dir):
            return None
        return me, children
