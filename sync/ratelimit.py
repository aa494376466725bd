"""A token bucket for the device's upload bandwidth cap.

Tokens are bytes. A send is allowed while the bucket is not in debt and then takes its full size,
so one large chunk may borrow against the future instead of never fitting; the debt is paid back
before the next send. Over any window the bytes sent stay within ``rate × seconds + burst``.
"""

from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, rate: int | None, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else (rate or 0) // 4)
        self.tokens = self.burst
        self._t = time.monotonic()

    def _refill(self) -> None:
        assert self.rate is not None
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self, n: int) -> bool:
        """Spend ``n`` bytes if the bucket is not in debt; False means wait (see ``wait_s``)."""
        if self.rate is None:
            return True
        self._refill()
        if self.tokens < 0:
            return False
        self.tokens -= n
        return True

    def wait_s(self) -> float:
        """Seconds until the next send may go (0 when it may go now)."""
        if self.rate is None:
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
