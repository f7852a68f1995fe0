"""Short links in PostgreSQL (``[server] states_url``), shared by every replica.

The same :class:`~server.states.StateStore` calls as SQLite, with psycopg 3
(sync, run in the default executor like SQLite).  Connections are kept in a
small pool; one the database dropped is replaced on the spot (see
:meth:`PostgresStore._run`).  The budget check and the insert run in one
transaction under an advisory lock, so two replicas storing at once cannot both
squeeze past ``states_max_bytes``.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import psycopg

from .states import StateStore, StoreUnavailable

_LOCK_KEY = 0x6E67_7374  # "ngst": the advisory lock serialising schema creation and budget checks
_POOL = 4  # idle connections kept; more are opened under load and closed after use
CONNECT_TIMEOUT = 5  # seconds
T = TypeVar("T")


class PostgresStore(StateStore):
    def __init__(self, url: str, password: str | None) -> None:
        self.url, self.password = url, password
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._run(self._create_schema)

    @staticmethod
    def _create_schema(conn: psycopg.Connection) -> None:
        # Under the lock: replicas starting together would otherwise race on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ngserve_states "
            "(id text PRIMARY KEY, body text NOT NULL, created timestamptz NOT NULL DEFAULT now())"
        )

    def _where(self) -> str:
        parts = urlsplit(self.url)  # its port was checked with the config
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    def _open(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, password=self.password, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            # libpq's first line ends with the reason: '…port 5432 failed: Connection refused'
            first = str(exc).strip().split("\n", 1)[0]
            reason = first.rsplit(": ", 1)[-1].strip() or type(exc).__name__
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self._where()}: {reason}") from None

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` in a transaction on a pooled connection, committed on success.

        A pooled connection the database dropped (it restarted, or closed idle sessions) fails
        at its first statement: the work is then done once more on a new connection, which is
        safe as every call here is idempotent (a state's id is its content).
        """
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            pooled = conn is not None and not conn.closed
            if not pooled:
                conn = self._open()
            try:
                with conn.transaction():
                    result = work(conn)
            except psycopg.OperationalError as exc:
                conn.close()  # broken: never pooled again
                if pooled and attempt == 1:
                    continue
                raise StoreUnavailable(f"PostgreSQL at {self._where()}: {type(exc).__name__}") from None
            except psycopg.Error as exc:
                conn.close()
                raise StoreUnavailable(f"PostgreSQL at {self._where()}: {type(exc).__name__}") from None
            except BaseException:
                conn.close()
                raise
            with self._lock:
                if len(self._idle) < _POOL:
                    self._idle.append(conn)
                    return result
            conn.close()
            return result
        raise AssertionError("unreachable")

    def store(self, state_id: str, body: str, max_bytes: int) -> bool:
        def work(conn: psycopg.Connection) -> bool:
            if conn.execute("SELECT 1 FROM ngserve_states WHERE id = %s", (state_id,)).fetchone():
                return True
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            if self._used_bytes(conn) + len(body.encode()) > max_bytes:
                return False
            conn.execute(
                "INSERT INTO ngserve_states (id, body) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", (state_id, body)
            )
            return True

        return self._run(work)

    @staticmethod
    def _used_bytes(conn: psycopg.Connection) -> int:
        # The table with its index and TOAST, from the catalog: no scan of the table.
        return conn.execute("SELECT pg_total_relation_size('ngserve_states')").fetchone()[0]

    def load(self, state_id: str) -> str | None:
        row = self._run(lambda conn: conn.execute("SELECT body FROM ngserve_states WHERE id = %s", (state_id,)).fetchone())
        return row[0] if row else None

    def size(self) -> int:
        return self._run(self._used_bytes)

    def check(self) -> None:
        self._run(lambda conn: conn.execute("SELECT 1 FROM ngserve_states LIMIT 1").fetchall())

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
