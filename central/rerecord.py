"""Re-record requests: which device recorded a take, and whether a retake has answered it.

A request is a ``rerecord`` command (``central.commands``) for the device that recorded the takes.
It is closed when that device's ``take`` record that supersedes the requested take arrives with
status ``done``: the record the booth writes anyway, so closing needs nothing else from the device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.commands import list_commands, new_command, queue
from central.store import CentralStore
from sync.commands import Command, RerecordBody, RerecordItem


class RerecordError(ValueError):
    """A take or capture the central store does not know, or that belongs to no take."""


@dataclass(frozen=True, slots=True)
class RequestState:
    command: Command
    device: str
    item: RerecordItem
    acked: bool
    retake: str | None  # the take id that answered it

    @property
    def state(self) -> str:
        return "closed" if self.retake else ("delivered" if self.acked else "queued")


def _takes(store: CentralStore) -> list[tuple[str, dict[str, Any]]]:
    with store._tx() as cur:
        rows = store._exec(cur, "SELECT device, body FROM records WHERE kind = 'take'").fetchall()
    out = []
    for device, body in rows:
        inner = json.loads(body).get("body")
        if isinstance(inner, dict):
            out.append((str(device), inner))
    return out


def _capture(store: CentralStore, capture_id: str) -> list[str]:
    with store._tx() as cur:
        rows = store._exec(
            cur, "SELECT device FROM records WHERE kind = 'capture' AND record_id = ?", (capture_id,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def _holds(take: dict[str, Any], capture_id: str) -> bool:
    for value in (take.get("captures") or {}).values():
        if value == capture_id or (isinstance(value, list) and capture_id in value):
            return True
    return False


def request(
    store: CentralStore, take_ids: Sequence[str], capture_ids: Sequence[str], reason: str, who: str
) -> list[Command]:
    """Queue one request per device holding the named takes (captures name the take they are in)."""
    takes = _takes(store)
    wanted: dict[str, dict[str, RerecordItem]] = {}

    def add(device: str, body: dict[str, Any]) -> None:
        item = RerecordItem(take_id=body["take_id"], session_id=body["session_id"], item_id=body["item_id"])
        wanted.setdefault(device, {})[item.take_id] = item

    for take_id in take_ids:
        hits = [(d, b) for d, b in takes if b.get("take_id") == take_id]
        if not hits:
            raise RerecordError(f"no take {take_id!r} in the central store (`fieldcap central ls --kind take`)")
        add(*hits[-1])
    for capture_id in capture_ids:
        devices = _capture(store, capture_id)
        if not devices:
            raise RerecordError(f"no capture {capture_id!r} in the central store")
        hits = [(d, b) for d, b in takes if d in devices and _holds(b, capture_id)]
        if not hits:
            raise RerecordError(f"capture {capture_id!r} belongs to no booth take, so it cannot be re-recorded")
        add(*hits[-1])
    commands = []
    with store.batch():
        for device, items in sorted(wanted.items()):
            cmd = new_command(device, rerecord=RerecordBody(items=list(items.values()), reason=reason))
            queue(store, cmd, who)
            commands.append(cmd)
    return commands


def states(store: CentralStore) -> list[RequestState]:
    """Every requested take, and whether its retake has arrived."""
    retakes = {
        (d, str(b["supersedes"])): str(b["take_id"])
        for d, b in _takes(store)
        if b.get("supersedes") and b.get("status") == "done"
    }
    out = []
    for row in list_commands(store, "rerecord"):
        assert row.command.rerecord is not None
        for item in row.command.rerecord.items:
            out.append(
                RequestState(
                    row.command,
                    row.command.device,
                    item,
                    row.acked_utc is not None,
                    retakes.get((row.command.device, item.take_id)),
                )
            )
    return out
