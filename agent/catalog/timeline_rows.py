"""A session along time: its device settings, frames, audio files, readings, index and clock map.

``Catalog.timeline``: the queries that ``agent.sessions.alignment`` builds the index from, that the
recorder uses to continue a session's index where an earlier run stopped, and that the MCAP export
(``agent.sessions.mcap``) reads a whole session with. Rows come back in time order; the index's
reads are bounded by a monotonic-clock window.
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

    # ------------------------------------------------------------------ a whole session, for export

    def streams(self, session_id: str) -> list[sqlite3.Row]:
        """The session's streams: stream_id, device, modality, settings_json, oldest first."""
        return list(
            self._store.conn.execute(
                "SELECT stream_id, device, modality, settings_json FROM streams WHERE session_id = ?"
                " ORDER BY created_utc",
                (session_id,),
            )
        )

    def media(self, session_id: str, modalities: tuple[str, ...]) -> list[sqlite3.Row]:
        """Captures of these modalities whose media is still on disk, in capture order, every column."""
        marks = ",".join("?" * len(modalities))
        return list(
            self._store.conn.execute(
                f"SELECT * FROM captures WHERE session_id = ? AND modality IN ({marks}) AND path IS NOT NULL"
                " AND media_deleted_utc IS NULL ORDER BY t_start_mono_ns",
                (session_id, *modalities),
            )
        )

    def all_readings(self, session_id: str) -> list[sqlite3.Row]:
        """Every sensor reading of the session: stream, seq, t_utc_ns, name, value."""
        return list(
            self._store.conn.execute(
                "SELECT r.stream, r.seq, r.t_utc_ns, r.name, r.value FROM readings r JOIN captures c"
                " ON c.record_id = r.record_id WHERE c.session_id = ? ORDER BY r.stream, r.seq, r.name",
                (session_id,),
            )
        )

    def alignment_runs(self, session_id: str) -> list[sqlite3.Row]:
        """The session's alignment runs (run_id, summary_json), oldest first."""
        return list(
            self._store.conn.execute(
                "SELECT run_id, summary_json FROM alignment_runs WHERE session_id = ? ORDER BY created_utc",
                (session_id,),
            )
        )

    def alignment_pairs(self, session_id: str) -> list[sqlite3.Row]:
        """Every row of the session's index, with the capture time of its first record."""
        return list(
            self._store.conn.execute(
                "SELECT a.kind, a.stream_a, a.stream_b, a.record_a, a.record_b, a.offset_ns, a.matched,"
                " a.t_mono_ns, a.detail_json, c.t_start_utc_ns, c.t_start_mono_ns FROM alignments a"
                " LEFT JOIN captures c ON c.record_id = a.record_a WHERE a.session_id = ? ORDER BY a.id",
                (session_id,),
            )
        )

    def clock_map(self) -> list[sqlite3.Row]:
        """The device's monotonic -> UTC map entries, oldest first."""
        return list(
            self._store.conn.execute(
                "SELECT t_mono_ns, t_realtime_ns, reason, health_json FROM clock_map ORDER BY t_mono_ns"
            )
        )
