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

The client POSTs its state as it changes (the hash is out of its sight, so it binds none);
a notebook viewer's latest is kept (:mod:`server.viewer_states`).  A notebook viewer
(``ngstate.show``) is a page without a ``#!`` state whose token Python gave a state
(``PUT /-/viewer/state/<token>``): its event stream carries that state, and every later one.
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

from . import auth
from .responses import accepts_gzip
from .viewer_states import ViewerStates

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
STATES = web.AppKey("viewer_states", ViewerStates)
# On a protected deployment notebook viewers' states are read and set as short links are stored.
_SIGN_IN = "sign in or send a share token to read or set a viewer's state"


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
    """The client's event stream.  For a viewer whose state Python set (a notebook's), each new
    state made elsewhere (by Python, by another client) is pushed; for others it stays open and silent."""
    token = request.match_info["token"]
    states = request.app[STATES]
    client, seen = request.query.get("c", ""), request.query.get("gs", "")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b": ngserve\n\n")
    stopping = request.app[STOPPING]
    try:
        while not stopping.is_set():
            entry = states.get(token)
            if entry is not None and entry.generation != seen:
                seen = entry.generation
                if client not in entry.holders:  # a client does not get back a state it has
                    await resp.write(entry.message())
            waits = [asyncio.ensure_future(stopping.wait())]
            if entry is not None:
                waits.append(asyncio.ensure_future(entry.changed.wait()))
            done, pending = await asyncio.wait(waits, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if not done:
                await resp.write(b": keepalive\n\n")
    except ConnectionResetError:
        pass  # the tab was closed
    return resp


def _state_body(data: bytes) -> dict:
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested past json's limit
        msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("s", {}), dict):
        raise web.HTTPBadRequest(text="expected a JSON object with a state object 's'\n")
    return msg


async def _state(request: web.Request) -> web.Response:
    """A client's state update (``{s, g, pg, c}``), kept as a notebook viewer's latest; 412 when a newer
    state (Python's, another page's) is there that the client has not seen (it comes on its event stream)."""
    data = await request.read()
    msg = _state_body(data)
    if "g" not in msg:
        raise web.HTTPBadRequest(text="expected a JSON object with a generation 'g'\n")
    states, token = request.app[STATES], request.match_info["token"]
    if "s" not in msg or states.get(token) is None:  # not a notebook viewer's: acknowledged, not kept
        return web.json_response({"g": str(msg["g"])})
    await request.app[auth.AUTHORITY].require_identity(request, _SIGN_IN)
    kept = states.post(token, msg["s"], str(msg.get("c", "")), str(msg.get("pg", "")), len(data))
    if kept is None:
        raise web.HTTPPreconditionFailed(text="412 the viewer has a newer state: it comes on the event stream\n")
    return web.json_response({"g": kept.generation})


async def _get_state(request: web.Request) -> web.Response:
    """The viewer's latest state and its generation, for Python (``Viewer.state``)."""
    await request.app[auth.AUTHORITY].require_identity(request, _SIGN_IN)
    entry = request.app[STATES].get(request.match_info["token"])
    if entry is None or entry.state is None:
        raise web.HTTPNotFound(text="404 no state is known for this viewer\n")
    return web.json_response({"s": entry.state, "g": entry.generation}, headers={"Cache-Control": "no-store"})


async def _put_state(request: web.Request) -> web.Response:
    """Python sets the viewer's state (``{s, b}``; ``b``: the base URL its data URLs start with, which a
    page reached through another base rewrites to its own); its pages get it on their event streams."""
    await request.app[auth.AUTHORITY].require_identity(request, _SIGN_IN)
    data = await request.read()
    msg = _state_body(data)
    if "s" not in msg or not isinstance(msg.get("b") or "", str):
        raise web.HTTPBadRequest(text="expected a JSON object with a state object 's' and a base URL 'b'\n")
    entry = request.app[STATES].set(request.match_info["token"], msg["s"], len(data), msg.get("b"))
    return web.json_response({"g": entry.generation})


async def _action(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="")


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def add_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app[STATES] = ViewerStates()
    app.on_shutdown.append(_stop_streams)
    r = app.router
    r.add_get("/-/viewer", _redirect)
    r.add_get("/-/viewer/", _redirect)
    r.add_get("/-/viewer/v/{token}/", _static)
    r.add_get("/-/viewer/v/{token}/{name}", _static)
    r.add_get("/-/viewer/events/{token}", _events)
    r.add_post("/-/viewer/state/{token}", _state)
    r.add_get("/-/viewer/state/{token}", _get_state)
    r.add_put("/-/viewer/state/{token}", _put_state)
    r.add_post("/-/viewer/action/{token}", _action)
