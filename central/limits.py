"""What one device may cost the central side: sizes, quotas, rates and ages, with their defaults.

Every device is hostile until its message is validated, and a valid message can still be too much:
a 64 GiB announcement, a thousand uploads left open, a query naming one blob a thousand times, a
flood of garbage that would fill the dead-letter table. Each limit here bounds one of those per
device, so one device that hits its limit is refused (and told, and counted) while the others are
served as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class IntakeLimits:
    #: Largest blob a device may announce (``fieldcap ingest --max-blob-size``).
    max_blob_bytes: int = 4 * GiB
    #: Bytes a device's open uploads may announce in all (staged bytes can never exceed it).
    device_staged_bytes: int = 8 * GiB
    #: Uploads a device may have open at once (its publisher runs at most 64 in parallel).
    device_open_uploads: int = 128
    #: An upload untouched (no init or fin) this long is abandoned: its rows and bytes are removed.
    upload_max_age_s: float = 24 * 3600.0
    #: Chunk rows one upload may have (non-contiguous pieces); bounds the work of every state lookup.
    max_chunk_rows: int = 20_000
    #: Query items (record ids + blobs, after deduplication) a device may ask about: burst, then per second.
    query_items_burst: int = 20_000
    query_items_per_s: float = 2_000.0
    #: Dead letters kept per device: burst, then per second; the rest are counted, not kept.
    dead_letter_burst: int = 200
    dead_letters_per_s: float = 2.0
    #: Newest dead letters kept per device, their age limit, and the payload bytes kept of each.
    dead_letters_per_device: int = 1000
    dead_letter_max_age_s: float = 30 * 86400.0
    dead_letter_keep_bytes: int = 4096
    #: How often the ingester expires uploads and dead letters and writes drop summaries.
    sweep_interval_s: float = 60.0


@dataclass
class Buckets:
    """One token bucket per key (device), created full; idle keys are forgotten to bound memory."""

    burst: float
    rate: float
    max_keys: int = 100_000
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, n: float = 1.0) -> bool:
        """Spend ``n`` tokens of ``key``'s bucket; False (and nothing spent) if it has fewer."""
        now = time.monotonic()
        tokens, then = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        ok = tokens >= n
        self._state[key] = (tokens - n if ok else tokens, now)
        if len(self._state) > self.max_keys:
            self._forget_full(now)
        return ok

    def _forget_full(self, now: float) -> None:
        for key, (tokens, then) in list(self._state.items()):
            if tokens + (now - then) * self.rate >= self.burst:
                del self._state[key]
