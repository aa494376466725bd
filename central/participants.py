"""The participant registry: the newest ``participant`` record of each pseudonym, from any booth.

Built from the synced records themselves (no table of its own), so it can never disagree with
them; booths send a new record whenever a participant's attributes or consent change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from central.store import CentralStore
from sync.records import ParticipantV1

__all__ = ["RegisteredParticipant", "registry"]


@dataclass(frozen=True, slots=True)
class RegisteredParticipant:
    device: str
    record: ParticipantV1

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, **self.record.model_dump()}


def registry(store: CentralStore) -> dict[str, RegisteredParticipant]:
    """Pseudonym → its newest participant record (by the device's update time, then arrival)."""
    with store._tx() as cur:
        rows = store._exec(
            cur, "SELECT device, body FROM records WHERE kind = 'participant' ORDER BY received_utc, record_id"
        ).fetchall()
    out: dict[str, RegisteredParticipant] = {}
    for device, body in rows:
        inner = json.loads(body).get("body")
        try:
            rec = ParticipantV1.model_validate(inner)
        except ValueError:  # validated at intake; an old row that no longer reads is left out
            continue
        old = out.get(rec.subject_pseudonym)
        if old is None or rec.updated_utc >= old.record.updated_utc:
            out[rec.subject_pseudonym] = RegisteredParticipant(str(device), rec)
    return dict(sorted(out.items()))
