"""A request id per request: in the access log, in error lines, to upstreams, and in the answer.

A trusted proxy's ``X-Request-ID`` is kept, so one id follows a request from
the load balancer through ngserve to the upstream; anyone else's is replaced
(a client could otherwise forge ids that collide with others' in the logs).
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re

HEADER = "X-Request-ID"
KEY = "ngserve.request_id"  # request key
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")  # no spaces, quotes or line breaks to forge log lines
# A random prefix per process and a counter: unique across workers and restarts, and no
# system call per request as os.urandom would make.
_PREFIX = os.urandom(6).hex()
_count = itertools.count(1)
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("ngserve_request_id", default=None)


def assign(request, trusted: bool) -> str:
    """The request's id (the proxy's when ``trusted`` and well-formed, else a new one), made current."""
    given = request.headers.get(HEADER) if trusted else None
    rid = given if given and _VALID.match(given) else f"{_PREFIX}{next(_count):06x}"
    request[KEY] = rid
    _current.set(rid)  # the handler's task: upstream requests and log records made for it see it
    return rid


def current_request_id() -> str | None:
    """The id of the request being answered in this task, if any."""
    return _current.get()
