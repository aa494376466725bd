"""The local catalog: one SQLite database (WAL) that is the device's source of truth.

A capture row and its outbox row are committed in the same transaction: that commit is the
durability point. Every query on the catalog's tables lives in this package: ``Catalog`` holds
the capture, QC, clock and alignment tables itself and reaches the others through seams -
``outbox`` (the publisher's ``sync.OutboxStore``), ``sessions`` (sessions, streams, takes),
``booth`` (booth sessions, takes and decisions), ``media`` (retention) and ``timeline`` (the
alignment index and session exports). One ``Catalog`` per thread (SQLite connections are not shared).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.catalog.booth_rows import BoothRows
from agent.catalog.media_rows import MediaRows
from agent.catalog.outbox_rows import OutboxRows
from agent.catalog.records import new_record_id
from agent.catalog.session_rows import SessionRows
from agent.catalog.store import PRIORITY, Store
from agent.catalog.timeline_rows import TimelineRows
from sync.outbox import BlobRef
from sync.wire import utc_now

__all__ = ["PRIORITY", "CaptureRow", "Catalog", "new_record_id"]


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


class Catalog(Store):
    """A connection to the local catalog with the operations the agent needs."""

    def __init__(self, path: Path, device_id: str, *, synchronous: Literal["full", "normal"] = "full") -> None:
        super().__init__(path, device_id, synchronous=synchronous)
        self.outbox = OutboxRows(self)
        self.sessions = SessionRows(self)
        self.timeline = TimelineRows(self)
        self.booth = BoothRows(self)
        self.media = MediaRows(self)

    # ---------------------------------------------------------------- records + outbox

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
            self.write_record(conn, record_id, "capture", body, media, media_rel)
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
            self.write_record(conn, record_id, "verdict", body)
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
                self.write_record(conn, ann_id, "annotation", abody)
        return record_id

    def add_channel_verdicts(self, capture_id: str, channels: Sequence[Mapping[str, Any]]) -> str:
        """Commit the per-channel (per-microphone) verdicts of a capture as one ``channel_verdict`` record.

        Each item has ``channel``, ``mic``, ``profile``, ``profile_version``, ``verdict``, ``reasons``
        and ``metrics``. The capture's own verdict (``add_verdict``) is not touched.
        """
        record_id = new_record_id()
        now = utc_now()
        rows = [
            {
                "capture_id": capture_id,
                "channel": int(ch["channel"]),
                "mic": str(ch["mic"]),
                "record_id": record_id,
                "profile": ch["profile"],
                "profile_version": ch["profile_version"],
                "verdict": ch["verdict"],
                "reasons_json": json.dumps(list(ch["reasons"])),
                "metrics_json": json.dumps(dict(ch["metrics"]), default=str, sort_keys=True),
                "created_utc": now,
            }
            for ch in channels
        ]
        body = {
            "capture_id": capture_id,
            "channels": [
                {k: ch[k] for k in ("channel", "mic", "profile", "profile_version", "verdict", "reasons", "metrics")}
                for ch in channels
            ],
        }
        with self.transaction() as conn:
            for row in rows:
                conn.execute(
                    f"INSERT INTO channel_verdicts ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                    tuple(row.values()),
                )
            self.write_record(conn, record_id, "channel_verdict", body)
        return record_id

    def channel_unscreened(self, limit: int) -> list[sqlite3.Row]:
        """Multi-channel audio takes with media and no per-channel verdicts yet, oldest first."""
        return list(
            self.conn.execute(
                "SELECT c.record_id, c.stream, c.stream_id, c.session_id, c.path, c.meta_json FROM captures c"
                " WHERE c.kind = 'take' AND c.modality = 'audio' AND c.path IS NOT NULL"
                " AND c.media_deleted_utc IS NULL AND COALESCE(json_extract(c.meta_json, '$.channels'), 1) > 1"
                " AND NOT EXISTS (SELECT 1 FROM channel_verdicts cv WHERE cv.capture_id = c.record_id)"
                " ORDER BY c.t_start_mono_ns LIMIT ?",
                (limit,),
            )
        )

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

    def capture(self, record_id: str) -> sqlite3.Row | None:
        """One capture row, every column."""
        return self.conn.execute("SELECT * FROM captures WHERE record_id = ?", (record_id,)).fetchone()  # type: ignore[no-any-return]

    def unscreened(self, limit: int) -> list[sqlite3.Row]:
        """Captures with media that have no verdict yet (QC resumes from here after a restart)."""
        return list(
            self.conn.execute(
                "SELECT c.record_id, c.stream, c.stream_id, c.session_id, c.kind, c.modality, c.path, c.meta_json,"
                " c.t_start_utc_ns FROM captures c LEFT JOIN verdicts v ON v.capture_id = c.record_id"
                " WHERE v.record_id IS NULL AND c.path IS NOT NULL AND c.media_deleted_utc IS NULL"
                " ORDER BY c.t_start_mono_ns LIMIT ?",
                (limit,),
            )
        )

    def qc_backlog(self, cap: int = 10_000) -> tuple[int, int | None]:
        """How many captures wait for QC (counted up to ``cap``) and the oldest one's UTC time (ns)."""
        row = self.conn.execute(
            "SELECT COUNT(*), MIN(t) FROM (SELECT c.t_start_utc_ns AS t FROM captures c"
            " LEFT JOIN verdicts v ON v.capture_id = c.record_id"
            " WHERE v.record_id IS NULL AND c.path IS NOT NULL AND c.media_deleted_utc IS NULL"
            " ORDER BY c.t_start_mono_ns LIMIT ?)",
            (cap,),
        ).fetchone()
        return int(row[0]), None if row[1] is None else int(row[1])

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

    # ---------------------------------------------------------------- clock and alignment
    # (time and recording). Each row that matters centrally gets its outbox row in the same
    # transaction, like captures; sessions, takes and streams are in ``agent.catalog.session_rows``.

    def add_clock_entry(self, t_mono_ns: int, t_realtime_ns: int, health: Mapping[str, Any], reason: str) -> str:
        """A mono→UTC map entry with its full clock health; synced as a ``clock`` record."""
        record_id = new_record_id()
        health_json = json.dumps(health, default=str, sort_keys=True)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO clock_map (t_mono_ns, t_realtime_ns, synced, maxerror_us, esterror_us, reason,"
                " health_json) VALUES (?,?,?,?,?,?,?)",
                (
                    t_mono_ns,
                    t_realtime_ns,
                    int(bool(health.get("synced"))),
                    health.get("maxerror_us"),
                    health.get("esterror_us"),
                    reason,
                    health_json,
                ),
            )
            body = {"t_mono_ns": t_mono_ns, "t_realtime_ns": t_realtime_ns, "reason": reason, "health": dict(health)}
            self.write_record(conn, record_id, "clock", body)
        return record_id

    def newest_readings(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The newest committed value of every sensor field: ``{stream: {name: {value, t_utc_ns}}}``."""
        rows = self.conn.execute(
            "SELECT r.stream, r.name, r.value, r.t_utc_ns FROM readings r JOIN"
            " (SELECT stream, name, MAX(t_mono_ns) AS t FROM readings GROUP BY stream, name) m"
            " ON r.stream = m.stream AND r.name = m.name AND r.t_mono_ns = m.t"
        )
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for stream, name, value, t_utc in rows:
            out.setdefault(stream, {})[name] = {"value": value, "t_utc_ns": t_utc, "from": "catalog"}
        return out

    def add_alignment_run(
        self,
        run: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        fits: Sequence[Mapping[str, Any]],
        *,
        rows_per_record: int = 4000,
    ) -> list[str]:
        """Store an alignment run (pairs, unmatched items, clock fits) and sync it in bounded records."""
        run_id = str(run["run_id"])
        record_ids = [run_id]
        pair_cols = ("kind", "stream_a", "stream_b", "record_a", "record_b", "offset_ns", "matched", "t_mono_ns")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO alignment_runs (run_id, session_id, t_from_mono_ns, t_to_mono_ns, summary_json,"
                " created_utc) VALUES (?,?,?,?,?,?)",
                (
                    run_id,
                    run["session_id"],
                    run.get("t_from_mono_ns"),
                    run.get("t_to_mono_ns"),
                    json.dumps(run["summary"], default=str, sort_keys=True),
                    utc_now(),
                ),
            )
            conn.executemany(
                "INSERT INTO alignments (session_id, run_id, kind, stream_a, stream_b, record_a, record_b, offset_ns,"
                " matched, t_mono_ns, detail_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run["session_id"],
                        run_id,
                        *(r.get(c) for c in pair_cols[:6]),
                        int(bool(r["matched"])),
                        r.get("t_mono_ns"),
                        json.dumps(r.get("detail") or {}, default=str, sort_keys=True),
                    )
                    for r in rows
                ],
            )
            conn.executemany(
                "INSERT INTO clock_fits (run_id, session_id, stream, device_time, drift_ppm, drift_uncertainty_ppm,"
                " drift_significant, points, span_s, residual_rms_ns, detail_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        run["session_id"],
                        f["stream"],
                        f["device_time"],
                        f.get("drift_ppm"),
                        f.get("drift_uncertainty_ppm"),
                        None if f.get("drift_significant") is None else int(bool(f["drift_significant"])),
                        f["points"],
                        f["span_s"],
                        f.get("residual_rms_ns"),
                        json.dumps(
                            {**(f.get("detail") or {}), **({"note": f["drift_note"]} if f.get("drift_note") else {})},
                            default=str,
                            sort_keys=True,
                        ),
                    )
                    for f in fits
                ],
            )
            body = {
                "run_id": run_id,
                "session_id": run["session_id"],
                "t_from_mono_ns": run.get("t_from_mono_ns"),
                "t_to_mono_ns": run.get("t_to_mono_ns"),
                "summary": run["summary"],
                "clock_fits": [dict(f) for f in fits],
                "parts": max(1, -(-len(rows) // rows_per_record)),
            }
            self.write_record(conn, run_id, "alignment", body)
            for part, start in enumerate(range(0, len(rows), rows_per_record)):
                chunk = rows[start : start + rows_per_record]
                rid = new_record_id()
                record_ids.append(rid)
                pairs_body = {
                    "run_id": run_id,
                    "session_id": run["session_id"],
                    "part": part,
                    "columns": [*pair_cols, "detail"],
                    "rows": [[r.get(c) for c in pair_cols] + [r.get("detail") or {}] for r in chunk],
                }
                self.write_record(conn, rid, "alignment_pairs", pairs_body)
        return record_ids
