"""The catalog's connection and the writes every table shares: transactions, outbox records, events.

``Catalog`` is a ``Store`` with the capture, QC and clock tables; the table groups that have a
contract of their own (the outbox the publisher works from, sessions and takes) are separate
classes that take the store, so each sees the connection and the shared writes through one seam.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Self

from agent.catalog.migrations import Database, catalog_migrations
from agent.catalog.records import new_record_id
from agent.errors import CatalogError
from sync.outbox import BlobRef
from sync.records import TEXT_MAX
from sync.wire import utc_now

# Lower numbers go first: the small records that say what happened before the media itself.
PRIORITY = {
    "event": 0,
    "verdict": 1,
    "channel_verdict": 1,
    "session": 1,
    "stream": 1,
    "capture": 2,
    "annotation": 3,
    "readings": 3,
}


# Page cache per connection, in KiB as SQLite counts it (negative). The daemon holds a connection
# per thread (writers, QC, sync, retention...), and SQLite's default of 2 MiB each can reach ~16 MB
# once a device's catalog outgrows them; the OS page cache still holds the file, so a miss costs a
# read from memory, not from the disk (bench/bench_catalog_scale.py: the same query times).
CACHE_KIB = -512


class Store:
    """One connection to the catalog (WAL), migrated on open. One per thread."""

    def __init__(self, path: Path, device_id: str, *, synchronous: Literal["full", "normal"] = "full") -> None:
        self.path = path
        self.data_dir = path.parent
        self.device_id = device_id
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(f"PRAGMA cache_size={CACHE_KIB}")
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{path}: cannot open the catalog: {exc}") from None
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.db = Database(conn)
        try:
            catalog_migrations.apply(self.db)
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{path}: cannot migrate the catalog: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits: a poller that saw nothing to do need not
        look again until it does (this connection's own commits do not change it)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue up instead of failing half-way."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _envelope(self, record_id: str, kind: str, body: Mapping[str, Any], blob: BlobRef | None) -> str:
        env: dict[str, Any] = {
            "schema_version": 1,
            "record_id": record_id,
            "device": self.device_id,
            "kind": kind,
            "created_utc": utc_now(),
            "body": body,
        }
        if blob is not None:
            env["blob"] = {"sha256": blob.sha256, "size": blob.size, "media_type": blob.media_type}
        return json.dumps(env, separators=(",", ":"), sort_keys=True, default=str)

    def write_record(
        self,
        conn: sqlite3.Connection,
        record_id: str,
        kind: str,
        body: Mapping[str, Any],
        blob: BlobRef | None = None,
        blob_rel: str | None = None,
    ) -> None:
        """The outbox row of a record, inside the caller's transaction: it commits with the record."""
        conn.execute(
            "INSERT INTO outbox (record_id, kind, body_json, blob_sha256, blob_size, blob_path, media_type,"
            " priority, blob_state, created_utc) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record_id,
                kind,
                self._envelope(record_id, kind, body, blob),
                blob.sha256 if blob else None,
                blob.size if blob else None,
                blob_rel if blob else None,
                blob.media_type if blob else None,
                PRIORITY.get(kind, 2),
                "pending" if blob else None,
                utc_now(),
            ),
        )

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        stream: str | None = None,
        count: int = 1,
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a drop, overflow, eviction, salvage or operator action; it is synced like data."""
        with self.transaction() as conn:
            return self.insert_event(conn, kind, message, stream=stream, count=count, detail=detail)

    def insert_event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        message: str,
        *,
        stream: str | None = None,
        count: int = 1,
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """The ``events`` row and its outbox row, inside the caller's transaction."""
        record_id = new_record_id()
        if len(message) > TEXT_MAX:  # the central side refuses longer text (sync.records)
            message = message[: TEXT_MAX - 1] + "…"
        row = {
            "record_id": record_id,
            "t_utc_ns": time.time_ns(),
            "t_mono_ns": time.monotonic_ns(),
            "kind": kind,
            "stream": stream,
            "count": count,
            "message": message,
            "detail_json": json.dumps(detail or {}, default=str, sort_keys=True),
        }
        body = {k: v for k, v in row.items() if k != "detail_json"}
        body["detail"] = dict(detail or {})
        conn.execute(f"INSERT INTO events ({','.join(row)}) VALUES ({','.join('?' * len(row))})", tuple(row.values()))
        self.write_record(conn, record_id, "event", body)
        return record_id

    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
