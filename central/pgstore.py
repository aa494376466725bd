"""The central store on PostgreSQL (psycopg 3), for several ingesters sharing one subscription.

Same operations and SQL as the SQLite store; only the placeholders, the binary column type and
the identity column differ. Each thread has its own connection; a batch is one transaction, so
concurrent ingesters serialise only on the rows they touch. Two ingesters that insert the same
keys in a different order can deadlock; PostgreSQL aborts one of them, and ``is_transient`` tells
the ingester to run that batch again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.extras import require
from central.errors import StoreError
from central.store import CentralStore

# SQLSTATE classes worth a retry: serialization failure, deadlock, connection trouble.
TRANSIENT_SQLSTATES = ("40001", "40P01", "08000", "08003", "08006", "57P01")


class PostgresStore(CentralStore):
    placeholder = "%s"

    def __init__(self, url: str, *, schema_upto: int | None = None) -> None:
        super().__init__()
        psycopg = require("psycopg", "central", "the PostgreSQL store")
        self._psycopg = psycopg
        self.url = url
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        try:
            self._conn()
            self.init_schema(schema_upto)
        except psycopg.Error as exc:
            raise StoreError(f"cannot use the central store {redact(url)}: {exc}".strip()) from None

    def prelude(self) -> list[str]:
        # Several ingesters may create or upgrade the schema at once; one lock makes that orderly.
        return ["SELECT pg_advisory_xact_lock(72696573)"]

    def has_table(self, cur: Any, name: str) -> bool:
        return bool(self._exec(cur, "SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0])

    def database_user(self) -> str | None:
        with self._tx() as cur:
            return str(cur.execute("SELECT session_user").fetchone()[0])

    def dialect(self, stmt: str) -> str:
        pg = stmt.replace("payload BLOB", "payload BYTEA")
        return pg.replace("id INTEGER PRIMARY KEY", "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._psycopg.connect(self.url, autocommit=False)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _begin(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.cursor() as cur:
            try:
                yield cur
            except BaseException:
                if not conn.broken:
                    conn.rollback()
                raise
            conn.commit()

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self._psycopg.OperationalError):
            return True
        return getattr(exc, "sqlstate", None) in TRANSIENT_SQLSTATES

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
