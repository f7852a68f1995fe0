"""Short links: Neuroglancer states stored in SQLite or PostgreSQL and served back by id.

``POST /-/api/states`` stores a state and answers ``{"id", "url"}``; the short
URL is ``<viewer>#!<public base>/-/api/states/<id>``, which Neuroglancer
fetches itself.  Ids are derived from the content, so posting the same state
twice gives the same link.  By default the store is a SQLite file in the
server's data folder, which every worker process opens on its own (WAL mode
allows that); with ``[server] states_url = "postgresql://…"`` it is PostgreSQL
(:mod:`server.states_pg`), so replicas behind a load balancer share it.  Both
are a :class:`StateStore`.

A stored state can hold share tokens in its source URLs, so shared caches must
not keep it, and when any mount is protected only a signed-in user or a token
holder may store one (else the server is an open paste bin under its name).
Storing is also rate-limited per client address (a token bucket; 429 with
Retry-After), and the store as a whole has a size budget (507 when full).
Reading is never limited.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from aiohttp import web

from ngstate.registry import default_data_dir  # the one place: servers register there too

from . import auth
from .config import ConfigError, ServerConfig
from .throttle import RateLimiter, Throttled, too_many_requests

MAX_BYTES = 5 * 1024 * 1024
DB_NAME = "states.sqlite3"
LIMITER = web.AppKey("states_limiter", RateLimiter)
_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class StoreUnavailable(Exception):
    """The store does not answer (database down, disk unreadable); the message is one line."""


class StateStore(ABC):
    """Where short links live: blocking calls, run in the default executor by the handlers."""

    @abstractmethod
    def store(self, state_id: str, body: str, max_bytes: int) -> bool:
        """Store a state; False when the store has no room left for it (a known state always has)."""

    @abstractmethod
    def load(self, state_id: str) -> str | None:
        """The stored body, or None."""

    @abstractmethod
    def size(self) -> int:
        """Bytes the store uses, as the budget ``states_max_bytes`` counts them."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers a query: /-/ready asks."""

    def close(self) -> None:
        """Release pooled connections."""


class SQLiteStore(StateStore):
    """The embedded default: a file in the server's data folder, opened by every worker (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connect().close()  # the schema, on start

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS states (id TEXT PRIMARY KEY, body TEXT NOT NULL, created REAL NOT NULL)")
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        try:
            yield conn
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from None
        finally:
            conn.close()

    def store(self, state_id: str, body: str, max_bytes: int) -> bool:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the budget check and the insert as one step, across workers
            if conn.execute("SELECT 1 FROM states WHERE id = ?", (state_id,)).fetchone() is None:
                if self._used_bytes(conn) + len(body.encode()) > max_bytes:
                    conn.rollback()
                    return False
                conn.execute("INSERT INTO states VALUES (?, ?, julianday('now'))", (state_id, body))
            conn.commit()
            return True

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        """The database's size in use, WAL included; a few PRAGMAs, not a scan of the table."""
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * conn.execute("PRAGMA page_size").fetchone()[0]

    def size(self) -> int:
        with self._conn() as conn:
            return self._used_bytes(conn)

    def check(self) -> None:
        with self._conn() as conn:
            conn.execute("SELECT 1 FROM states LIMIT 1").fetchall()

    def load(self, state_id: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT body FROM states WHERE id = ?", (state_id,)).fetchone()
        return row[0] if row else None


STORE = web.AppKey("states_store", StateStore)


class StateError(ValueError):
    """A POSTed body that is not a Neuroglancer state; the message is one line for the client."""


_TOO_DEEP = "the state is nested too deeply to be a Neuroglancer state"


def state_body(data: bytes) -> str:
    """The compact JSON to store for a POSTed state, or :class:`StateError` saying what is wrong."""
    try:
        state = json.loads(data)
    except RecursionError:  # json's C parser recurses once per nesting level
        raise StateError(_TOO_DEEP) from None
    except ValueError:  # UnicodeDecodeError included
        raise StateError("the body is not JSON: send a Neuroglancer state object") from None
    if not isinstance(state, dict) or not isinstance(state.get("layers"), (list, dict)):
        raise StateError('expected a Neuroglancer state: a JSON object with "layers"')
    try:
        # allow_nan=False: Python reads NaN, Infinity and 1e999, but the viewer fetches the state
        # with a strict JSON parser, so storing one would make a short link that never opens.
        return json.dumps(state, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise StateError(_TOO_DEEP) from None
    except ValueError:
        raise StateError("the state holds NaN or Infinity (or a number as large), which is not JSON") from None


def state_id(body: str) -> str:
    """A 16-character URL-safe id from the state's content."""
    return base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()[:12]).decode()


async def _read_limited(request: web.Request) -> bytes:
    """The body, refusing more than MAX_BYTES (the app's own 1 MB limit is too small for states)."""
    if request.content_length is not None and request.content_length > MAX_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BYTES, actual_size=request.content_length, text=f"a state may be at most {MAX_BYTES} bytes\n"
        )
    parts, size = [], 0
    while size <= MAX_BYTES:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    data = b"".join(parts)
    if len(data) > MAX_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BYTES, actual_size=len(data), text=f"a state may be at most {MAX_BYTES} bytes\n"
        )
    return data


async def post_state(request: web.Request) -> web.Response:
    from .app import CONFIG, public_base
    from .viewer import VIEWER_PATH

    await request.app[auth.AUTHORITY].require_identity(request, "sign in or send a share token to store a short link")
    try:
        request.app[LIMITER].take(request.remote or "")
    except Throttled as exc:
        raise too_many_requests(exc, "too many short links stored from this address") from None
    data = await _read_limited(request)
    try:
        body = state_body(data)
    except StateError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    sid = state_id(body)
    budget = request.app[CONFIG].states_max_bytes
    if not await _run(request.app[STORE].store, sid, body, budget):
        # 507 Insufficient Storage says exactly this; unlike 429/503 it does not suggest that
        # waiting helps: the store stays full until its operator raises the budget or prunes it.
        raise web.HTTPInsufficientStorage(
            text="507 the short-link store is full (server.states_max_bytes); ask the operator to raise or prune it\n"
        )
    base = public_base(request)
    state_url = f"{base}/-/api/states/{sid}"
    return web.json_response(
        {"id": sid, "url": f"{base}{VIEWER_PATH}#!{state_url}", "state_url": state_url}, status=201
    )


async def get_state(request: web.Request) -> web.Response:
    sid = request.match_info["id"]
    if not sid or len(sid) > 64 or not set(sid) <= _ID_CHARS:
        raise web.HTTPNotFound(text="no such state\n")
    body = await _run(request.app[STORE].load, sid)
    if body is None:
        raise web.HTTPNotFound(text=f"no state with id {sid}\n")
    # The id is the content's hash, so an answer never changes; "private": it may hold share tokens.
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "private, max-age=31536000, immutable"}
    )


async def _run(call, *args):
    """A store call in the default executor; 503 with one line when the store does not answer."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="503 the short-link store does not answer; try again shortly\n") from None


def open_store(config: ServerConfig) -> StateStore:
    """The configured store: PostgreSQL for ``states_url``, else SQLite in the data folder."""
    if config.states_url:
        try:
            from .states_pg import PostgresStore  # psycopg is needed only then
        except ImportError:
            raise ConfigError("server.states_url needs psycopg: pip install 'ngserve[postgres]'") from None
        try:
            return PostgresStore(config.states_url, config.states_password)
        except StoreUnavailable as exc:
            raise ConfigError(f"server.states_url: {exc}") from None
    folder = Path(config.data_dir or default_data_dir()).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(folder / DB_NAME)


def add_routes(app: web.Application) -> None:
    """Register the short-link endpoints; the store's schema is created now."""
    from .app import CONFIG

    app[STORE] = open_store(app[CONFIG])
    app.on_cleanup.append(_close_store)
    app[LIMITER] = RateLimiter(app[CONFIG].states_per_minute, app[CONFIG].states_burst)
    app.router.add_post("/-/api/states", post_state)
    app.router.add_get("/-/api/states/{id}", get_state)


async def _close_store(app: web.Application) -> None:
    app[STORE].close()
