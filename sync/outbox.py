"""What the publisher needs from the device's durable outbox.

The outbox lives in the agent's catalog (the same transaction that commits a capture puts its
outbox row), so ``sync`` does not own its SQL: it states the operations it needs here and the
catalog implements them. The outbox is the source of truth; the publisher keeps only what is in
flight in memory and can always rebuild it from here after a restart.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

ItemState = Literal["pending", "sent", "confirmed", "rejected"]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A media file to upload, addressed by its content hash."""

    sha256: str
    size: int
    path: Path
    media_type: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One record (and perhaps the blob it refers to) waiting for a central receipt."""

    seq: int
    record_id: str
    kind: str
    body_json: str
    priority: int
    blob: BlobRef | None


class OutboxStore(Protocol):
    """Durable outbox operations; every method commits before it returns."""

    def records_to_send(self, limit: int, skip: Collection[str]) -> Sequence[OutboxItem]:
        """Records not yet published (state pending), highest priority first, oldest first."""

    def blobs_to_send(self, limit: int, skip: Collection[str]) -> Sequence[BlobRef]:
        """Distinct blobs whose upload has not started or must restart (state pending)."""

    def unconfirmed(self, limit: int) -> tuple[Sequence[str], Sequence[BlobRef]]:
        """Record ids and blobs that were sent but have no receipt yet."""

    def mark_records(self, record_ids: Collection[str], state: ItemState, error: str | None = None) -> None:
        """Move records to a state (confirmed only on a central receipt)."""

    def mark_blob(self, sha256: str, state: ItemState, error: str | None = None) -> None:
        """Move every outbox row that refers to this blob to a state."""

    def note_receipt(self) -> None:
        """Remember when the last central receipt arrived (for status and metrics)."""

    def record_event(self, kind: str, message: str, detail: dict[str, object]) -> None:
        """Add an entry to the loss ledger / audit log (itself synced)."""
