"""Central commands applied to the catalog: re-record requests kept for the booth, and purges.

Each command id is applied once, in one transaction with its ``commands`` row, an ``event`` saying
what was done and a ``command_ack`` record (both synced like data), so a replayed command changes
nothing and the central side learns the outcome from an ordinary record. Media files of a purge
are removed after that transaction commits: a crash in between leaves files no row points to,
never a row whose media is gone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from agent.catalog.plan_rows import store_assignment
from agent.catalog.records import new_record_id
from agent.catalog.store import Store
from sync.commands import DESTRUCTIVE, Command
from sync.wire import utc_now


@dataclass(frozen=True, slots=True)
class PendingRerecord:
    command_id: str
    take_id: str
    session_id: str
    item_id: str
    reason: str
    received_utc: str


def apply_command(store: Store, cmd: Command, *, verified: bool) -> str | None:
    """Apply a validated command once; the outcome's message, or None for a replay."""
    media: list[str] = []
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM commands WHERE command_id = ?", (cmd.command_id,)).fetchone():
            return None
        counts: dict[str, int] = {}
        status = "applied"
        if cmd.kind in DESTRUCTIVE and not verified:
            status = "refused"
            message = (
                f"refused {cmd.kind} command {cmd.command_id}: it deletes data and this device cannot verify "
                "who sent it; set [sync] receipt_public_key to the central side's receipt-key.pub"
            )
        elif cmd.rerecord is not None:
            for item in cmd.rerecord.items:
                conn.execute(
                    "INSERT OR IGNORE INTO rerecord_requests (command_id, take_id, session_id, item_id, reason,"
                    " received_utc) VALUES (?,?,?,?,?,?)",
                    (cmd.command_id, item.take_id, item.session_id, item.item_id, cmd.rerecord.reason, utc_now()),
                )
            counts["takes"] = len(cmd.rerecord.items)
            message = f"central asks to re-record {len(cmd.rerecord.items)} take(s): {cmd.rerecord.reason}"
        elif cmd.assignment is not None:
            message = store_assignment(conn, cmd)
            counts["rounds"] = len(cmd.assignment.rounds)
        else:
            assert cmd.purge is not None
            counts, media = _purge(conn, cmd.purge.subject_pseudonym)
            message = "purged a withdrawn subject: " + ", ".join(f"{n} {what}" for what, n in counts.items())
        detail = {"command_id": cmd.command_id, "command": cmd.kind, "status": status, "counts": counts}
        conn.execute(
            "INSERT INTO commands (command_id, kind, status, message, body_json, received_utc) VALUES (?,?,?,?,?,?)",
            (cmd.command_id, cmd.kind, status, message, cmd.model_dump_json(exclude_none=True), utc_now()),
        )
        store.insert_event(
            conn, "command_refused" if status == "refused" else f"command_{cmd.kind}", message, detail=detail
        )
        ack = {
            "command_id": cmd.command_id,
            "command": cmd.kind,
            "status": status,
            "message": message,
            "counts": counts,
        }
        store.write_record(conn, new_record_id(), "command_ack", ack)
    for rel in media:
        (store.data_dir / rel).unlink(missing_ok=True)
    return message


def _ids(conn: sqlite3.Connection, sql: str, args: Sequence[str]) -> list[str]:
    return [r[0] for r in conn.execute(sql, tuple(args))]


def _marks(values: Sequence[str]) -> str:
    return ",".join("?" * len(values))


def _purge(conn: sqlite3.Connection, pseudonym: str) -> tuple[dict[str, int], list[str]]:
    """Delete the subject's sessions and all that hangs off them; the media paths no one else uses."""
    sids = _ids(conn, "SELECT session_id FROM sessions WHERE subject_pseudonym = ?", [pseudonym])
    counts = {"sessions": len(sids), "takes": 0, "captures": 0, "events": 0, "media_files": 0, "records_unsent": 0}
    if not sids:
        return counts, []
    s = _marks(sids)
    caps = _ids(conn, f"SELECT record_id FROM captures WHERE session_id IN ({s})", sids)
    c = _marks(caps)
    paths = _ids(conn, f"SELECT DISTINCT path FROM captures WHERE path IS NOT NULL AND record_id IN ({c})", caps)
    # Outbox rows of everything purged: unsent ones must never leave, sent ones are deleted centrally.
    envelope_session = "json_extract(body_json, '$.body.session_id')"
    envelope_capture = "json_extract(body_json, '$.body.capture_id')"
    envelope_event = "json_extract(body_json, '$.body.detail.session_id')"
    gone = conn.execute(
        f"SELECT COUNT(*) FROM outbox WHERE record_state != 'confirmed' AND ({envelope_session} IN ({s})"
        f" OR {envelope_event} IN ({s}) OR {envelope_capture} IN ({c}) OR record_id IN ({c}))",
        (*sids, *sids, *caps, *caps),
    ).fetchone()[0]
    counts["records_unsent"] = int(gone)
    conn.execute(
        f"DELETE FROM outbox WHERE {envelope_session} IN ({s}) OR {envelope_event} IN ({s})"
        f" OR {envelope_capture} IN ({c}) OR record_id IN ({c})",
        (*sids, *sids, *caps, *caps),
    )
    for table in ("annotations", "verdicts", "channel_verdicts"):
        conn.execute(f"DELETE FROM {table} WHERE capture_id IN ({c})", caps)
    conn.execute(f"DELETE FROM readings WHERE record_id IN ({c})", caps)
    conn.execute(f"UPDATE captures SET supersedes = NULL WHERE supersedes IN ({c})", caps)
    counts["captures"] = conn.execute(f"DELETE FROM captures WHERE record_id IN ({c})", caps).rowcount
    conn.execute(f"UPDATE takes SET supersedes = NULL WHERE session_id IN ({s})", sids)
    counts["takes"] = conn.execute(f"DELETE FROM takes WHERE session_id IN ({s})", sids).rowcount
    conn.execute(f"DELETE FROM clock_fits WHERE session_id IN ({s})", sids)
    conn.execute(f"DELETE FROM alignment_runs WHERE session_id IN ({s})", sids)
    conn.execute(f"DELETE FROM alignments WHERE session_id IN ({s})", sids)
    conn.execute(f"DELETE FROM rerecord_requests WHERE session_id IN ({s})", sids)
    counts["events"] = conn.execute(
        f"DELETE FROM events WHERE json_extract(detail_json, '$.session_id') IN ({s})", sids
    ).rowcount
    conn.execute(
        "UPDATE captures SET stream_id = NULL WHERE stream_id IN"
        f" (SELECT stream_id FROM streams WHERE session_id IN ({s}))",
        sids,
    )
    conn.execute(f"DELETE FROM streams WHERE session_id IN ({s})", sids)
    conn.execute(f"DELETE FROM sessions WHERE session_id IN ({s})", sids)
    p = _marks(paths)
    still = set(_ids(conn, f"SELECT path FROM captures WHERE path IN ({p})", paths)) if paths else set()
    media = [x for x in paths if x not in still]
    counts["media_files"] = len(media)
    return counts, media


def pending_rerecords(store: Store) -> list[PendingRerecord]:
    """Requests whose take no finished take supersedes yet, oldest first."""
    rows = store.conn.execute(
        "SELECT r.* FROM rerecord_requests r WHERE NOT EXISTS (SELECT 1 FROM takes t WHERE t.supersedes = r.take_id"
        " AND t.status = 'done') ORDER BY r.received_utc, r.take_id"
    )
    return [
        PendingRerecord(r["command_id"], r["take_id"], r["session_id"], r["item_id"], r["reason"], r["received_utc"])
        for r in rows
    ]


def command_rows(store: Store) -> list[dict[str, str]]:
    """The commands this device applied or refused, newest first."""
    rows = store.conn.execute(
        "SELECT command_id, kind, status, message, received_utc FROM commands ORDER BY received_utc DESC"
    )
    return [dict(r) for r in rows]


__all__ = ["PendingRerecord", "apply_command", "command_rows", "pending_rerecords"]
