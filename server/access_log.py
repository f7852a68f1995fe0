"""The access log: who read what, and never a secret.

Like aiohttp's ``%a "%r" %s %b %Tfs`` line, with the principal appended
(``user:alice``, ``token:em/run1``, ``-``).  Share tokens in the ``token`` query
parameter and in the ``/-/t/<token>/`` path prefix are replaced by ``REDACTED``,
since share links carry them in their source URLs.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from .auth import PRINCIPAL

_PARAM = re.compile(r"((?:^|[?&;])([^=&;#?\s]+)=)[^&;#]*")
# The router matches decoded paths, so /%2D/%74/<token>/ must be hidden like /-/t/<token>/.
_TOKEN_PATH = re.compile(r"(?i)(/(?:-|%2d)/(?:t|%74)/)[^/?#\s]+")


def _hide_token_param(m: re.Match) -> str:
    # Compare the decoded name: the server reads ?tok%65n= as ?token=, so the log must too.
    return m.group(1) + "REDACTED" if unquote(m.group(2)).lower() == "token" else m.group(0)


def redact(path_qs: str) -> str:
    """``path?query`` (or a text naming URLs) with every share token hidden."""
    return _TOKEN_PATH.sub(r"\1REDACTED", _PARAM.sub(_hide_token_param, path_qs))


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        v = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs %s',
            request.remote,
            request.method,
            redact(request.rel_url.raw_path_qs),
            v.major,
            v.minor,
            response.status,
            response.body_length,
            time,
            request.get(PRINCIPAL, "-"),
        )


class OneLineBadRequests(logging.Filter):
    """aiohttp logs every malformed request (a NUL in the path, a bad header) with a traceback at
    ERROR; a hostile client could flood the log that way.  The client already got a 400 and the
    access log has its line, so keep one line naming the parser's complaint."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "bad request: %s", (str(exc.message).splitlines()[0] if exc.message else "",)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_bad_requests() -> None:
    """Install :class:`OneLineBadRequests` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in logger.filters):
        logger.addFilter(OneLineBadRequests())
