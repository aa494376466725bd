"""The Driver base class: sequence, stamps, timeouts, reconnect/backoff, counters.

A scripted in-test driver stands in for a device here because what is under test is the base
class's bookkeeping; real devices are exercised in the other modules.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import Field

from drivers import (
    Driver,
    DriverError,
    DriverIOError,
    DriverOpenError,
    DriverStats,
    DriverTimeout,
    RawSample,
)
from drivers.settings.common import CommonSettings


class ScriptSettings(CommonSettings):
    type: Literal["script"] = Field(description="Driver name.")


class ScriptDriver(Driver[ScriptSettings]):
    """Plays a script: RawSample, 'io' (raise OSError), 'timeout' (return None), 'wait'."""

    modality = "sensor"
    backoff_initial_s = 0.01

    def __init__(self, settings: ScriptSettings, script: list[Any], open_failures: int = 0):
        super().__init__(settings)
        self.script = deque(script)
        self.open_failures = open_failures
        self.opens = 0
        self.closes = 0

    def _open(self) -> None:
        self.opens += 1
        if self.open_failures > 0:
            self.open_failures -= 1
            raise OSError("device not there")

    def _read_raw(self, timeout: float) -> RawSample | None:
        if not self.script:
            time.sleep(timeout)
            return None
        step = self.script.popleft()
        if step == "io":
            raise OSError("cable pulled")
        if step == "timeout":
            time.sleep(timeout)
            return None
        assert isinstance(step, RawSample)
        return step

    def _close(self) -> None:
        self.closes += 1


def make(script: list[Any], **kw: Any) -> ScriptDriver:
    open_failures = kw.pop("open_failures", 0)
    kw.setdefault("backoff_max_s", 0.05)
    settings = ScriptSettings(name="s1", type="script", **kw)
    return ScriptDriver(settings, script, open_failures)


def raw(seq: int | None = None, skipped: int = 0) -> RawSample:
    return RawSample(payload={"v": float(seq or 0)}, device_seq=seq, skipped=skipped)


def test_sequence_stamps_and_stats() -> None:
    with make([raw(), raw()]) as drv:
        before = time.monotonic_ns()
        a, b = drv.read(1), drv.read(1)
    assert (a.seq, b.seq) == (0, 1)
    assert a.stream == "s1" and a.modality == "sensor"
    assert before <= a.t_mono_ns <= b.t_mono_ns <= time.monotonic_ns()
    assert drv.stats == DriverStats(samples=2)


def test_gaps_duplicates_and_drops_from_device_counters() -> None:
    script = [raw(10), raw(11), raw(11), raw(14), raw(17, skipped=2), raw(3)]
    with make(script) as drv:
        seqs = [drv.read(1).payload for _ in range(5)]
    assert [s["v"] for s in seqs] == [10, 11, 14, 17, 3]  # type: ignore[index]
    stats = drv.stats
    assert (stats.duplicates, stats.gaps, stats.drops) == (1, 2, 2)


def test_timeout_is_a_timeouterror_and_respects_the_deadline() -> None:
    with make([]) as drv:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            drv.read(0.2)
        assert 0.19 < time.monotonic() - t0 < 1.0
        with pytest.raises(DriverTimeout):
            drv.read(0)
    assert drv.stats.timeouts == 2


def test_io_failure_reconnects_transparently() -> None:
    with make(["io", raw(1)]) as drv:
        sample = drv.read(2)
    assert sample.payload == {"v": 1.0}
    assert drv.stats.reconnects == 1
    assert drv.stats.errors == 1
    assert "cable pulled" in (drv.stats.last_error or "")
    assert drv.opens == 2


def test_reconnect_budget_then_driverioerror() -> None:
    drv = make(["io"], max_reconnects=2)
    drv.open()
    drv.open_failures = 10
    with pytest.raises(DriverIOError, match="gave up after 2"):
        drv.read(5)
    with pytest.raises(DriverIOError):  # stays failed
        drv.read(0.1)
    assert drv.stats.reconnects == 0
    drv.close()


def test_max_reconnects_zero_fails_at_once() -> None:
    with make(["io"], max_reconnects=0) as drv, pytest.raises(DriverIOError):
        drv.read(1)


def test_read_never_blocks_past_timeout_while_backing_off() -> None:
    drv = make(["io", raw(1)], backoff_max_s=3.0)
    drv.backoff_initial_s = 2.0  # type: ignore[misc]  # first attempt after 1-2 s
    drv.open()
    t0 = time.monotonic()
    with pytest.raises(DriverTimeout):
        drv.read(0.2)
    assert time.monotonic() - t0 < 0.9
    assert drv.read(3).payload == {"v": 1.0}  # a later read finishes the reconnect
    drv.close()


def test_backoff_is_capped_and_jittered() -> None:
    drv = make([], backoff_max_s=0.05, max_reconnects=100)
    drv._attempts = 30
    drv._broken = "x"
    delays = set()
    for _ in range(20):
        drv._schedule_attempt()
        delays.add(round(drv._next_attempt - time.monotonic(), 4))
    assert max(delays) <= 0.05
    assert min(delays) >= 0.024
    assert len(delays) > 1


def test_open_errors_are_wrapped_with_the_device() -> None:
    drv = make([], open_failures=1)
    with pytest.raises(DriverOpenError, match="s1: cannot open script device: device not there"):
        drv.open()
    assert not drv.is_open


def test_close_is_idempotent_and_read_needs_open() -> None:
    drv = make([raw()])
    with pytest.raises(DriverError, match="not open"):
        drv.read(0.1)
    drv.open()
    drv.close()
    drv.close()
    assert drv.closes == 1


def test_settings_in_force_merges_configured_and_readback() -> None:
    class Readback(ScriptDriver):
        def _settings_in_force(self) -> dict[str, Any]:
            return {"read_timeout_s": 9.0, "firmware": "1.2"}

    drv = Readback(ScriptSettings(name="s1", type="script"), [])
    with drv:
        force = drv.settings_in_force()
    assert force["firmware"] == "1.2" and force["read_timeout_s"] == 9.0 and force["name"] == "s1"


def test_stats_snapshot_is_thread_safe() -> None:
    drv = make([])

    def bump() -> None:
        for _ in range(10_000):
            drv._count("drops")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert drv.stats.drops == 40_000


def test_sample_is_frozen() -> None:
    with make([RawSample(payload=np.zeros(3))]) as drv:
        sample = drv.read(1)
    with pytest.raises(AttributeError):
        sample.seq = 5  # type: ignore[misc]
