"""The environment in force right now: the newest value of every sensor field, kept in memory.

Sensor readings reach the catalog in batches (``batch_s``), so the catalog alone cannot say what
the temperature is *at the moment* a session or take starts. Sensor streams update this table on
every reading; sessions snapshot it at start and end (falling back to the catalog's newest
readings for a process that runs no sensor, such as a booth next to a daemon).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

STALE_S = 300.0  # a value older than this is reported with its age but flagged stale


class LatestReadings:
    """Thread-safe ``stream -> field -> (value, t_mono_ns, t_utc_ns)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, tuple[float | None, int, int]]] = {}

    def update(self, stream: str, values: Mapping[str, float | None], t_mono_ns: int, t_utc_ns: int) -> None:
        with self._lock:
            fields = self._values.setdefault(stream, {})
            for name, value in values.items():
                fields[name] = (value, t_mono_ns, t_utc_ns)

    def snapshot(self, now_mono_ns: int | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """``{stream: {field: {value, t_utc_ns, age_s, stale}}}`` as JSON-ready dicts."""
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        with self._lock:
            items = {s: dict(f) for s, f in self._values.items()}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for stream, fields in items.items():
            out[stream] = {}
            for name, (value, t_mono, t_utc) in fields.items():
                age = round((now - t_mono) / 1e9, 3)
                out[stream][name] = {"value": value, "t_utc_ns": t_utc, "age_s": age, "stale": age > STALE_S}
        return out
