"""What retention needs of the catalog: media that may go, media that may not, and the deletion.

``Catalog.media``: eviction picks confirmed media, lowest value first (failed or superseded
captures, then screened ones, then unscreened), and marks a batch deleted in the same transaction
that notes the files still to unlink, so a crash between the commit and the unlinks is finished
on the next start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from agent.catalog.store import Store
from sync.wire import utc_now


class MediaRows:
    """Media files on disk as the catalog knows them, on the catalog's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def eviction_candidates(self, limit: int) -> list[sqlite3.Row]:
        """Confirmed media still on disk, lowest value first: record_id, stream, path, size."""
        return list(
            self._store.conn.execute(
                "SELECT c.record_id, c.stream, c.path, c.size FROM captures c"
                " JOIN outbox o ON o.record_id = c.record_id"
                " LEFT JOIN verdicts v ON v.capture_id = c.record_id"
                " WHERE c.path IS NOT NULL AND c.media_deleted_utc IS NULL AND c.state = 'confirmed'"
                " AND o.record_state = 'confirmed' AND o.blob_state = 'confirmed' AND o.confirmed_utc IS NOT NULL"
                " ORDER BY CASE WHEN v.verdict = 'fail'"
                " OR EXISTS (SELECT 1 FROM captures s WHERE s.supersedes = c.record_id) THEN 0"
                " WHEN v.verdict IS NULL THEN 2 ELSE 1 END, c.t_start_utc_ns, c.record_id LIMIT ?",
                (limit,),
            )
        )

    def unsynced(self) -> tuple[int, int]:
        """Files and bytes of media on disk that the central side has not confirmed yet."""
        row = self._store.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM captures"
            " WHERE path IS NOT NULL AND media_deleted_utc IS NULL AND state != 'confirmed'"
        ).fetchone()
        return int(row[0]), int(row[1])

    def mark_deleted(self, record_ids: Sequence[str], pending_key: str, paths: Sequence[str]) -> None:
        """Mark media deleted and note the files to unlink under ``pending_key``, in one transaction."""
        now = utc_now()
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE captures SET media_deleted_utc = ? WHERE record_id = ? AND media_deleted_utc IS NULL",
                [(now, rid) for rid in record_ids],
            )
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (pending_key, json.dumps(list(paths))),
            )

    def unlinked(self, pending_key: str) -> None:
        """The noted files are gone: forget them."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM state WHERE key = ?", (pending_key,))
