"""One clock for every stream: host monotonic time, mapped to UTC with the kernel's sync state.

Samples are stamped with CLOCK_MONOTONIC, which never jumps. UTC is derived from a map of
(monotonic, realtime) pairs taken every ~10 s and whenever the offset between the two clocks
moves (an NTP step, a manual date change), each with ``ntp_adjtime``'s view of synchronisation,
so every record can say how far its UTC can be trusted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

STA_UNSYNC = 0x0040
TIME_ERROR = 5
JUMP_NS = 1_000_000  # a change of the realtime-monotonic offset above 1 ms is a clock step


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


@dataclass(frozen=True, slots=True)
class ClockHealth:
    synced: bool
    maxerror_us: int | None
    esterror_us: int | None
    state: int | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kernel_clock_health() -> ClockHealth:
    """Read (never set) the kernel's NTP state; works with or without systemd."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return ClockHealth(False, None, None, None, "unavailable")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        tx = _Timex()
        state = int(libc.ntp_adjtime(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return ClockHealth(False, None, None, None, "unavailable")
    if state < 0:
        return ClockHealth(False, None, None, None, "unavailable")
    synced = state != TIME_ERROR and not (tx.status & STA_UNSYNC)
    return ClockHealth(synced, int(tx.maxerror), int(tx.esterror), state, "ntp_adjtime")


@dataclass(frozen=True, slots=True)
class ClockSample:
    t_mono_ns: int
    t_realtime_ns: int
    health: ClockHealth
    reason: str


class Clock:
    """The mono→UTC map; ``tick()`` is called often and samples only when due or after a jump."""

    def __init__(self, period_s: float = 10.0) -> None:
        self.period_ns = int(period_s * 1e9)
        self._lock = threading.Lock()
        self._latest = self._take("start")

    @staticmethod
    def _take(reason: str) -> ClockSample:
        mono = time.monotonic_ns()
        real = time.time_ns()
        return ClockSample(mono, real, kernel_clock_health(), reason)

    def tick(self) -> ClockSample | None:
        """Take a new sample when the period has passed or the clocks moved apart; return it."""
        now_mono = time.monotonic_ns()
        now_real = time.time_ns()
        with self._lock:
            last = self._latest
            drift = (now_real - now_mono) - (last.t_realtime_ns - last.t_mono_ns)
            if abs(drift) > JUMP_NS:
                reason = "jump"
            elif now_mono - last.t_mono_ns >= self.period_ns:
                reason = "periodic"
            else:
                return None
            self._latest = ClockSample(now_mono, now_real, kernel_clock_health(), reason)
            return self._latest

    @property
    def latest(self) -> ClockSample:
        with self._lock:
            return self._latest

    def utc_ns(self, t_mono_ns: int) -> int:
        """UTC (ns since the epoch) of a monotonic instant, from the latest map entry."""
        s = self.latest
        return s.t_realtime_ns + (t_mono_ns - s.t_mono_ns)

    def health(self) -> ClockHealth:
        return self.latest.health
