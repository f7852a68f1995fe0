"""The access log: who read what, and never a secret.

Like aiohttp's ``%a "%r" %s %b %Tfs`` line, with the principal appended
(``user:alice``, ``token:em/run1``, ``-``).  With ``log_format = "json"`` every
log record, access lines and errors alike, is one JSON object carrying the
request id (:mod:`server.request_id`).  The access logger also feeds the
request metrics (:mod:`server.metrics`): it is the one hook that runs once the
whole body is out, with its size and the time taken.  Share tokens in the ``token`` query
parameter and in the ``/-/t/<token>/`` path prefix are replaced by ``REDACTED``,
since share links carry them in their source URLs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from urllib.parse import unquote

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from . import metrics, request_id
from .auth import PRINCIPAL
from .log_writer import QueuedStreamHandler
from .request_id import KEY as REQUEST_ID, current_request_id
from .routing import TARGET

_lines = True  # whether access lines are written (metrics are counted either way)

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
    @property
    def enabled(self) -> bool:
        return True  # aiohttp calls log() only when enabled: the metrics need every request

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        request_id.clear()
        target = request.get(TARGET)
        metrics.observe_request(target.kind if target else "server", response.status, response.body_length, time)
        if not metrics.watching_connections:
            # aiohttp names no public way from an app to its Server; its RequestHandler knows it.
            metrics.watch_server(getattr(request.protocol, "_manager", None))
        if not _lines:
            return
        v = request.version
        path = redact(request.rel_url.raw_path_qs)
        principal = request.get(PRINCIPAL, "-")
        extra = None
        if _json:
            extra = {"fields": {
                "type": "access", "remote": request.remote, "method": request.method, "path": path,
                "status": response.status, "bytes": response.body_length, "seconds": round(time, 6),
                "principal": principal, "request_id": request.get(REQUEST_ID),
            }}
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs %s',
            request.remote,
            request.method,
            path,
            v.major,
            v.minor,
            response.status,
            response.body_length,
            time,
            principal,
            extra=extra,
        )


_json = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id, and an error's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        obj = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if fields:
            obj.update(fields)
        else:
            rid = current_request_id()
            if rid:
                obj["request_id"] = rid
        if record.exc_info:
            obj["error"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(log_format: str, access_lines: bool) -> None:
    """The process's log handler on stderr, text or JSON, and whether access lines are written.

    Lines are written by a thread of their own (:mod:`server.log_writer`): stderr nobody reads
    must not stall the event loop.  Python's warnings go the same way rather than straight to stderr.
    """
    global _json, _lines
    _json, _lines = log_format == "json", access_lines
    handler = QueuedStreamHandler(sys.stderr)
    if _json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)


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
