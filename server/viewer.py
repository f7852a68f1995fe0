"""Neuroglancer's own client, served from the installed ``neuroglancer`` package.

The wheel ships the Python-integration build.  It finds its token in a path
matching ``…/v/<token>/`` and keeps an EventSource open at ``…/events/<token>``;
without one it shows "Disconnected from Python server".  We answer that
stream (and the state POSTs the client sends) so the viewer runs cleanly, while
the view itself comes from the ``#!`` state in the URL hash, which
``viewer_state.js`` (put into ``index.html``) applies and keeps up to date in
place of the client's own binding; that file says why.  With a ``#!`` state that
script also gives the client a silent stand-in for the event stream, so such a
page makes no never-ending request (headless screenshots can finish).
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import json
import re
from functools import lru_cache

from aiohttp import web

from ngstate import NGSERVE_VIEWER_PATH as VIEWER_PATH
from ngstate import encode_fragment

from .responses import accepts_gzip

_MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript",
    ".css": "text/css",
    ".map": "application/json",
    ".wasm": "application/wasm",
}
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\.(?:js|map|css|wasm|html)$")
KEEPALIVE_SECONDS = 15.0
# Set at shutdown so open event streams end at once instead of holding the
# server's graceful shutdown until its timeout.
STOPPING = web.AppKey("viewer_stopping", asyncio.Event)


@lru_cache(maxsize=None)
def _client_file(name: str) -> tuple[bytes, bytes] | None:
    """(plain, gzipped) bytes of a client file, read and compressed once per process."""
    if not _NAME.match(name):
        return None
    path = importlib.resources.files("neuroglancer.static").joinpath("client", name)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if name == "index.html":
        # An empty icon, or the browser asks for /favicon.ico, which is data space.  The state
        # script must run before the client's deferred bundles, so it goes first in <head>.
        script = importlib.resources.files("server").joinpath("viewer_state.js").read_bytes()
        head = b'<head><link rel="icon" href="data:,"><script>' + script + b"</script>"
        data = data.replace(b"<head>", head, 1)
    return data, gzip.compress(data, 6)


def viewer_url(state: dict | None = None, base: str = "") -> str:
    """The built-in viewer's URL, with ``state`` in the hash as ``neuroglancer.to_url`` encodes it."""
    return base + VIEWER_PATH + (encode_fragment(state) if state else "")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(VIEWER_PATH)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info.get("name") or "index.html"
    found = _client_file(name)
    if found is None:
        raise web.HTTPNotFound()
    plain, packed = found
    ext = name[name.rfind(".") :]
    # Bundle names carry a content hash; index.html does not and must revalidate.
    cache = "no-cache" if name == "index.html" else "public, max-age=31536000, immutable"
    headers = {"Content-Type": _MIME[ext], "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=packed, headers=headers)
    return web.Response(body=plain, headers=headers)


async def _events(request: web.Request) -> web.StreamResponse:
    """An event stream that stays open and never pushes state: the URL hash owns it."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b": ngserve\n\n")
    stopping = request.app[STOPPING]
    try:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                await resp.write(b": keepalive\n\n")
    except ConnectionResetError:
        pass  # the tab was closed
    return resp


async def _state(request: web.Request) -> web.Response:
    """Acknowledge the client's state update so it does not retry."""
    try:
        msg = json.loads(await request.read())
        generation = msg["g"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested past json's limit
        raise web.HTTPBadRequest(text="expected a JSON object with a generation 'g'\n")
    return web.json_response({"g": str(generation)})


async def _action(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="")


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def add_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    r = app.router
    r.add_get("/-/viewer", _redirect)
    r.add_get("/-/viewer/", _redirect)
    r.add_get("/-/viewer/v/{token}/", _static)
    r.add_get("/-/viewer/v/{token}/{name}", _static)
    r.add_get("/-/viewer/events/{token}", _events)
    r.add_post("/-/viewer/state/{token}", _state)
    r.add_post("/-/viewer/action/{token}", _action)
