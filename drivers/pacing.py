"""Real-time pacing shared by the simulated drivers and polled devices (Modbus).

Sample ``i`` is due at ``t0 + i * period``; a twin never delivers a sample before its due time, and
when the reader falls behind by whole periods it skips to the newest due sample (counted as drops),
as a real device with a small buffer would.
"""

from __future__ import annotations

import time

__all__ = ["Pacer"]


class Pacer:
    """Due times of a fixed-rate stream on the host's monotonic clock."""

    def __init__(self, rate_hz: float, *, start_ns: int | None = None) -> None:
        self.period_ns = 1e9 / rate_hz
        self.t0_ns = time.monotonic_ns() if start_ns is None else start_ns

    def due_ns(self, index: int) -> int:
        """Monotonic time at which sample ``index`` exists."""
        return self.t0_ns + round(index * self.period_ns)

    def latest_due(self, now_ns: int | None = None) -> int:
        """Index of the newest sample due by ``now_ns`` (-1 before the first)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return int((now - self.t0_ns) // self.period_ns)

    def wait(self, index: int, timeout: float) -> bool:
        """Sleep until sample ``index`` is due; False (after sleeping ``timeout``) if it is later."""
        wait_ns = self.due_ns(index) - time.monotonic_ns()
        if wait_ns <= 0:
            return True
        if wait_ns > timeout * 1e9:
            time.sleep(timeout)
            return False
        time.sleep(wait_ns / 1e9)
        # time.sleep may wake a hair early on some kernels; never deliver before the due time.
        while time.monotonic_ns() < self.due_ns(index):
            time.sleep(0)
        return True

    def next_index(self, wanted: int, *, max_backlog: int = 1) -> tuple[int, int]:
        """The index to deliver next and how many were skipped to keep ``max_backlog`` at most."""
        latest = self.latest_due()
        oldest_kept = latest - max_backlog + 1
        if wanted < oldest_kept:
            return oldest_kept, oldest_kept - wanted
        return wanted, 0
