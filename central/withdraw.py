"""Withdrawal of consent: a participant's records, blobs and device copies are deleted, and audited.

``withdraw`` finds the sessions whose subject pseudonym matches and deletes, in one store
transaction, every record that hangs off them (sessions, streams, takes, captures, alignments,
events about those sessions, and the verdicts, channel verdicts and annotations of those captures)
and the blob rows no remaining record uses. It notes the annotation sets of those captures as
withdrawn (``central.datasets.versions``), queues a signed ``purge`` command for each device that
recorded them, and writes an ``audit`` row. Blob files are removed after the commit: a crash in
between leaves unreferenced files, never a record whose media is gone. Running it again is
harmless and removes anything that arrived since (the audit remembers which sessions were hers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from central.blobs import BlobBackend
from central.commands import audit, new_command, queue
from central.store import CentralStore
from sync.commands import PurgeBody
from sync.wire import utc_now

SESSION_KINDS = ("session", "stream", "take", "capture", "alignment", "alignment_pairs")
CAPTURE_KINDS = ("verdict", "annotation", "channel_verdict")


PSEUDONYM = re.compile(r"[0-9a-f]{16,128}")  # what PurgeBody accepts: the device's HMAC, hex


class WithdrawError(ValueError):
    """Nothing to withdraw (a mistyped pseudonym): the command fails instead of auditing nothing."""


@dataclass
class Withdrawal:
    pseudonym: str
    devices: list[str] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    annotation_sets: int = 0
    commands: list[str] = field(default_factory=list)
    sessions: list[tuple[str, str]] = field(default_factory=list)  # (device, session_id)
    captures: list[tuple[str, str]] = field(default_factory=list)  # (device, capture record id)

    def summary(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "records": self.records,
            "blobs": self.blobs,
            "annotation_sets": self.annotation_sets,
            "purge_commands": self.commands,
            "sessions": [list(s) for s in self.sessions],
            "captures": [list(c) for c in self.captures],
        }


def _bodies(
    store: CentralStore, cur: Any, kinds: Iterable[str]
) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
    kinds = tuple(kinds)
    marks = ",".join("?" * len(kinds))
    rows = store._exec(
        cur, f"SELECT device, record_id, kind, blob_sha256, body FROM records WHERE kind IN ({marks})", kinds
    ).fetchall()
    out = []
    for device, record_id, kind, sha, body in rows:
        try:
            inner = json.loads(body).get("body")
        except (ValueError, AttributeError):
            continue
        if isinstance(inner, dict):
            out.append((str(device), str(record_id), str(kind), sha, inner))
    return out


def _withdrawn_before(
    store: CentralStore, cur: Any, pseudonym: str
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(device, session_id) and (device, capture_id) that earlier withdrawals of this pseudonym deleted."""
    rows = store._exec(cur, "SELECT detail FROM audit WHERE action = 'withdraw' AND subject = ?", (pseudonym,))
    sessions: set[tuple[str, str]] = set()
    captures: set[tuple[str, str]] = set()
    for (detail,) in rows.fetchall():
        data = json.loads(detail)
        sessions.update((str(d), str(s)) for d, s in data.get("sessions", []))
        captures.update((str(d), str(c)) for d, c in data.get("captures", []))
    return sessions, captures


def withdraw(store: CentralStore, blobs: BlobBackend, pseudonym: str, who: str) -> Withdrawal:
    """Delete the participant's data centrally and tell the devices; WithdrawError if none is known."""
    if not PSEUDONYM.fullmatch(pseudonym):
        raise WithdrawError(
            f"{pseudonym[:80]!r} is not a pseudonym: devices write 16 to 128 hex digits (see `fieldcap central"
            " participants` or the session records); the raw subject ID never leaves the booth"
        )
    result = Withdrawal(pseudonym)
    gone_files: list[str] = []
    with store.batch(), store._tx() as cur:
        sessions = {
            (d, str(b.get("session_id")))
            for d, _r, _k, _s, b in _bodies(store, cur, ["session"])
            if b.get("subject_pseudonym") == pseudonym
        }
        before_sessions, captures = _withdrawn_before(store, cur, pseudonym)  # for records that came late
        sessions |= before_sessions
        if not sessions:
            raise WithdrawError(f"no session in the central store has subject pseudonym {pseudonym!r}")
        result.sessions = sorted(sessions)
        doomed: list[tuple[str, str, str]] = []
        shas: set[str] = set()
        for device, record_id, kind, sha, body in _bodies(store, cur, SESSION_KINDS):
            if (device, str(body.get("session_id"))) in sessions:
                doomed.append((device, record_id, kind))
                if kind == "capture":
                    captures.add((device, record_id))
                    if sha:
                        shas.add(str(sha))
        for device, record_id, kind, _sha, body in _bodies(store, cur, CAPTURE_KINDS):
            if (device, str(body.get("capture_id"))) in captures:
                doomed.append((device, record_id, kind))
        for device, record_id, kind, _sha, body in _bodies(store, cur, ["event"]):
            detail = body.get("detail")
            if isinstance(detail, dict) and (device, str(detail.get("session_id"))) in sessions:
                doomed.append((device, record_id, kind))  # booth decisions, reopenings, mic tests
        for device, record_id, kind in doomed:
            store._exec(cur, "DELETE FROM records WHERE device = ? AND record_id = ?", (device, record_id))
            result.records[kind] = result.records.get(kind, 0) + 1
        for sha in sorted(shas):
            if store._exec(cur, "SELECT 1 FROM records WHERE blob_sha256 = ? LIMIT 1", (sha,)).fetchone():
                continue  # another participant's record holds the same bytes
            store._exec(cur, "DELETE FROM blob_owners WHERE sha256 = ?", (sha,))
            store._exec(cur, "DELETE FROM blobs WHERE sha256 = ?", (sha,))
            gone_files.append(sha)
        result.blobs = len(gone_files)
        result.captures = sorted(captures)
        now = utc_now()
        result.annotation_sets = _mark(store, captures, pseudonym, now)
        result.devices = sorted({d for d, _s in sessions})
        for device in result.devices:
            cmd = new_command(device, purge=PurgeBody(subject_pseudonym=pseudonym))
            queue(store, cmd, who)
            result.commands.append(cmd.command_id)
        audit(store, "withdraw", pseudonym, result.summary(), who)
    for sha in gone_files:
        blobs.delete(sha)  # after the commit: a failure leaves an unreferenced blob, never a dangling record
    return result


def _mark(store: CentralStore, captures: set[tuple[str, str]], pseudonym: str, when: str) -> int:
    from central.datasets.named import note_withdrawn
    from central.datasets.versions import mark_withdrawn

    if not captures:
        return 0
    note = f"participant {pseudonym} withdrew"
    note_withdrawn(store, {f"{device}/{capture}" for device, capture in captures}, note, when)
    return mark_withdrawn(store, captures, note, when)
