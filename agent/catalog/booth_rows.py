"""The booth's reads: its sessions, the takes' captures and verdicts, and the operator's decisions.

``Catalog.booth``, for ``agent.booth.records`` (review, coverage, rerecord) and the booth's own
screen, which polls for verdicts while a take is checked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Literal

from agent.catalog.store import Store


class BoothRows:
    """Booth sessions and what their takes became, on the catalog's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def sessions(self, *, open_only: bool = False) -> list[sqlite3.Row]:
        """Every booth session (or only the open ones), oldest first."""
        sql = "SELECT * FROM sessions WHERE kind = 'booth'"
        if open_only:
            sql += " AND ended_utc IS NULL"
        return list(self._store.conn.execute(sql + " ORDER BY started_utc, session_id"))

    def events(self, kind: str, session_id: str) -> list[tuple[str, int]]:
        """(detail JSON, t_utc_ns) of a session's events of one kind, oldest first."""
        rows = self._store.conn.execute(
            "SELECT detail_json, t_utc_ns FROM events WHERE kind = ? AND json_extract(detail_json, '$.session_id') = ?"
            " ORDER BY t_utc_ns, record_id",
            (kind, session_id),
        )
        return [(str(d), int(t)) for d, t in rows]

    def take_captures(self, session_id: str) -> list[sqlite3.Row]:
        """The session's take captures with their verdicts (if any) and channel count."""
        return list(
            self._store.conn.execute(
                "SELECT c.record_id, c.path, c.state, json_extract(c.meta_json, '$.channels') AS channels, v.verdict,"
                " v.reasons_json, v.metrics_json, v.profile, v.profile_version FROM captures c"
                " LEFT JOIN verdicts v ON v.capture_id = c.record_id WHERE c.session_id = ? AND c.kind = 'take'",
                (session_id,),
            )
        )

    def take_channel_verdicts(self, session_id: str) -> list[sqlite3.Row]:
        """The per-microphone verdicts of the session's takes, by capture and channel."""
        return list(
            self._store.conn.execute(
                "SELECT cv.* FROM channel_verdicts cv JOIN captures c ON c.record_id = cv.capture_id"
                " WHERE c.session_id = ? AND c.kind = 'take' ORDER BY cv.capture_id, cv.channel",
                (session_id,),
            )
        )

    def judged(self, capture_ids: Collection[str], table: Literal["verdicts", "channel_verdicts"]) -> set[str]:
        """Which of these captures have a verdict (or per-microphone verdicts) by now."""
        ids = sorted(capture_ids)
        if not ids:
            return set()
        sql = f"SELECT DISTINCT capture_id FROM {table} WHERE capture_id IN ({','.join('?' * len(ids))})"
        return {str(row[0]) for row in self._store.conn.execute(sql, ids)}
