"""Collection-plan assignments and enrolled participants in the catalog.

An ``assignment`` command is stored as it came; the newest one (by the central side's creation
time, so a late replay of an old push cannot win) is the booth's current assignment and marks
the others superseded. A participant row holds a pseudonym, never a subject ID: the booth makes
the pseudonym before anything is written, and every change is also a ``participant`` record so
that the central registry follows.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agent.catalog.records import new_record_id
from agent.catalog.store import Store
from sync.commands import AssignmentBody, Command
from sync.wire import utc_now

__all__ = ["Assignment", "Participant", "current_assignment", "participants", "save_participant", "store_assignment"]


@dataclass(frozen=True, slots=True)
class Assignment:
    command_id: str
    created_utc: str
    received_utc: str
    body: AssignmentBody


@dataclass(frozen=True, slots=True)
class Participant:
    subject_pseudonym: str
    subject_key_id: str | None
    plan: str
    site: str
    attributes: dict[str, str]
    consent_scope: str
    consent_date: str
    consent_expires: str | None
    consent_ref: str

    def record(self, updated_utc: str) -> dict[str, Any]:
        return {
            "subject_pseudonym": self.subject_pseudonym,
            "subject_key_id": self.subject_key_id,
            "plan": self.plan,
            "site": self.site,
            "attributes": self.attributes,
            "consent_scope": self.consent_scope,
            "consent_date": self.consent_date,
            "consent_expires": self.consent_expires,
            "consent_ref": self.consent_ref,
            "updated_utc": updated_utc,
        }


def store_assignment(conn: sqlite3.Connection, cmd: Command) -> str:
    """Keep an assignment (inside apply_command's transaction); the newest supersedes the rest."""
    body = cmd.assignment
    assert body is not None
    conn.execute(
        "INSERT INTO assignments (command_id, plan, version, site, created_utc, body_json, received_utc)"
        " VALUES (?,?,?,?,?,?,?)",
        (cmd.command_id, body.plan, body.version, body.site, cmd.created_utc, body.model_dump_json(), utc_now()),
    )
    (newest,) = conn.execute(
        "SELECT command_id FROM assignments ORDER BY created_utc DESC, command_id DESC LIMIT 1"
    ).fetchone()
    conn.execute("UPDATE assignments SET superseded_by = NULL WHERE command_id = ?", (newest,))
    conn.execute("UPDATE assignments SET superseded_by = ? WHERE command_id != ?", (newest, newest))
    items = sum(len(r.items) for r in body.rounds)
    state = "now current" if newest == cmd.command_id else f"already superseded by {newest}"
    return (
        f"assignment of plan {body.plan} version {body.version[:12]} for site {body.site}:"
        f" {len(body.rounds)} round(s), {items} item(s); {state}"
    )


def current_assignment(store: Store) -> Assignment | None:
    row = store.conn.execute(
        "SELECT command_id, created_utc, received_utc, body_json FROM assignments WHERE superseded_by IS NULL"
        " ORDER BY created_utc DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    body = AssignmentBody.model_validate_json(row["body_json"])
    return Assignment(row["command_id"], row["created_utc"], row["received_utc"], body)


def _participant(row: sqlite3.Row) -> Participant:
    return Participant(
        row["subject_pseudonym"],
        row["subject_key_id"],
        row["plan"],
        row["site"],
        dict(json.loads(row["attributes_json"])),
        row["consent_scope"],
        row["consent_date"],
        row["consent_expires"],
        row["consent_ref"],
    )


def participants(store: Store, *, plan: str | None = None, site: str | None = None) -> dict[str, Participant]:
    """Participants enrolled on this device, by pseudonym."""
    rows = store.conn.execute(
        "SELECT * FROM participants WHERE (? IS NULL OR plan = ?) AND (? IS NULL OR site = ?)",
        (plan, plan, site, site),
    )
    return {r["subject_pseudonym"]: _participant(r) for r in rows}


def save_participant(store: Store, p: Participant) -> bool:
    """Enrol or update a participant and queue its ``participant`` record; False if nothing changed."""
    now = utc_now()
    with store.transaction() as conn:
        old = conn.execute("SELECT * FROM participants WHERE subject_pseudonym = ?", (p.subject_pseudonym,)).fetchone()
        if old is not None and _participant(old) == p:
            return False
        conn.execute(
            "INSERT INTO participants (subject_pseudonym, subject_key_id, plan, site, attributes_json, consent_scope,"
            " consent_date, consent_expires, consent_ref, enrolled_utc, updated_utc) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (subject_pseudonym) DO UPDATE SET subject_key_id = excluded.subject_key_id,"
            " plan = excluded.plan, site = excluded.site, attributes_json = excluded.attributes_json,"
            " consent_scope = excluded.consent_scope, consent_date = excluded.consent_date,"
            " consent_expires = excluded.consent_expires, consent_ref = excluded.consent_ref,"
            " updated_utc = excluded.updated_utc",
            (
                p.subject_pseudonym,
                p.subject_key_id,
                p.plan,
                p.site,
                json.dumps(p.attributes, sort_keys=True),
                p.consent_scope,
                p.consent_date,
                p.consent_expires,
                p.consent_ref,
                now,
                now,
            ),
        )
        store.write_record(conn, new_record_id(), "participant", p.record(now))
    return True
