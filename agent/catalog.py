"""The local catalog: one SQLite database (WAL) that is the device's source of truth.

A capture row and its outbox row are committed in the same transaction: that commit is the
durability point. The catalog also implements ``sync.OutboxStore`` so the publisher can work from
it without knowing its SQL. One ``Catalog`` per thread (SQLite connections are not shared).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from agent.errors import CatalogError
from agent.migrations import catalog_migrations
from sync.outbox import BlobRef, ItemState, OutboxItem

# Lower numbers go first: the small records that say what happened before the media itself.
PRIORITY = {"event": 0, "verdict": 1, "session": 1, "stream": 1, "capture": 2, "annotation": 3, "readings": 3}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_record_id() -> str:
    """A random id whose first 12 hex digits are the creation time in ms, so ids sort by age."""
    return f"{time.time_ns() // 1_000_000:012x}-{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True, slots=True)
class CaptureRow:
    record_id: str
    stream: str
    kind: str
    modality: str
    sha256: str | None
    size: int | None
    path: str | None
    state: str
    created_utc: str


class Catalog:
    """A connection to the local catalog with the operations the agent needs."""

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

    def __enter__(self) -> Catalog:
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

    # ---------------------------------------------------------------- records + outbox

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

    def _outbox(
        self,
        conn: sqlite3.Connection,
        record_id: str,
        kind: str,
        body: Mapping[str, Any],
        blob: BlobRef | None = None,
        blob_rel: str | None = None,
    ) -> None:
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

    def add_capture(
        self,
        *,
        stream: str,
        kind: str,
        modality: str,
        t_start_mono_ns: int,
        t_end_mono_ns: int,
        t_start_utc_ns: int,
        seq_first: int,
        seq_last: int,
        media: BlobRef | None,
        media_rel: str | None,
        meta: Mapping[str, Any],
        session_id: str | None = None,
        stream_id: str | None = None,
        item_id: str | None = None,
        take: int | None = None,
        supersedes: str | None = None,
        readings: Sequence[tuple[int, int, int, str, float | None]] = (),
    ) -> str:
        """Commit a capture row (with its sensor readings, if any) and its outbox row together."""
        record_id = new_record_id()
        row = {
            "record_id": record_id,
            "stream": stream,
            "stream_id": stream_id,
            "session_id": session_id,
            "kind": kind,
            "modality": modality,
            "path": media_rel,
            "sha256": media.sha256 if media else None,
            "size": media.size if media else None,
            "media_type": media.media_type if media else None,
            "t_start_mono_ns": t_start_mono_ns,
            "t_end_mono_ns": t_end_mono_ns,
            "t_start_utc_ns": t_start_utc_ns,
            "seq_first": seq_first,
            "seq_last": seq_last,
            "item_id": item_id,
            "take": take,
            "supersedes": supersedes,
            "meta_json": json.dumps(meta, default=str, sort_keys=True),
            "created_utc": utc_now(),
        }
        body: dict[str, Any] = {k: v for k, v in row.items() if k not in ("path", "meta_json")}
        body["meta"] = meta
        if readings:
            body["readings"] = [list(r) for r in readings]
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO captures ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()),
            )
            if readings:
                conn.executemany(
                    "INSERT INTO readings (stream, seq, t_mono_ns, t_utc_ns, name, value, record_id)"
                    " VALUES (?,?,?,?,?,?,?)",
                    [(stream, *r, record_id) for r in readings],
                )
            self._outbox(conn, record_id, "capture", body, media, media_rel)
        return record_id

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
        record_id = new_record_id()
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
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO events ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()),
            )
            self._outbox(conn, record_id, "event", body)
        return record_id

    def add_verdict(
        self,
        capture_id: str,
        *,
        profile: str,
        profile_version: str,
        verdict: str,
        reasons: Sequence[str],
        metrics: Mapping[str, Any],
        analyzers: Sequence[Mapping[str, Any]],
        annotations: Sequence[Mapping[str, Any]],
    ) -> str:
        """Commit a QC verdict and its annotations (each with provenance) for a capture."""
        record_id = new_record_id()
        now = utc_now()
        row = {
            "record_id": record_id,
            "capture_id": capture_id,
            "profile": profile,
            "profile_version": profile_version,
            "verdict": verdict,
            "reasons_json": json.dumps(list(reasons)),
            "metrics_json": json.dumps(metrics, default=str, sort_keys=True),
            "analyzers_json": json.dumps(list(analyzers), default=str),
            "created_utc": now,
        }
        body: dict[str, Any] = {
            "capture_id": capture_id,
            "profile": profile,
            "profile_version": profile_version,
            "verdict": verdict,
            "reasons": list(reasons),
            "metrics": dict(metrics),
            "analyzers": list(analyzers),
        }
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO verdicts ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()),
            )
            self._outbox(conn, record_id, "verdict", body)
            for ann in annotations:
                ann_id = new_record_id()
                arow = {
                    "record_id": ann_id,
                    "capture_id": capture_id,
                    "kind": ann["kind"],
                    "label": ann["label"],
                    "score": ann.get("score"),
                    "t_start_s": ann.get("t_start_s"),
                    "t_end_s": ann.get("t_end_s"),
                    "geometry_json": json.dumps(ann["geometry"]) if ann.get("geometry") is not None else None,
                    "model": ann["model"],
                    "model_version": ann["model_version"],
                    "model_sha256": ann.get("model_sha256"),
                    "created_utc": now,
                }
                conn.execute(
                    f"INSERT INTO annotations ({','.join(arow)}) VALUES ({','.join('?' * len(arow))})",
                    tuple(arow.values()),
                )
                abody = {k: v for k, v in arow.items() if k != "geometry_json"}
                abody["geometry"] = ann.get("geometry")
                self._outbox(conn, ann_id, "annotation", abody)
        return record_id

    def upsert_device(self, name: str, driver: str, modality: str, settings: Mapping[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO devices (name, driver, modality, settings_json, updated_utc) VALUES (?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET driver=excluded.driver, modality=excluded.modality,"
                " settings_json=excluded.settings_json, updated_utc=excluded.updated_utc",
                (name, driver, modality, json.dumps(settings, default=str, sort_keys=True), utc_now()),
            )

    def add_clock_sample(
        self,
        t_mono_ns: int,
        t_realtime_ns: int,
        synced: bool,
        maxerror_us: int | None,
        esterror_us: int | None,
        reason: str,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO clock_map (t_mono_ns, t_realtime_ns, synced, maxerror_us, esterror_us, reason)"
                " VALUES (?,?,?,?,?,?)",
                (t_mono_ns, t_realtime_ns, int(synced), maxerror_us, esterror_us, reason),
            )

    # ---------------------------------------------------------------- queries

    def captures(self, *, stream: str | None = None, limit: int | None = None) -> list[CaptureRow]:
        sql = "SELECT record_id, stream, kind, modality, sha256, size, path, state, created_utc FROM captures"
        args: list[Any] = []
        if stream:
            sql += " WHERE stream = ?"
            args.append(stream)
        sql += " ORDER BY t_start_mono_ns, record_id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [CaptureRow(**dict(r)) for r in self.conn.execute(sql, args)]

    def unscreened(self, limit: int) -> list[sqlite3.Row]:
        """Captures with media that have no verdict yet (QC resumes from here after a restart)."""
        return list(
            self.conn.execute(
                "SELECT c.record_id, c.stream, c.modality, c.path, c.meta_json FROM captures c"
                " LEFT JOIN verdicts v ON v.capture_id = c.record_id"
                " WHERE v.record_id IS NULL AND c.path IS NOT NULL AND c.media_deleted_utc IS NULL"
                " ORDER BY c.t_start_mono_ns LIMIT ?",
                (limit,),
            )
        )

    def stream_summary(self) -> list[dict[str, Any]]:
        """Per stream: captured, QC pass/fail/review, synced, confirmed."""
        rows = self.conn.execute(
            "SELECT c.stream AS stream, COUNT(*) AS captured,"
            " SUM(v.verdict = 'pass') AS qc_pass, SUM(v.verdict = 'fail') AS qc_fail,"
            " SUM(v.verdict = 'review') AS qc_review,"
            " SUM(c.state IN ('synced', 'confirmed')) AS synced, SUM(c.state = 'confirmed') AS confirmed"
            " FROM captures c LEFT JOIN verdicts v ON v.capture_id = c.record_id GROUP BY c.stream ORDER BY c.stream"
        )
        out = []
        for row in rows:
            d = dict(row)
            out.append({k: v if k == "stream" else (v or 0) for k, v in d.items()})
        return out

    def outbox_backlog(self) -> tuple[int, int]:
        """Records not yet confirmed, and bytes of media not yet confirmed."""
        n = self.conn.execute("SELECT COUNT(*) FROM outbox WHERE record_state != 'confirmed'").fetchone()[0]
        b = self.conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT blob_sha256, blob_size AS size FROM outbox"
            " WHERE blob_state IS NOT NULL AND blob_state != 'confirmed')"
        ).fetchone()[0]
        return int(n), int(b)

    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ---------------------------------------------------------------- sync.OutboxStore

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
        return BlobRef(row["blob_sha256"], row["blob_size"], self.data_dir / row["blob_path"], row["media_type"])

    def records_to_send(self, limit: int, skip: Collection[str]) -> Sequence[OutboxItem]:
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE record_state = 'pending' ORDER BY priority, seq LIMIT ?",
            (limit + len(skip),),
        )
        return [self._item(r) for r in rows if r["record_id"] not in skip][:limit]

    def blobs_to_send(self, limit: int, skip: Collection[str]) -> Sequence[BlobRef]:
        rows = self.conn.execute(
            "SELECT blob_sha256, blob_size, blob_path, media_type, MIN(priority) AS p, MIN(seq) AS s FROM outbox"
            " WHERE blob_state = 'pending' AND record_state != 'rejected' GROUP BY blob_sha256 ORDER BY p, s LIMIT ?",
            (limit + len(skip),),
        )
        return [self._blob(r) for r in rows if r["blob_sha256"] not in skip][:limit]

    def unconfirmed(self, limit: int) -> tuple[Sequence[str], Sequence[BlobRef]]:
        recs = [
            r[0]
            for r in self.conn.execute(
                "SELECT record_id FROM outbox WHERE record_state = 'sent' ORDER BY seq LIMIT ?", (limit,)
            )
        ]
        blobs = [
            self._blob(r)
            for r in self.conn.execute(
                "SELECT DISTINCT blob_sha256, blob_size, blob_path, media_type FROM outbox"
                " WHERE blob_state = 'sent' LIMIT ?",
                (limit,),
            )
        ]
        return recs, blobs

    def mark_records(self, record_ids: Collection[str], state: ItemState, error: str | None = None) -> None:
        if not record_ids:
            return
        ids = list(record_ids)
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                conn.execute(
                    f"UPDATE outbox SET record_state = ?, last_error = COALESCE(?, last_error),"
                    f" attempts = attempts + (? = 'sent') WHERE record_id IN ({marks}) AND record_state != 'confirmed'",
                    (state, error, state, *part),
                )
                self._sync_capture_state(conn, part)

    def mark_blob(self, sha256: str, state: ItemState, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET blob_state = ?, last_error = COALESCE(?, last_error)"
                " WHERE blob_sha256 = ? AND blob_state != 'confirmed'",
                (state, error, sha256),
            )
            ids = [r[0] for r in conn.execute("SELECT record_id FROM outbox WHERE blob_sha256 = ?", (sha256,))]
            self._sync_capture_state(conn, ids)

    def _sync_capture_state(self, conn: sqlite3.Connection, record_ids: Sequence[str]) -> None:
        """Mirror outbox progress onto captures: synced once sent, confirmed once all receipts are in."""
        marks = ",".join("?" * len(record_ids))
        now = utc_now()
        conn.execute(
            f"UPDATE outbox SET confirmed_utc = ? WHERE record_id IN ({marks}) AND confirmed_utc IS NULL"
            " AND record_state = 'confirmed' AND COALESCE(blob_state, 'confirmed') = 'confirmed'",
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
        self.set_state("last_receipt_utc", utc_now())

    def record_event(self, kind: str, message: str, detail: dict[str, object]) -> None:
        self.add_event(kind, message, detail=detail)
