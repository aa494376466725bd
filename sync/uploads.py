"""One blob upload on the device: which byte ranges still have to go, and in which phase it is.

::

    init ──receipt: missing / partial(ranges)──▶ sending ──all chunks published──▶ draining
      ▲  (init is sent again after the receipt timeout;                              │
      │   it doubles as the question "what do you lack?")                 all chunk PUBACKs in
      │                                                                               ▼
      └──────── receipt after fin: missing, partial, rejected ◀──────── fin published, slot freed

The upload slot is freed when ``fin`` is acknowledged by the broker; the blob is then ``sent`` in
the outbox and its receipt (or a query after the timeout) confirms it or sends it back to
``pending``, from where a new upload starts with ``init`` and resumes at the missing ranges.
Chunks are addressed by offset, so a different chunk size on resume is harmless.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sync.files import sha256_file
from sync.outbox import BlobRef, OutboxChanges

Phase = Literal["init", "sending", "draining", "fin"]


class LocalMediaError(Exception):
    """The local file cannot be read as the catalog describes it; it cannot be synced."""


@dataclass
class Upload:
    ref: BlobRef
    fd: int
    chunk: int
    phase: Phase = "init"
    ranges: deque[tuple[int, int]] = field(default_factory=deque)
    in_flight: int = 0
    init_sent: float = 0.0

    @classmethod
    def open(cls, ref: BlobRef, chunk: int) -> Upload:
        try:
            fd = os.open(ref.path, os.O_RDONLY)
        except OSError as exc:
            raise LocalMediaError(f"cannot open {ref.path}: {exc.strerror}") from None
        return cls(ref, fd, chunk)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def want(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Send these byte ranges (clipped to the blob), then fin."""
        size = self.ref.size
        self.ranges = deque((max(0, a), min(b, size)) for a, b in ranges if max(0, a) < min(b, size))
        self.phase = "sending" if self.ranges else "draining"

    def next_chunk(self) -> tuple[int, bytes] | None:
        """The next chunk to publish (offset, bytes), or None when every range is out."""
        if not self.ranges:
            self.phase = "draining"
            return None
        start, end = self.ranges[0]
        n = min(self.chunk, end - start)
        data = os.pread(self.fd, n, start)
        if len(data) != n:
            raise LocalMediaError(
                f"{self.ref.path} is shorter than the catalog says ({start + len(data)} < {self.ref.size} bytes)"
            )
        if start + n >= end:
            self.ranges.popleft()
        else:
            self.ranges[0] = (start + n, end)
        return start, data

    def peek_size(self) -> int:
        if not self.ranges:
            return 0
        start, end = self.ranges[0]
        return min(self.chunk, end - start)

    def fin_sent(self) -> None:
        """fin is out: nothing more to do until its PUBACK frees the slot."""
        self.phase = "fin"

    def init_due(self, timeout: float) -> bool:
        return self.phase == "init" and time.monotonic() - self.init_sent >= timeout


Event = tuple[str, str, dict[str, object]]  # an events row to add: kind, message, detail


def local_loss(changes: OutboxChanges, events: list[Event], ref: BlobRef, why: str) -> None:
    """The local file cannot be synced (gone, short, changed): reject it and say so in the loss ledger."""
    changes.blob(ref.sha256, "rejected", why)
    events.append(("loss", f"media {ref.path} cannot be synced: {why}", {"sha256": ref.sha256, "path": str(ref.path)}))


def recheck_local(changes: OutboxChanges, events: list[Event], ref: BlobRef, reason: str) -> None:
    """The central side found a hash mismatch: send again if our file is intact, else record the damage."""
    try:
        sha, size = sha256_file(ref.path)
    except OSError as exc:
        sha, size = f"unreadable: {exc.strerror}", -1
    if sha == ref.sha256 and size == ref.size:
        changes.blob(ref.sha256, "pending", reason)
    else:
        local_loss(changes, events, ref, f"the file no longer matches its catalog sha256 (now {sha}, {size} bytes)")
