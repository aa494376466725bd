"""Sessions, takes and the streams of a session: the catalog's rows for time and recording.

``Catalog.sessions`` (kept apart because it is the sessions API's storage, with
``agent.sessions.takes`` its only writer). Each row that matters centrally gets its outbox record in the
same transaction, like captures: a session's ``start`` / ``end`` / ``reopen``, a take when it ends,
a stream the first time its settings are seen.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from agent.catalog.records import new_record_id
from agent.catalog.store import Store
from agent.errors import CatalogError
from sync.wire import utc_now


class SessionRows:
    """Sessions, their streams and takes, on the catalog's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add_session(self, row: Mapping[str, Any]) -> str:
        """Insert a session row and its ``session`` record; return the record id."""
        cols = dict(row)
        record_id = new_record_id()
        with self._store.transaction() as conn:
            conn.execute(
                f"INSERT INTO sessions ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", tuple(cols.values())
            )
            self._store.write_record(
                conn, record_id, "session", self._session_body(conn, str(cols["session_id"]), "start")
            )
        return record_id

    def end_session_row(self, session_id: str, changes: Mapping[str, Any]) -> str:
        """Set a session's end fields and send the updated ``session`` record."""
        record_id = new_record_id()
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._store.transaction() as conn:
            cur = conn.execute(f"UPDATE sessions SET {sets} WHERE session_id = ?", (*changes.values(), session_id))
            if cur.rowcount != 1:
                raise CatalogError(f"no session {session_id!r} in {self._store.path}")
            self._store.write_record(conn, record_id, "session", self._session_body(conn, session_id, "end"))
        return record_id

    def reopen_session_row(
        self, session_id: str, changes: Mapping[str, Any], *, event: str, message: str, detail: Mapping[str, Any]
    ) -> str:
        """Reopen an ended session: its fields, its ``reopen`` record and an audit event, in one transaction."""
        record_id = new_record_id()
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._store.transaction() as conn:
            cur = conn.execute(
                f"UPDATE sessions SET {sets} WHERE session_id = ? AND ended_utc IS NOT NULL",
                (*changes.values(), session_id),
            )
            if cur.rowcount != 1:
                raise CatalogError(f"no ended session {session_id!r} in {self._store.path}")
            self._store.write_record(conn, record_id, "session", self._session_body(conn, session_id, "reopen"))
            self._store.insert_event(conn, event, message, detail=detail)
        return record_id

    @staticmethod
    def _session_body(conn: sqlite3.Connection, session_id: str, event: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        body: dict[str, Any] = {"event": event}
        for key in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
            value = row[key]
            if key.endswith("_json"):
                body[key.removesuffix("_json")] = json.loads(value) if value else None
            else:
                body[key] = value
        return body

    def session(self, session_id: str) -> sqlite3.Row | None:
        return self._store.conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()  # type: ignore[no-any-return]

    def sessions_like(self, prefix: str) -> list[sqlite3.Row]:
        """Sessions whose id starts with ``prefix`` (so people can type a short prefix)."""
        return list(
            self._store.conn.execute(
                "SELECT * FROM sessions WHERE session_id LIKE ? ESCAPE '\\' ORDER BY started_utc",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            )
        )

    def recent_sessions(self, limit: int = 10) -> list[sqlite3.Row]:
        return list(self._store.conn.execute("SELECT * FROM sessions ORDER BY started_utc DESC LIMIT ?", (limit,)))

    def open_sessions(self, kind: str | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM sessions WHERE ended_utc IS NULL"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " AND kind = ?"
            args = (kind,)
        return list(self._store.conn.execute(sql + " ORDER BY started_utc", args))

    def find_or_add_stream(self, device: str, session_id: str, modality: str, settings: Mapping[str, Any]) -> str:
        """The ``streams`` row for (device, session, settings in force), created with its record."""
        settings_json = json.dumps(settings, default=str, sort_keys=True)
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT stream_id FROM streams WHERE device = ? AND session_id = ? AND settings_json = ?",
                (device, session_id, settings_json),
            ).fetchone()
            if row is not None:
                return str(row[0])
            stream_id = new_record_id()
            now = utc_now()
            conn.execute(
                "INSERT INTO streams (stream_id, device, session_id, modality, settings_json, created_utc)"
                " VALUES (?,?,?,?,?,?)",
                (stream_id, device, session_id, modality, settings_json, now),
            )
            body = {
                "stream_id": stream_id,
                "device": device,
                "session_id": session_id,
                "modality": modality,
                "settings": json.loads(settings_json),
                "created_utc": now,
            }
            self._store.write_record(conn, stream_id, "stream", body)
        return stream_id

    def stream_settings(self, stream_id: str) -> dict[str, Any] | None:
        """The settings a stream was recorded with (None for an unknown stream)."""
        row = self._store.conn.execute("SELECT settings_json FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def add_take(self, row: Mapping[str, Any]) -> None:
        """Insert a take as it starts (status ``recording``); it is synced when it ends."""
        cols = dict(row)
        with self._store.transaction() as conn:
            conn.execute(
                f"INSERT INTO takes ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", tuple(cols.values())
            )

    def finish_take(self, take_id: str, changes: Mapping[str, Any]) -> str:
        """Set a take's end fields and send its ``take`` record; return the record id."""
        record_id = new_record_id()
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._store.transaction() as conn:
            conn.execute(f"UPDATE takes SET {sets} WHERE take_id = ?", (*changes.values(), take_id))
            row = conn.execute("SELECT * FROM takes WHERE take_id = ?", (take_id,)).fetchone()
            if row is None:
                raise CatalogError(f"no take {take_id!r} in {self._store.path}")
            body: dict[str, Any] = {}
            for key in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
                value = row[key]
                body[key.removesuffix("_json")] = json.loads(value) if key.endswith("_json") and value else value
            self._store.write_record(conn, record_id, "take", body)
        return record_id

    def take(self, take_id: str) -> sqlite3.Row | None:
        return self._store.conn.execute("SELECT * FROM takes WHERE take_id = ?", (take_id,)).fetchone()  # type: ignore[no-any-return]

    def takes(self, session_id: str, item_id: str | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM takes WHERE session_id = ?"
        args: list[Any] = [session_id]
        if item_id is not None:
            sql += " AND item_id = ?"
            args.append(item_id)
        return list(self._store.conn.execute(sql + " ORDER BY t_start_mono_ns", args))

    def latest_take(self, session_id: str, item_id: str, round_no: int | None) -> sqlite3.Row | None:
        return self._store.conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM takes WHERE session_id = ? AND item_id = ? AND round IS ? ORDER BY take_no DESC LIMIT 1",
            (session_id, item_id, round_no),
        ).fetchone()
