"""The alignment index's view of a session: its device settings, frames, audio files and readings.

``Catalog.timeline``: the queries that ``agent.sessions.alignment`` builds the index from and that
the recorder uses to continue a session's index where an earlier run stopped. Rows come back as
plain tuples, in time order, bounded by a monotonic-clock window.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from agent.catalog.store import Store


class TimelineRows:
    """Time-ordered rows of one session, on the catalog's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def device_settings(self, session_id: str) -> list[tuple[str, str]]:
        """(device, settings JSON): the devices table, then the session's streams (later ones win)."""
        conn = self._store.conn
        rows = list(conn.execute("SELECT name, settings_json FROM devices"))
        rows += conn.execute(
            "SELECT device, settings_json FROM streams WHERE session_id = ? ORDER BY created_utc", (session_id,)
        )
        return [(str(a), str(b)) for a, b in rows]

    def frames(self, session_id: str, lo: int, hi: int) -> list[sqlite3.Row]:
        """Camera frames (not a window's summary row) started in [lo, hi): record_id, stream, t, meta_json."""
        return list(
            self._store.conn.execute(
                "SELECT record_id, stream, t_start_mono_ns, meta_json FROM captures WHERE session_id = ?"
                " AND modality IN ('visible', 'thermal') AND kind = 'frame'"
                " AND t_start_mono_ns >= ? AND t_start_mono_ns < ?"
                " ORDER BY t_start_mono_ns",
                (session_id, lo, hi),
            )
        )

    def audio_files(self, session_id: str, lo: int, hi: int) -> list[sqlite3.Row]:
        """Audio files overlapping [lo, hi): record_id, stream, t_start, t_end, meta_json."""
        return list(
            self._store.conn.execute(
                "SELECT record_id, stream, t_start_mono_ns, t_end_mono_ns, meta_json FROM captures"
                " WHERE session_id = ? AND modality = 'audio' AND path IS NOT NULL"
                " AND t_end_mono_ns >= ? AND t_start_mono_ns < ? ORDER BY t_start_mono_ns",
                (session_id, lo, hi),
            )
        )

    def readings(self, session_id: str, lo: int, hi: int) -> list[sqlite3.Row]:
        """Sensor readings with a value in [lo, hi): stream, name, t_mono_ns, value, record_id."""
        return list(
            self._store.conn.execute(
                "SELECT r.stream, r.name, r.t_mono_ns, r.value, r.record_id FROM readings r"
                " JOIN captures c ON c.record_id = r.record_id WHERE c.session_id = ? AND r.t_mono_ns >= ?"
                " AND r.t_mono_ns < ? AND r.value IS NOT NULL ORDER BY r.stream, r.name, r.t_mono_ns",
                (session_id, lo, hi),
            )
        )

    def indexed_until(self, session_id: str) -> tuple[int | None, bool]:
        """Where the session's stored index ends, and whether one of its runs was left open-ended."""
        row: Any = self._store.conn.execute(
            "SELECT MAX(t_to_mono_ns), COUNT(*) - COUNT(t_to_mono_ns) FROM alignment_runs WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        return (None if row[0] is None else int(row[0])), bool(row[1])
