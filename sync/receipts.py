"""Receipts on the device: what it waits a central answer for, and what each answer means.

A record or blob is *awaiting* from its PUBACK (or, after a restart, from the outbox's ``sent``
state) until a receipt settles it. Only receipts for awaited items count, so a stale, replayed or
misrouted receipt changes nothing. What each one means for the outbox::

    record  stored | duplicate      → confirmed
            missing                 → pending (sent again), unless a copy is in flight right now
            rejected                → rejected, with an events row saying why
    blob    stored | duplicate      → confirmed, if size and sha256 match the catalog; else sent again
            partial | missing       → an upload waiting for its init answer sends those ranges;
                                      a blob already sent goes back to pending (a new upload)
            rejected (sha256)       → pending if the local file still hashes right, else a loss
            rejected (other)        → rejected, with an events row

An item with no answer within the receipt timeout is asked about with ``sync/query``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sync.outbox import BlobRef, OutboxChanges
from sync.uploads import Event, Upload, recheck_local
from sync.wire import Receipt

log = logging.getLogger("fieldcap.sync")


@dataclass
class Awaiting:
    """Items sent without a receipt yet, each with the time to ask about it."""

    records: dict[str, float] = field(default_factory=dict)
    blobs: dict[str, float] = field(default_factory=dict)
    refs: dict[str, BlobRef] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.records or self.blobs)

    def load(self, record_ids: Iterable[str], blobs: Iterable[BlobRef], ask_at: float) -> None:
        """After a (re)start: everything the outbox says was sent but not confirmed."""
        for rid in record_ids:
            self.records[rid] = ask_at
        for ref in blobs:
            self.refs[ref.sha256] = ref
            self.blobs[ref.sha256] = ask_at

    def due(self, now: float, limit: int) -> tuple[list[str], list[str]]:
        """Up to ``limit`` record ids and blob hashes whose time to ask has come."""
        recs = [rid for rid, t in self.records.items() if t <= now][:limit]
        shas = [sha for sha, t in self.blobs.items() if t <= now][:limit]
        return recs, shas

    def asked(self, record_ids: Sequence[str], shas: Sequence[str], again_at: float) -> None:
        for rid in record_ids:
            self.records[rid] = again_at
        for sha in shas:
            self.blobs[sha] = again_at


@dataclass
class Settled:
    records_confirmed: int = 0
    blobs_confirmed: int = 0


@dataclass
class ReceiptBook:
    """Applies receipts to the awaited items, the uploads in progress and the outbox changes."""

    awaiting: Awaiting
    uploads: dict[str, Upload]
    inflight_records: set[str]

    def apply(self, receipts: Sequence[Receipt], changes: OutboxChanges, events: list[Event]) -> Settled:
        done = Settled()
        changes.receipt_seen = bool(receipts) or changes.receipt_seen
        for r in receipts:
            if r.type == "record":
                done.records_confirmed += self._record(r, changes, events)
            else:
                done.blobs_confirmed += self._blob(r, changes, events)
        return done

    def _record(self, r: Receipt, changes: OutboxChanges, events: list[Event]) -> bool:
        rid, awaiting = r.id, self.awaiting.records
        if rid not in awaiting and rid not in self.inflight_records:
            return False  # not something this device asked about (stale, replayed or misrouted)
        if r.status in ("stored", "duplicate"):
            awaiting.pop(rid, None)
            changes.record(rid, "confirmed")
            return True
        if r.status == "missing":
            # The central side has nothing: send again (unless a copy is on its way right now).
            if rid not in self.inflight_records and awaiting.pop(rid, None) is not None:
                changes.record(rid, "pending")
        elif r.status == "rejected":
            awaiting.pop(rid, None)
            changes.record(rid, "rejected", r.reason)
            events.append(("rejected", f"central side rejected record {rid}: {r.reason}", {"record_id": rid}))
        return False

    def _blob(self, r: Receipt, changes: OutboxChanges, events: list[Event]) -> bool:
        sha = r.id
        up = self.uploads.get(sha)
        ref = up.ref if up is not None else self.awaiting.refs.get(sha)
        if ref is None:
            return False  # not a blob this device is sending (a replayed or stale receipt)
        if r.status in ("stored", "duplicate"):
            if r.size != ref.size or r.sha256 != ref.sha256:
                log.error("receipt for blob %s does not match (size %s, sha %s); sending again", sha, r.size, r.sha256)
                self._restart(sha, changes, "receipt did not match size/sha256")
                return False
            self._end(sha)
            self.awaiting.refs.pop(sha, None)
            changes.blob(sha, "confirmed")
            return True
        if r.status in ("partial", "missing"):
            if up is not None:
                if up.phase == "init":
                    up.want(r.missing if r.status == "partial" and r.missing is not None else [(0, ref.size)])
                return False  # an upload in progress ignores answers to earlier questions
            if sha in self.awaiting.blobs:
                self._restart(sha, changes, None)  # fin or query says it is incomplete: upload again
        elif r.status == "rejected":
            self._end(sha)
            if r.reason and "sha256" in r.reason:
                recheck_local(changes, events, ref, r.reason)
            else:
                changes.blob(sha, "rejected", r.reason)
                events.append(("rejected", f"central side rejected blob {sha}: {r.reason}", {"sha256": sha}))
        return False

    def _end(self, sha: str) -> None:
        self.awaiting.blobs.pop(sha, None)
        up = self.uploads.pop(sha, None)
        if up is not None:
            up.close()

    def _restart(self, sha: str, changes: OutboxChanges, why: str | None) -> None:
        self._end(sha)
        changes.blob(sha, "pending", why)
