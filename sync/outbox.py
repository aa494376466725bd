"""What the publisher needs from the device's durable outbox.

The outbox lives in the agent's catalog (the same transaction that commits a capture puts its
outbox row), so ``sync`` does not own its SQL: it states the operations it needs here and the
catalog implements them. The outbox is the source of truth; the publisher keeps only what is in
flight in memory and can always rebuild it from here after a restart.

States, for a record and (separately) for the blob it refers to::

    pending ──publish + PUBACK──▶ sent ──central receipt (size + sha256 match)──▶ confirmed
       ▲                           │
       └── receipt says missing ───┘          rejected: the central side refused it, or the
                                              local file is gone (an ``events`` row says why)

A blob is ``sent`` once its ``fin`` was acknowledged by the broker. Only ``confirmed`` lets
retention delete local media.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sync.commands import Command

ItemState = Literal["pending", "sent", "confirmed", "rejected"]

#: Outbox priority of an operator-flagged item: lower goes first, below every kind's default.
PRIORITY_FLAGGED = -1


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


@dataclass
class OutboxChanges:
    """State changes gathered over one publisher round, written in one transaction."""

    records: dict[str, tuple[ItemState, str | None]] = field(default_factory=dict)
    blobs: dict[str, tuple[ItemState, str | None]] = field(default_factory=dict)
    receipt_seen: bool = False

    def record(self, record_id: str, state: ItemState, error: str | None = None) -> None:
        self.records[record_id] = (state, error)

    def blob(self, sha256: str, state: ItemState, error: str | None = None) -> None:
        self.blobs[sha256] = (state, error)

    def __bool__(self) -> bool:
        return bool(self.records or self.blobs or self.receipt_seen)


if TYPE_CHECKING:
    from sync.commands import Command


class OutboxStore(Protocol):
    """Durable outbox operations; every method commits before it returns."""

    def records_to_send(self, limit: int, skip: Collection[str]) -> Sequence[OutboxItem]:
        """Records not yet published (state pending), highest priority first, oldest first."""

    def blobs_to_send(self, limit: int, skip: Collection[str]) -> Sequence[BlobRef]:
        """Distinct blobs whose upload has not started or must restart (state pending)."""

    def unconfirmed(self, limit: int) -> tuple[Sequence[str], Sequence[BlobRef]]:
        """Record ids and blobs that were sent but have no receipt yet."""

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the outbox's database.

        An idle publisher compares it with the one read at its last look, and looks again only
        when something was committed since: an idle device then runs no outbox query at all.
        """

    def apply(self, changes: OutboxChanges) -> None:
        """Apply record and blob state changes in one transaction.

        A confirmed item never changes state again; ``receipt_seen`` notes the time of the last
        central receipt (for status and metrics).
        """

    def record_event(self, kind: str, message: str, detail: dict[str, object]) -> None:
        """Add an entry to the loss ledger / audit log (itself synced)."""

    def apply_command(self, command: Command, *, verified: bool) -> str | None:
        """Apply a central command once (its event and ``command_ack`` record committed with it).

        ``verified``: its signature checked out; commands that delete data are refused without.
        Returns what was done, or None for a command id applied before (a replay).
        """
