"""Per-loop heartbeats, so the systemd watchdog is fed only while every loop really progresses.

A daemon that pings the watchdog from a timer thread of its own keeps doing so while its capture
thread is wedged in a driver call or its publisher is deadlocked; systemd then never restarts it.
Here each loop beats from inside its own iteration, and the supervisor pings only when every
registered loop beat recently. A loop about to make a bounded blocking call (opening a device,
a read with a timeout) says so with ``busy_for``, so a slow but bounded call is not a stall, while a
call that overruns its own bound is.

Loops the agent does not own (the writer, the publisher) are watched through a probe that returns
the monotonic time of their last progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoopAge:
    """How long ago a loop last beat, and how much extra silence it announced."""

    name: str
    age_s: float
    allowance_s: float

    def stalled(self, limit_s: float) -> bool:
        return self.age_s > limit_s + self.allowance_s


class Heartbeats:
    """Thread-safe registry of loop heartbeats (monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, tuple[float, float]] = {}
        self._probes: dict[str, Callable[[], float | None]] = {}

    def beat(self, name: str, *, busy_for: float = 0.0) -> None:
        """Loop ``name`` is alive now; it may stay silent ``busy_for`` seconds beyond the limit."""
        now = time.monotonic()
        with self._lock:
            self._beats[name] = (now, busy_for)

    def watch(self, name: str, probe: Callable[[], float | None]) -> None:
        """Watch a loop through ``probe``: the monotonic time of its last progress (None: unknown yet)."""
        with self._lock:
            self._probes[name] = probe
            self._beats.setdefault(name, (time.monotonic(), 0.0))

    def forget(self, name: str) -> None:
        """The loop ended on purpose (stopped, given up): it is no longer expected to beat."""
        with self._lock:
            self._beats.pop(name, None)
            self._probes.pop(name, None)

    def ages(self) -> list[LoopAge]:
        """Every watched loop with the age of its last beat, oldest first."""
        with self._lock:
            probes = dict(self._probes)
        for name, probe in probes.items():
            last = probe()
            if last is not None:
                with self._lock:
                    if name in self._probes:
                        self._beats[name] = (max(last, self._beats.get(name, (0.0, 0.0))[0]), 0.0)
        now = time.monotonic()
        with self._lock:
            out = [LoopAge(n, max(0.0, now - t), busy) for n, (t, busy) in self._beats.items()]
        return sorted(out, key=lambda a: a.age_s - a.allowance_s, reverse=True)

    def stalled(self, limit_s: float) -> list[LoopAge]:
        """Loops silent for longer than ``limit_s`` plus what they announced."""
        return [a for a in self.ages() if a.stalled(limit_s)]
