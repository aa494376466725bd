"""The central side of the command channel: queue, publish until acknowledged, record the answer.

A command is a row in ``commands`` until the device's ``command_ack`` record arrives (the ingester
matches it to the row, and only to a row for that same device). The ingester publishes every open
command again at an interval, so a device that was offline, or whose broker session expired, gets
it when it reconnects; devices ignore ids they applied before. See ``sync.commands`` for the wire.
"""

from __future__ import annotations

import getpass
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.store import CentralStore
from sync.commands import (
    AssignmentBody,
    Command,
    CommandKind,
    PurgeBody,
    RerecordBody,
    encode_command,
    parse_command,
)
from sync.records import CommandAckV1
from sync.wire import utc_now


@dataclass(frozen=True, slots=True)
class CommandRow:
    command: Command
    created_by: str
    acked_utc: str | None
    ack_status: str | None
    ack_message: str | None
    ack_counts: dict[str, int]


def operator() -> str:
    """Who runs this command on the central server (the OS user), for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def new_command(
    device: str,
    *,
    rerecord: RerecordBody | None = None,
    purge: PurgeBody | None = None,
    assignment: AssignmentBody | None = None,
) -> Command:
    kind: CommandKind = "rerecord" if rerecord is not None else "purge" if purge is not None else "assignment"
    cmd = Command(
        schema_version=1,
        command_id=str(uuid.uuid4()),
        device=device,
        kind=kind,
        created_utc=utc_now(),
        rerecord=rerecord,
        purge=purge,
        assignment=assignment,
    )
    cmd.check_body()
    return cmd


def queue(store: CentralStore, cmd: Command, who: str) -> None:
    """Add a command for its device (in the caller's transaction, if any)."""
    with store._tx() as cur:
        store._exec(
            cur,
            "INSERT INTO commands (command_id, device, kind, payload, created_utc, created_by) VALUES (?,?,?,?,?,?)",
            (cmd.command_id, cmd.device, cmd.kind, encode_command(cmd).decode(), cmd.created_utc, who),
        )


def open_commands(store: CentralStore, limit: int = 1000) -> list[tuple[str, str, bytes]]:
    """(device, kind, payload) of the commands no device has acknowledged yet, oldest first."""
    with store._tx() as cur:
        rows = store._exec(
            cur,
            "SELECT device, kind, payload FROM commands WHERE acked_utc IS NULL"
            f" ORDER BY created_utc LIMIT {int(limit)}",
        ).fetchall()
    return [(str(d), str(k), str(p).encode()) for d, k, p in rows]


def record_ack(store: CentralStore, device: str, body: dict[str, Any]) -> bool:
    """Close the command a device's ``command_ack`` record answers; False if it names none of its own."""
    ack = CommandAckV1.model_validate(body)
    with store._tx() as cur:
        store._exec(
            cur,
            "UPDATE commands SET acked_utc = ?, ack_status = ?, ack_message = ?, ack_counts = ?"
            " WHERE command_id = ? AND device = ? AND acked_utc IS NULL",
            (utc_now(), ack.status, ack.message, json.dumps(ack.counts, sort_keys=True), ack.command_id, device),
        )
        return bool(cur.rowcount == 1)


def list_commands(store: CentralStore, kind: str | None = None) -> list[CommandRow]:
    sql = "SELECT payload, created_by, acked_utc, ack_status, ack_message, ack_counts FROM commands"
    args: list[str] = []
    if kind:
        sql += " WHERE kind = ?"
        args.append(kind)
    with store._tx() as cur:
        rows = store._exec(cur, sql + " ORDER BY created_utc, command_id", args).fetchall()
    return [
        CommandRow(parse_command(str(p).encode()), str(by), acked, status, message, json.loads(counts or "{}"))
        for p, by, acked, status, message, counts in rows
    ]


def audit(store: CentralStore, action: str, subject: str, detail: dict[str, Any], who: str) -> None:
    """One row of who did what to whom, and how much (in the caller's transaction, if any).

    ``who`` is the OS user; the database user is recorded beside it (on PostgreSQL a trigger
    installed by ``central.access`` stamps it from the session, whatever the client sends).
    """
    with store._tx() as cur:
        store._exec(
            cur,
            "INSERT INTO audit (at_utc, who, db_user, action, subject, detail) VALUES (?,?,?,?,?,?)",
            (utc_now(), who, store.database_user(), action, subject, json.dumps(detail, sort_keys=True)),
        )


def audit_rows(
    store: CentralStore, actions: Sequence[str] = (), since: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Audit rows oldest first, of these actions (all if none) at or after ``since`` (UTC ISO text)."""
    sql = "SELECT id, at_utc, who, db_user, action, subject, detail FROM audit"
    where: list[str] = []
    args: list[Any] = []
    if actions:
        where.append(f"action IN ({','.join('?' * len(actions))})")
        args.extend(actions)
    if since:
        where.append("at_utc >= ?")
        args.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id" + (f" DESC LIMIT {int(limit)}" if limit else "")
    with store._tx() as cur:
        rows = store._exec(cur, sql, args).fetchall()
    out = [
        {"id": int(i), "at_utc": a, "who": w, "db_user": u, "action": act, "subject": s, "detail": json.loads(d)}
        for i, a, w, u, act, s, d in rows
    ]
    return sorted(out, key=lambda r: r["id"]) if limit else out
