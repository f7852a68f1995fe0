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
from typing import Any, Callable

HEADER = "X-Request-ID"
KEY = "ngserve.request_id"  # request key
_VALID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")  # no spaces, quotes or line breaks to forge log lines
# A random prefix per process and a counter: unique across workers and restarts, and no
# system call per request as os.urandom would make.
_PREFIX = os.urandom(6).hex()
_count = itertools.count(1)
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("ngserve_request_id", default=None)


def assign(request, trusted: Callable[[Any], bool]) -> str:
    """The request's id (a well-formed one from a ``trusted(request)`` proxy, else a new one), made current."""
    given = request.headers.get(HEADER)
    rid = given if given and _VALID.match(given) and trusted(request) else f"{_PREFIX}{next(_count):06x}"
    request[KEY] = rid
    _current.set(rid)  # the handler's task: upstream requests and log records made for it see it
    return rid


def current_request_id() -> str | None:
    """The id of the request being answered in this task, if any."""
    return _current.get()


def clear() -> None:
    """Forget the current id once its request is done: the next request on a keep-alive connection
    runs in the same task, and one the parser refuses never gets an id of its own."""
    _current.set(None)
