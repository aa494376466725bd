"""Record ids: how every catalog row is named (rows are dated by ``sync.wire.utc_now``)."""

from __future__ import annotations

import time
import uuid


def new_record_id() -> str:
    """A random id whose first 12 hex digits are the creation time in ms, so ids sort by age."""
    return f"{time.time_ns() // 1_000_000:012x}-{uuid.uuid4().hex[:20]}"
