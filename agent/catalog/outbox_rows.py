"""The catalog's side of ``sync.OutboxStore``: what the publisher reads from and writes to the outbox.

Kept apart from ``agent.catalog.db`` because it is the contract with the sync package: queries for what
to send next and the state changes that receipts cause, mirrored onto the captures. Queries name the
partial index's condition (``_BLOB_IN_FLIGHT``) so SQLite uses it instead of scanning every outbox
row ever written, and ``+record_state`` keeps an ``IN (ids)`` lookup on the primary key rather than
on the record_state index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from agent.catalog.store import Store
from sync.commands import Command
from sync.outbox import PRIORITY_FLAGGED, BlobRef, ItemState, OutboxChanges, OutboxItem
from sync.wire import utc_now

# The condition of the partial index outbox_blob_state (migration 0003), repeated so queries use it.
_BLOB_IN_FLIGHT = "blob_state IN ('pending', 'sent')"


class OutboxRows:
    """The outbox as the publisher sees it (``sync.OutboxStore``), on the catalog's store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def close(self) -> None:
        """Close the store's connection (the publisher opens its own outbox and closes it)."""
        self._store.close()

    def _item(self, row: sqlite3.Row) -> OutboxItem:
        return OutboxItem(
            seq=row["seq"],
            record_id=row["record_id"],
            kind=row["kind"],
            body_json=row["body_json"],
            priority=row["priority"],
            blob=self._blob(row) if row["blob_sha256"] else None,
        )

    def _blob(self, row: sqlite3.Row) -> BlobRef:
        return BlobRef(row["blob_sha256"], row["blob_size"], self._store.data_dir / row["blob_path"], row["media_type"])

    def records_to_send(self, limit: int, skip: Collection[str]) -> Sequence[OutboxItem]:
        rows = self._store.conn.execute(
            "SELECT * FROM outbox WHERE record_state = 'pending' ORDER BY priority, seq LIMIT ?",
            (limit + len(skip),),
        )
        return [self._item(r) for r in rows if r["record_id"] not in skip][:limit]

    def blobs_to_send(self, limit: int, skip: Collection[str]) -> Sequence[BlobRef]:
        rows = self._store.conn.execute(
            "SELECT blob_sha256, blob_size, blob_path, media_type, MIN(priority) AS p, MIN(seq) AS s FROM outbox"
            f" WHERE {_BLOB_IN_FLIGHT} AND blob_state = 'pending' AND record_state != 'rejected'"
            " GROUP BY blob_sha256 ORDER BY p, s LIMIT ?",
            (limit + len(skip),),
        )
        return [self._blob(r) for r in rows if r["blob_sha256"] not in skip][:limit]

    def data_version(self) -> int:
        return self._store.data_version()

    def unconfirmed(self, limit: int) -> tuple[Sequence[str], Sequence[BlobRef]]:
        recs = [
            r[0]
            for r in self._store.conn.execute(
                "SELECT record_id FROM outbox WHERE record_state = 'sent' ORDER BY seq LIMIT ?", (limit,)
            )
        ]
        blobs = [
            self._blob(r)
            for r in self._store.conn.execute(
                "SELECT DISTINCT blob_sha256, blob_size, blob_path, media_type FROM outbox"
                f" WHERE {_BLOB_IN_FLIGHT} AND blob_state = 'sent' LIMIT ?",
                (limit,),
            )
        ]
        return recs, blobs

    def apply(self, changes: OutboxChanges) -> None:
        """Record and blob state changes of one publisher round, in one transaction (one fsync)."""
        if not changes:
            return
        groups: dict[tuple[str, str | None], list[str]] = {}
        for rid, state_error in changes.records.items():
            groups.setdefault(state_error, []).append(rid)
        with self._store.transaction() as conn:
            touched: list[str] = []
            for (state, error), ids in groups.items():
                for start in range(0, len(ids), 500):
                    part = ids[start : start + 500]
                    marks = ",".join("?" * len(part))
                    conn.execute(
                        f"UPDATE outbox SET record_state = ?, last_error = COALESCE(?, last_error),"
                        f" attempts = attempts + (? = 'sent')"
                        f" WHERE record_id IN ({marks}) AND record_state != 'confirmed'",
                        (state, error, state, *part),
                    )
                    touched.extend(part)
            for sha, (state, error) in changes.blobs.items():
                conn.execute(
                    "UPDATE outbox SET blob_state = ?, last_error = COALESCE(?, last_error)"
                    " WHERE blob_sha256 = ? AND blob_state != 'confirmed'",
                    (state, error, sha),
                )
                touched.extend(r[0] for r in conn.execute("SELECT record_id FROM outbox WHERE blob_sha256 = ?", (sha,)))
            for start in range(0, len(touched), 500):
                self._sync_capture_state(conn, touched[start : start + 500])
            if changes.receipt_seen:
                conn.execute(
                    "INSERT INTO state (key, value) VALUES ('last_receipt_utc', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (utc_now(),),
                )

    def mark_records(self, record_ids: Collection[str], state: ItemState, error: str | None = None) -> None:
        """Move records to a state (confirmed only on a central receipt)."""
        self.apply(OutboxChanges(records=dict.fromkeys(record_ids, (state, error))))

    def mark_blob(self, sha256: str, state: ItemState, error: str | None = None) -> None:
        """Move every outbox row that refers to this blob to a state."""
        self.apply(OutboxChanges(blobs={sha256: (state, error)}))

    def prioritize(self, record_ids: Collection[str]) -> int:
        """Operator flag: send these records (and their media) before everything else; returns rows changed."""
        ids = list(record_ids)
        changed = 0
        with self._store.transaction() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                changed += conn.execute(
                    f"UPDATE outbox SET priority = ? WHERE record_id IN ({marks})"
                    " AND (record_state != 'confirmed' OR COALESCE(blob_state, 'confirmed') != 'confirmed')",
                    (PRIORITY_FLAGGED, *part),
                ).rowcount
        return changed

    def _sync_capture_state(self, conn: sqlite3.Connection, record_ids: Sequence[str]) -> None:
        """Mirror outbox progress onto captures: synced once sent, confirmed once all receipts are in."""
        if not record_ids:
            return
        marks = ",".join("?" * len(record_ids))
        now = utc_now()
        conn.execute(
            f"UPDATE outbox SET confirmed_utc = ? WHERE record_id IN ({marks}) AND confirmed_utc IS NULL"
            " AND +record_state = 'confirmed' AND COALESCE(blob_state, 'confirmed') = 'confirmed'",
            (now, *record_ids),
        )
        conn.execute(
            f"UPDATE captures SET state = CASE"
            " WHEN o.record_state = 'rejected' OR o.blob_state = 'rejected' THEN 'rejected'"
            " WHEN o.confirmed_utc IS NOT NULL THEN 'confirmed'"
            " WHEN o.record_state IN ('sent', 'confirmed') THEN 'synced' ELSE 'committed' END,"
            " confirmed_utc = o.confirmed_utc"
            f" FROM outbox o WHERE o.record_id = captures.record_id AND captures.record_id IN ({marks})",
            tuple(record_ids),
        )

    def note_receipt(self) -> None:
        self.apply(OutboxChanges(receipt_seen=True))

    def record_event(self, kind: str, message: str, detail: dict[str, object]) -> None:
        self._store.add_event(kind, message, detail=detail)

    def apply_command(self, command: Command, *, verified: bool) -> str | None:
        from agent.catalog.command_rows import apply_command

        return apply_command(self._store, command, verified=verified)
