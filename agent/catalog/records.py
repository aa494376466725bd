"""Record ids and row timestamps: how every catalog row is named and dated."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime


def new_record_id() -> str:
    """A random id whose first 12 hex digits are the creation time in ms, so ids sort by age."""
    return f"{time.time_ns() // 1_000_000:012x}-{uuid.uuid4().hex[:20]}"


def utc_now() -> str:
    """Wall-clock time for catalog rows, as ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
