"""The central store on PostgreSQL (psycopg 3), for several ingesters sharing one subscription.

Same operations and SQL as the SQLite store; only the placeholders, the binary column type and
the identity column differ. Each call is its own short transaction on a dedicated connection per
thread, so concurrent ingesters serialise only on the rows they touch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sync.store import SCHEMA, CentralStore


class PostgresStore(CentralStore):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # the 'postgres' extra is not installed
            raise ValueError("PostgreSQL support needs psycopg: pip install 'fieldcap[postgres]'") from exc
        self._psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        try:
            self._conn()
        except psycopg.OperationalError as exc:
            raise ValueError(f"cannot connect to the central store {_redact(url)}: {exc}".strip()) from None
        self.init_schema()

    def schema(self) -> list[str]:
        out = []
        for stmt in SCHEMA:
            stmt = stmt.replace("data BLOB", "data BYTEA").replace("payload BLOB", "payload BYTEA")
            stmt = stmt.replace("id INTEGER PRIMARY KEY", "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
            out.append(stmt)
        return out

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.url, autocommit=False)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.cursor() as cur:
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
