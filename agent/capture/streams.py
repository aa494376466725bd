"""One capture thread per device, supervising it: restart with backoff and a limit, never alone.

A driver that cannot open, raises, crashes, or stays silent for longer than its ``read_timeout_s``
is closed and restarted after a doubling, jittered wait (``[daemon] restart_initial_s`` ..
``restart_max_s``); after ``max_restarts`` failures in a row the stream is given up with a
``stream_failed`` alert, until a reload re-arms it. A stream that delivered samples for
``restart_reset_s`` counts from zero again. Other streams never notice: each has its own thread,
driver and catalog connection. Every failure, restart and driver-reported loss is an ``events``
row, and the thread beats its heartbeat from inside every iteration, so a driver wedged inside a
call stops the systemd watchdog (see ``agent.ops.heartbeat``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.capture.recorder import StreamRecorder
from agent.catalog.db import Catalog
from agent.config import CaptureSettings, DaemonSettings
from agent.ops.heartbeat import Heartbeats
from drivers import (
    DeviceSettings,
    Driver,
    DriverEndOfStream,
    DriverError,
    DriverTimeout,
    driver_modality,
    jittered_backoff,
    open_driver,
)

log = logging.getLogger("fieldcap.capture")

STAT_EVENTS = ("drops", "gaps", "duplicates", "bad_frames", "overflows")
STATS_PERIOD_S = 5.0
READ_SLICE_S = 1.0  # longest single read, so a stop or reload is noticed within about a second


@dataclass
class StreamState:
    """What one stream is doing, for status and metrics (written by its capture thread)."""

    name: str
    modality: str
    state: str = "starting"  # opening, running, restarting, failed, ended, stopped
    samples: int = 0
    native_id: int | None = None  # the capture thread's kernel id (CPU accounting)
    restarts: int = 0
    failures: int = 0  # in a row; reset after restart_reset_s of delivering samples
    open: bool = False
    last_error: str | None = None
    last_sample_mono: float | None = None
    totals: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)
    attempted: threading.Event = field(default_factory=threading.Event)
    driver: Driver[Any] | None = None
    recorder: StreamRecorder | None = None

    def as_dict(self, refused: int = 0) -> dict[str, Any]:
        t = self.totals
        age = None if self.last_sample_mono is None else round(time.monotonic() - self.last_sample_mono, 3)
        return {
            "modality": self.modality,
            "state": self.state,
            "open": self.open,
            "samples": self.samples,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_sample_age_s": age,
            "overflows": t.get("overflows", 0),
            "dropped": {
                "drops": t.get("drops", 0),
                "gaps": t.get("gaps", 0),
                "duplicates": t.get("duplicates", 0),
                "bad_frames": t.get("bad_frames", 0),
                "writer_queue": t.get("writer_queue", 0),
                "disk_full": refused,
            },
        }


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str  # driver_error, driver_stall, stream_crash
    message: str
    crash: bool = False


def _unprefixed(name: str, message: str) -> str:
    """A driver's message without its leading ``name: `` (events and logs add the stream themselves)."""
    return message.removeprefix(f"{name}: ")


# ``Agent.make_recorder`` (the documented extension point that subclasses such as the booth override).
MakeRecorder = Callable[[str, str, CaptureSettings, dict[str, Any]], StreamRecorder]


class StreamRunner:
    """The capture thread of one device.

    ``make_recorder(stream, modality, policy, settings_in_force)`` builds the recorder each time the
    device opens; ``release_recorder(stream, policy)`` undoes its wiring when the device closes.
    ``daemon`` returns the restart settings in force (they may change on reload).
    """

    def __init__(
        self,
        device: DeviceSettings,
        policy: CaptureSettings,
        *,
        open_catalog: Callable[[], Catalog],
        heartbeats: Heartbeats,
        daemon: Callable[[], DaemonSettings],
        make_recorder: MakeRecorder,
        release_recorder: Callable[[str, CaptureSettings], None],
        previous: StreamState | None = None,
    ) -> None:
        self.device = device
        self.policy = policy
        self.state = StreamState(device.name, driver_modality(device.type))
        if previous is not None:  # keep the counters a reload would otherwise reset
            self.state.samples, self.state.restarts = previous.samples, previous.restarts
            self.state.totals = previous.totals
        self.stop_event = threading.Event()
        self._open_catalog = open_catalog
        self._heartbeats = heartbeats
        self._daemon = daemon
        self._make_recorder = make_recorder
        self._release_recorder = release_recorder
        self._beat = f"capture:{device.name}"
        self.thread = threading.Thread(target=self._main, name=f"capture-{device.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop (flushing what it holds); True if it ended within ``timeout``."""
        self.stop_event.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        state = self.state
        state.native_id = threading.get_native_id()
        try:
            self._supervise()
        except Exception as exc:  # e.g. a catalog that cannot take an event: the stream stops, loudly
            state.state = "failed"
            state.last_error = f"stream supervision stopped: {type(exc).__name__}: {exc}"
            log.exception("%s: %s", state.name, state.last_error, extra={"stream": state.name})
        finally:
            self._heartbeats.forget(self._beat)
            state.attempted.set()
            if state.state not in ("failed", "ended"):
                state.state = "stopped"

    def _supervise(self) -> None:
        """Run the device, and after a failure restart it with backoff, up to ``max_restarts`` in a row."""
        name, state, stop = self.device.name, self.state, self.stop_event
        with self._open_catalog() as cat:
            while not stop.is_set():
                self._heartbeats.beat(self._beat)
                failure = self._run_driver(cat)
                if failure is None or stop.is_set():
                    return
                d = self._daemon()
                state.failures += 1
                state.last_error = failure.message
                if state.failures > d.max_restarts:
                    msg = (
                        f"{name}: given up after {d.max_restarts} restart(s) in a row; last error: "
                        f"{failure.message}. Fix the device, then reload (systemctl reload fieldcap-agent)"
                    )
                    cat.add_event(failure.kind, f"{name}: {failure.message}", stream=name)
                    cat.add_event("stream_failed", msg, stream=name, detail={"failures": state.failures})
                    log.error("%s", msg, extra={"stream": name, "event": "stream_failed"})
                    state.state = "failed"  # after the events: whoever sees the state finds them
                    return
                delay = jittered_backoff(state.failures - 1, d.restart_initial_s, d.restart_max_s)
                state.state = "restarting"
                state.restarts += 1
                cat.add_event(
                    failure.kind,
                    f"{name}: {failure.message}; restart {state.failures} of at most {d.max_restarts} in {delay:.1f} s",
                    stream=name,
                    detail={"attempt": state.failures, "backoff_s": round(delay, 3)},
                )
                log.error(
                    "%s: %s; restarting in %.1f s",
                    name,
                    failure.message,
                    delay,
                    exc_info=failure.crash,
                    extra={"stream": name, "event": failure.kind},
                )
                until = time.monotonic() + delay
                while not stop.is_set() and time.monotonic() < until:
                    self._heartbeats.beat(self._beat)
                    stop.wait(min(READ_SLICE_S, max(0.0, until - time.monotonic())))

    def _run_driver(self, cat: Catalog) -> _Failure | None:
        """Open the device and capture until stopped (None) or until it fails (what went wrong)."""
        device, state, stop = self.device, self.state, self.stop_event
        busy = device.open_timeout_s + READ_SLICE_S  # a read may reopen the device inside the driver
        state.state = "opening"
        self._heartbeats.beat(self._beat, busy_for=busy)
        try:
            driver = open_driver(device, open=False)
            state.driver = driver
            driver.open()
        except Exception as exc:  # a missing device, a bad setting, an import failure: all restartable
            state.driver = None
            state.attempted.set()
            return _Failure("driver_error", _unprefixed(device.name, str(exc)))
        try:
            settings = driver.settings_in_force()
            recorder = self._make_recorder(device.name, state.modality, self.policy, settings)
        except Exception as exc:  # e.g. the catalog is locked or full: close the device and retry later
            driver.close()
            state.driver = None
            state.attempted.set()
            return _Failure("stream_crash", f"cannot start recording: {type(exc).__name__}: {exc}", crash=True)
        # The device row is written beside the capture loop: the device delivers from the moment it
        # opened, and at start-up every stream commits its row at once (up to ~25 ms waiting for the
        # write lock and fsync, measured), enough for a 30 fps camera with a small buffer to skip frames.
        row = threading.Thread(target=self._record_device, args=(settings,), name=f"device-row-{device.name}")
        row.start()
        state.recorder, state.open, state.state = recorder, True, "running"
        state.attempted.set()  # READY=1 waits for this (or for a failed open) on every stream
        slice_s = min(READ_SLICE_S, device.read_timeout_s)
        last_sample = started = time.monotonic()
        next_stats = started + STATS_PERIOD_S
        try:
            while not stop.is_set():
                self._heartbeats.beat(self._beat, busy_for=busy)
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + STATS_PERIOD_S
                    self._record_stats(cat, driver.stats)
                try:
                    sample = driver.read(timeout=slice_s)
                except DriverTimeout:
                    silent = time.monotonic() - last_sample
                    if silent >= device.read_timeout_s:
                        return _Failure(
                            "driver_stall",
                            f"no sample for {silent:.1f} s (read_timeout_s is {device.read_timeout_s:g})",
                        )
                    continue
                last_sample = time.monotonic()
                state.samples += 1
                state.last_sample_mono = last_sample
                if state.failures and last_sample - started >= self._daemon().restart_reset_s:
                    state.failures = 0
                recorder.feed(sample)
            return None
        except DriverEndOfStream as exc:
            state.state = "ended"
            cat.add_event("stream_ended", f"{device.name}: the source has no more samples: {exc}", stream=device.name)
            log.info("%s: end of stream", device.name)
            stop.set()
            return None
        except DriverError as exc:
            return _Failure("driver_error", _unprefixed(device.name, str(exc)) or type(exc).__name__)
        except Exception as exc:  # a crashing driver or recorder must not take the agent down
            return _Failure("stream_crash", f"{type(exc).__name__}: {exc}", crash=True)
        finally:
            self._release_recorder(device.name, self.policy)
            try:
                recorder.flush()  # the open segment, window or readings batch goes to the writer
            except Exception:  # e.g. the disk failed under a streamed segment: the writer or recovery has it
                log.exception("%s: could not flush the open capture", device.name, extra={"stream": device.name})
            driver.close()
            row.join()
            state.open, state.driver, state.recorder = False, None, None
            self._record_stats(cat, driver.stats, reset=True)

    def _record_device(self, settings: dict[str, Any]) -> None:
        """The ``devices`` row with the settings in force (on its own connection and thread)."""
        device = self.device
        try:
            with self._open_catalog() as cat:
                cat.upsert_device(device.name, device.type, self.state.modality, settings)
        except Exception:  # alignment and export read the row too; capture goes on
            log.exception("%s: could not record the device row", device.name, extra={"stream": device.name})

    def _record_stats(self, cat: Catalog, stats: Any, *, reset: bool = False) -> None:
        """Turn new driver counter increments into loss-ledger events (and status totals)."""
        state = self.state
        for name in STAT_EVENTS:
            value = int(getattr(stats, name, 0) or 0)
            delta = value - state.reported.get(name, 0)
            if delta > 0:
                state.totals[name] = state.totals.get(name, 0) + delta
                cat.add_event(
                    name.rstrip("s") if name != "bad_frames" else "bad_frame",
                    f"{state.name}: {delta} {name.replace('_', ' ')} reported by the driver",
                    stream=state.name,
                    count=delta,
                )
            state.reported[name] = value
        if reset:
            state.reported = {}  # a reopened driver starts its counters at zero
