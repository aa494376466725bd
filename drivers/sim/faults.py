"""Fault switches shared by the simulated twins (``[devices.faults]``).

``FaultPlan`` decides, from the sample index alone, which samples a twin loses, before which it
stalls, when it disconnects and how its clock steps, so a faulty run is as reproducible as a clean
one. ``PacedTwin`` applies the plan to the twins paced by a ``Pacer`` (camera, thermal, serial);
the microphone applies it to its audio blocks itself.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TypeVar

from drivers.base import Driver, RawSample
from drivers.errors import DriverIOError, DriverOpenError
from drivers.pacing import Pacer
from drivers.settings.common import CommonSettings
from drivers.settings.sim import SimFaults

__all__ = ["FaultPlan", "PacedTwin"]


class FaultPlan:
    """The faults of one twin at ``rate`` samples per (nominal) second."""

    def __init__(self, faults: SimFaults, rate: float) -> None:
        self.faults = faults
        self.rate = rate
        self.since_open = 0  # samples delivered since the last (re)open
        self.opens = 0
        self._failing_opens = 0
        self._stalled: set[int] = set()
        self._jump_index = round(faults.clock_jump_at_s * rate)

    @property
    def rate_factor(self) -> float:
        """Host-time rate of the device relative to nominal (1 + drift)."""
        return 1.0 + self.faults.drift_ppm * 1e-6

    def on_open(self, name: str) -> None:
        """Count an open; fail it while a disconnect's ``reopen_failures`` last."""
        if self._failing_opens > 0:
            self._failing_opens -= 1
            raise DriverOpenError(f"{name}: simulated device not back yet (faults.reopen_failures)")
        self.opens += 1
        self.since_open = 0

    def dropped(self, index: int) -> bool:
        """Whether sample ``index`` is lost on the device side."""
        every = self.faults.drop_every
        return every is not None and index % every == every - 1

    def first_kept(self, index: int) -> tuple[int, int]:
        """The first index at or after ``index`` that is not dropped, and how many were dropped."""
        skipped = 0
        while self.dropped(index):
            index += 1
            skipped += 1
        return index, skipped

    def stall_ns(self, index: int) -> int:
        """Nanoseconds of silence before sample ``index`` (once per index; 0: none)."""
        f = self.faults
        if f.stall_every is None or f.stall_s is None or index == 0 or index % f.stall_every:
            return 0
        if index in self._stalled:
            return 0
        self._stalled.add(index)
        if len(self._stalled) > 64:
            self._stalled = {i for i in self._stalled if i >= index}
        return round(f.stall_s * 1e9)

    def check_connected(self, name: str) -> None:
        """Raise ``DriverIOError`` once ``disconnect_after`` samples were delivered since the open."""
        after = self.faults.disconnect_after
        if after is not None and self.since_open >= after:
            self._failing_opens = self.faults.reopen_failures
            raise DriverIOError(f"{name}: simulated device disconnected (faults.disconnect_after={after})")

    def delivered(self) -> None:
        """Count a delivered sample."""
        self.since_open += 1

    def clock_offset(self, index: int) -> float:
        """Seconds the device clock is off at sample ``index`` (the jump, once reached)."""
        f = self.faults
        return f.clock_jump_s if f.clock_jump_s and index >= self._jump_index else 0.0


S = TypeVar("S", bound=CommonSettings)


class PacedTwin(Driver[S]):
    """A twin delivering sample ``i`` at ``t0 + i / (rate * (1 + drift))``, with its faults applied.

    ``device_time`` is the device's sample counter, stepped by ``clock_jump_s * rate`` after the
    jump; ``meta["faults"]`` names what happened right before a sample (drop, stall, reconnect).
    """

    max_backlog = 1

    def __init__(self, settings: S, rate: float, faults: SimFaults) -> None:
        super().__init__(settings)
        self._rate = rate
        self._plan = FaultPlan(faults, rate)
        self._pacer: Pacer | None = None
        self._next = 0
        self._events: list[str] = []
        self._lost = 0  # samples the device produced while it was closed

    def _open(self) -> None:
        self._plan.on_open(self.name)
        if self._pacer is not None:
            # what the device produced while it was gone never reached us (drops)
            latest = self._pacer.latest_due()
            if latest >= self._next:
                self._lost += latest + 1 - self._next
                self._next = latest + 1
        if self._plan.opens > 1:
            self._events.append("reconnect")
        if self._pacer is None:  # a reopen keeps the timeline, like a device that kept running
            self._prepare()
            self._pacer = Pacer(self._rate * self._plan.rate_factor)

    def _prepare(self) -> None:
        """One-time costs before sample 0 is due."""

    def _read_raw(self, timeout: float) -> RawSample | None:
        assert self._pacer is not None
        plan = self._plan
        plan.check_connected(self.name)
        index, skipped = self._pacer.next_index(self._next, max_backlog=self.max_backlog)
        index, lost = plan.first_kept(index)
        stall = plan.stall_ns(index)
        if stall:
            self._pacer.t0_ns += stall  # the device falls silent, then goes on from where it was
            self._events.append("stall")
        if not self._pacer.wait(index, timeout):
            return None
        t_mono = time.monotonic_ns()  # acquisition: stamped before the (slow) rendering
        self._next = index + 1
        if lost:
            self._events.append("drop")
        raw = self._sample(index, self._pacer.due_ns(index), t_mono)
        if raw is None:
            return None
        raw.skipped = skipped + lost + self._lost
        self._lost = 0
        raw.device_seq = index
        raw.device_time = index + round(plan.clock_offset(index) * self._rate)
        if self._events:
            raw.meta["faults"] = self._events
            self._events = []
        plan.delivered()
        return raw

    @abstractmethod
    def _sample(self, index: int, t_truth_ns: int, t_mono_ns: int) -> RawSample | None:
        """The sample ``index`` (None: it was garbage, counted, and the next one is read)."""

    def _close(self) -> None:
        pass
