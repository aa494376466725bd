"""The driver model: ``Sample``, ``DriverStats`` and the ``Driver`` base class.

The base class owns everything that every device needs and that is easy to get subtly wrong in
each driver: sequence numbers, ``t_mono_ns`` stamping, read deadlines, reconnect with a capped,
jittered backoff, and the drop / gap / duplicate / bad-frame counters. A driver implements only
``_open()``, ``_read_raw(timeout)`` and ``_close()`` (after python-can's ``recv`` /
``_recv_internal`` split), so a new backend cannot forget the bookkeeping.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar

from drivers.errors import DriverError, DriverIOError, DriverOpenError, DriverTimeout

if TYPE_CHECKING:
    import numpy as np

    from drivers.settings.common import CommonSettings

__all__ = ["Driver", "DriverStats", "Modality", "RawSample", "Sample", "jittered_backoff"]

Modality = Literal["visible", "thermal", "audio", "sensor"]

S = TypeVar("S", bound="CommonSettings")


def jittered_backoff(attempt: int, initial_s: float, cap_s: float) -> float:
    """The wait before retry ``attempt`` (0 for the first): doubling from ``initial_s``, capped at ``cap_s``.

    Jittered into [base/2, base]: devices on one hub do not retry in step, and a floor remains.
    """
    base: float = min(cap_s, initial_s * 2.0 ** min(attempt, 64))
    return base * (0.5 + random.random() / 2)


@dataclass(frozen=True, slots=True)
class Sample:
    """One unit a device delivered: a frame, an audio block or a sensor reading.

    ``t_mono_ns`` is host ``CLOCK_MONOTONIC`` at acquisition (for audio: of the block's first frame,
    from the fitted index->monotonic relation); ``device_time`` is the device's own clock where it
    has one (RTSP PTS, frame counter, audio sample index of the first frame, sensor sequence).
    Payloads: visible HxWx3 uint8 BGR; thermal HxW uint16 raw; audio (frames, channels) int16;
    sensor ``{name: float}``. ``meta`` holds per-sample extras (simulator ground truth, units, ...).
    """

    stream: str
    modality: Modality
    seq: int
    t_mono_ns: int
    device_time: int | float | None
    payload: np.ndarray[Any, Any] | dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RawSample:
    """What a driver's ``_read_raw`` hands to the base class.

    ``t_mono_ns`` defaults to the moment the base received it. ``device_seq`` is a device-side
    counter (frame number, block number, sensor sequence) used to count gaps and duplicates;
    ``skipped`` is how many samples the driver itself discarded before this one (e.g. a drain thread
    keeping only the newest frame): they are counted as drops, not gaps.
    """

    payload: np.ndarray[Any, Any] | dict[str, float]
    t_mono_ns: int | None = None
    device_time: int | float | None = None
    device_seq: int | None = None
    skipped: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriverStats:
    """A consistent snapshot of a driver's counters (see ``Driver.stats``).

    drops: samples the driver discarded (consumer too slow, buffer overrun, audio overflows);
    gaps: samples the device's own counter says never reached us; duplicates: repeated device
    counters (discarded); reconnects: successful reopens; errors: I/O failures seen; bad_frames:
    malformed input skipped (garbage, truncation, wrong checksum, failed schema);
    overflows: audio input overflows reported by the sound server; timeouts: reads that timed out.
    """

    samples: int = 0
    drops: int = 0
    gaps: int = 0
    duplicates: int = 0
    reconnects: int = 0
    errors: int = 0
    bad_frames: int = 0
    overflows: int = 0
    timeouts: int = 0
    last_error: str | None = None


_COUNTERS = frozenset(
    {"samples", "drops", "gaps", "duplicates", "reconnects", "errors", "bad_frames", "overflows", "timeouts"}
)


class Driver(ABC, Generic[S]):
    """Base class of every driver; a context manager whose ``close()`` is idempotent.

    ``read()`` blocks at most ``timeout`` seconds (default ``settings.read_timeout_s``) and raises
    ``DriverTimeout`` when nothing arrived. An I/O failure (a driver raising ``DriverIOError`` or
    ``OSError``) closes the device and reopens it after a capped, jittered exponential backoff, all
    inside ``read()`` calls: a read never waits for a backoff past its timeout, but one that starts
    a reopen attempt lasts as long as that open (bounded by ``open_timeout_s`` where the backend
    supports it; an RTSP open takes ~2 s of stream probing). ``DriverIOError`` reaches the caller
    only after ``settings.max_reconnects`` consecutive reopen attempts failed to deliver a sample.
    ``read()`` and ``close()`` share a lock, so ``close()`` from another thread waits for a running
    read (at most its timeout). Subclasses implement ``_open``, ``_read_raw`` and ``_close`` and may
    override ``_settings_in_force``; they report malformed input with ``_count("bad_frames", ...)``.
    """

    modality: ClassVar[Modality]
    backoff_initial_s: ClassVar[float] = 0.2

    def __init__(self, settings: S) -> None:
        self.settings: S = settings
        self._stats_lock = threading.Lock()
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._last_error: str | None = None
        self._io_lock = threading.RLock()
        self._is_open = False
        self._failed: str | None = None  # set once the reconnect budget is spent
        self._broken: str | None = None  # set while waiting to reopen after an I/O failure
        self._attempts = 0  # reopen attempts since the last delivered sample
        self._next_attempt = 0.0
        self._seq = 0
        self._last_device_seq: int | None = None
        self._in_force: dict[str, Any] = {}

    # -- public API ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The stream name (``settings.name``)."""
        return self.settings.name

    @property
    def is_open(self) -> bool:
        """True between a successful ``open()`` and ``close()``."""
        return self._is_open

    def open(self) -> None:
        """Open the device; raise ``DriverOpenError`` saying what failed and what to do."""
        with self._io_lock:
            if self._is_open:
                return
            try:
                self._open()
            except DriverError:
                self._safe_close()
                raise
            except Exception as exc:
                self._safe_close()
                raise DriverOpenError(f"{self.name}: cannot open {self.describe()}: {exc}") from exc
            self._is_open = True
            self._failed = None
            self._broken = None
            self._attempts = 0
            self._last_device_seq = None
            self._in_force = self._collect_settings_in_force()

    def read(self, timeout: float | None = None) -> Sample:
        """Return the next sample, waiting at most ``timeout`` seconds (None: the setting)."""
        wait = self.settings.read_timeout_s if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + wait
        with self._io_lock:
            if not self._is_open:
                raise DriverError(f"{self.name}: read() on a driver that is not open; call open()")
            while True:
                if self._failed is not None:
                    raise DriverIOError(self._failed)
                if self._broken is not None:
                    if not self._try_reopen(deadline):
                        break
                    continue  # reopened: read; still broken: wait for the next attempt
                remaining = deadline - time.monotonic()
                try:
                    raw = self._read_raw(max(0.0, remaining))
                except DriverTimeout:
                    raw = None
                except (DriverIOError, OSError) as exc:
                    self._mark_broken(exc)
                    continue
                if raw is not None:
                    sample = self._accept(raw)
                    if sample is not None:
                        return sample
                    continue
                if time.monotonic() >= deadline:
                    break
        self._count("timeouts")
        raise DriverTimeout(f"{self.name}: no sample within {wait:.3g} s")

    def close(self) -> None:
        """Release the device; safe to call any number of times."""
        with self._io_lock:
            if self._is_open:
                self._is_open = False
                self._safe_close()

    def settings_in_force(self) -> dict[str, Any]:
        """The settings actually in force, read back from the device after ``open()``."""
        return dict(self._in_force)

    @property
    def stats(self) -> DriverStats:
        """A thread-safe snapshot of the counters."""
        with self._stats_lock:
            return DriverStats(last_error=self._last_error, **self._counters)

    def describe(self) -> str:
        """A short human description of the device (used in error messages)."""
        return f"{self.settings.type} device"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self.name!r} {state}>"

    # -- hooks for subclasses -----------------------------------------------------------------

    @abstractmethod
    def _open(self) -> None:
        """Open the device; raise ``DriverOpenError`` (or anything: it gets wrapped)."""

    @abstractmethod
    def _read_raw(self, timeout: float) -> RawSample | None:
        """Return the next raw sample, or None once ``timeout`` seconds passed without one.

        Raise ``DriverIOError`` or ``OSError`` on an I/O failure: the base reconnects.
        """

    @abstractmethod
    def _close(self) -> None:
        """Release the device; must not raise when partly opened."""

    def _settings_in_force(self) -> dict[str, Any]:
        """Driver-specific settings read back from the device (merged over the configured ones)."""
        return {}

    def _count(self, counter: str, n: int = 1, *, why: str | None = None) -> None:
        """Add ``n`` to a counter (thread-safe); ``why`` becomes ``last_error``."""
        with self._stats_lock:
            self._counters[counter] += n
            if why is not None:
                self._last_error = why

    # -- internals ----------------------------------------------------------------------------

    def _collect_settings_in_force(self) -> dict[str, Any]:
        configured = self.settings.model_dump(mode="json")
        configured.update(self._settings_in_force())
        return configured

    def _accept(self, raw: RawSample) -> Sample | None:
        """Turn a raw sample into a ``Sample``: counters, sequence, stamps; None for a duplicate."""
        t_mono = raw.t_mono_ns if raw.t_mono_ns is not None else time.monotonic_ns()
        if raw.skipped:
            self._count("drops", raw.skipped)
        if raw.device_seq is not None:
            last = self._last_device_seq
            if last is not None:
                expected = last + 1 + raw.skipped
                if raw.device_seq == last:
                    self._count("duplicates")
                    return None
                if raw.device_seq > expected:
                    self._count("gaps", raw.device_seq - expected)
            self._last_device_seq = raw.device_seq
        sample = Sample(
            stream=self.name,
            modality=self.modality,
            seq=self._seq,
            t_mono_ns=t_mono,
            device_time=raw.device_time,
            payload=raw.payload,
            meta=raw.meta,
        )
        self._seq += 1
        self._attempts = 0
        self._count("samples")
        return sample

    def _mark_broken(self, exc: BaseException) -> None:
        why = f"{self.name}: I/O failure on {self.describe()}: {exc}"
        self._count("errors", why=why)
        self._safe_close()
        self._broken = why
        self._last_device_seq = None
        self._schedule_attempt()

    def _schedule_attempt(self) -> None:
        if self._attempts >= self.settings.max_reconnects:
            self._failed = (
                f"{self._broken}; gave up after {self._attempts} reconnect attempt(s)"
                f" (max_reconnects={self.settings.max_reconnects})"
            )
            return
        delay = jittered_backoff(self._attempts, self.backoff_initial_s, self.settings.backoff_max_s)
        self._next_attempt = time.monotonic() + delay

    def _try_reopen(self, deadline: float) -> bool:
        """Wait for the next reopen attempt (never past ``deadline``) and try it."""
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            if self._next_attempt > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return False
            time.sleep(wait)
        self._attempts += 1
        try:
            self._open()
        except Exception as exc:
            self._count("errors", why=f"{self.name}: reopen attempt {self._attempts} failed: {exc}")
            self._safe_close()
            self._schedule_attempt()
            return True
        self._broken = None
        self._count("reconnects")
        self._in_force = self._collect_settings_in_force()
        return True

    def _safe_close(self) -> None:
        try:
            self._close()
        except Exception as exc:
            self._count("errors", why=f"{self.name}: error while closing: {exc}")
