"""One decoding and one authorization target per request.

aiohttp routes on the *decoded* path, but access is judged on path segments: if
the two were derived separately, an encoded ``/`` or ``-`` or a double encoding
could reach a handler by a path the checks never saw.  So the raw path is
parsed once (:func:`server.paths.parse_target`), stored on the request, and
both the auth middleware and the handler use that one :class:`Target`.  A
handler declares which kinds of path it serves with :func:`serves`; a route
that matched a path of another kind (``/%2D/open/…`` decodes to the
``/-/open/`` route but names the data path ``-/open/…``) answers 404.
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from .paths import SERVER_PAGE, Target, parse_target

TARGET = "ngserve.target"  # request key: the request's Target
_SERVER_ONLY = frozenset({"server"})


def serves(*kinds: str) -> Callable:
    """Mark a handler as serving data paths of these kinds (``data``, ``share``, ``open``)."""

    def mark(handler: Callable) -> Callable:
        handler.serves = frozenset(kinds)
        return handler

    return mark


def decode(request: web.Request) -> Target:
    """The request's target, decoded once; 404 for a hostile path or one its route does not serve."""
    if request.match_info.http_exception is not None:
        target = SERVER_PAGE  # 404/405 from the router: nothing is served, so nothing to authorize
    else:
        target = parse_target(request.rel_url.raw_path)
        if target is None or target.kind not in getattr(request.match_info.handler, "serves", _SERVER_ONLY):
            raise web.HTTPNotFound()
    request[TARGET] = target
    return target

