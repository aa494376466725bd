"""One object that wires time, sessions, triggers and the stream recorders for an agent process.

The daemon (and the booth, which runs the same capture path) holds one ``Recording`` and calls it
at a handful of points: ``start`` (background session), ``recorder`` / ``release`` around each
device's capture loop (unless the caller makes its recorders and passes ``recorders``),
``housekeeping`` once a second (incremental alignment), ``record_clock`` for each clock map
entry, ``on_verdict`` after QC (analyzer trigger rules) and ``stop``. Everything else — the
session API for the booth UI, operator triggers — hangs off it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from agent.alignment import align_session
from agent.catalog import Catalog
from agent.clock import Clock, ClockSample
from agent.config import CaptureSettings, Config
from agent.environment import LatestReadings
from agent.recorder import StreamRecorder
from agent.sessions import Sessions, load_subject_key
from agent.triggers import Trigger, TriggerBus
from agent.writer import Writer

log = logging.getLogger("fieldcap.recording")

ALIGN_EVERY_S = 300.0  # a long session is indexed in windows of this length...
ALIGN_LAG_S = 15.0  # ...each once its audio files (segment_s later) are surely committed
SWITCH_INTERVAL_S = 0.0005  # capture threads must get the GIL promptly to stamp on time


class Recording:
    """Clock, writer, sessions, triggers, live readings and the running recorders of one agent."""

    def __init__(
        self,
        config: Config,
        *,
        open_catalog: Callable[[], AbstractContextManager[Catalog]],
        clock: Clock,
        writer: Writer,
        config_file: str = "<config>",
        live: LatestReadings | None = None,
        triggers: TriggerBus | Callable[[], TriggerBus] | None = None,
        recorders: Callable[[], Mapping[str, StreamRecorder]] | None = None,
    ) -> None:
        self.config = config
        self.open_catalog = open_catalog
        self.clock = clock
        self.writer = writer
        self.live = live or LatestReadings()
        # A callable lets the daemon swap its bus on a config reload.
        self._triggers = triggers or TriggerBus(record=self._record_trigger)
        self.recorders: dict[str, StreamRecorder] = {}
        self._external_recorders = recorders
        self._lock = threading.Lock()
        key_file = config.session.subject_key_file
        self.sessions = Sessions(
            open_catalog,
            clock,
            site=config.agent.site,
            station=config.agent.station,
            operator=config.session.operator,
            subject_key=load_subject_key(key_file, config_file=config_file) if key_file else None,
            live=self.live,
            recorders=self._running,
        )
        for name, cap in config.capture.items():
            for rule in cap.triggers:
                self.triggers.add_rule(rule, name)
        self.background: str | None = None
        self._aligned_to: int | None = None
        segment = max((c.segment_s for c in config.capture.values() if c.policy == "segment"), default=0.0)
        self.align_lag_ns = int((segment + ALIGN_LAG_S) * 1e9)

    @property
    def triggers(self) -> TriggerBus:
        return self._triggers if isinstance(self._triggers, TriggerBus) else self._triggers()

    def _running(self) -> dict[str, StreamRecorder]:
        if self._external_recorders is not None:
            return dict(self._external_recorders())
        with self._lock:
            return dict(self.recorders)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, background_session: bool = True) -> None:
        """Open the continuous session that captures belong to while no booth session is open."""
        # The default 5 ms GIL switch interval would let a busy thread (JSON, SQLite) delay a capture
        # thread's timestamp by milliseconds; 0.5 ms keeps stamps within the alignment budget.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        if background_session:
            info = self.sessions.start_session(kind="continuous", meta={"started_by": "agent"})
            self.background = info.session_id
            self._aligned_to = time.monotonic_ns()

    def stop(self) -> None:
        """End the background session and index what is left of it (after capture has stopped)."""
        if self.background is None:
            return
        session, self.background = self.background, None
        try:
            with self.open_catalog() as cat:
                align_session(cat, session, t_from=self._aligned_to)
        except Exception:  # the index can be rebuilt later; ending the session must not fail
            log.exception("alignment of session %s failed", session)
        self.sessions.end_session(session)

    @staticmethod
    def record_clock(cat: Catalog, sample: ClockSample) -> None:
        """Store a clock map entry with its full health (and sync it)."""
        cat.add_clock_entry(sample.t_mono_ns, sample.t_realtime_ns, sample.health.as_dict(), sample.reason)

    def housekeeping(self, cat: Catalog) -> None:
        """Called about once a second (after the clock tick): index the next window of a long session."""
        now = time.monotonic_ns()
        if self.background is not None and self._aligned_to is not None:
            until = now - self.align_lag_ns
            if until - self._aligned_to >= ALIGN_EVERY_S * 1e9:
                try:
                    align_session(cat, self.background, t_from=self._aligned_to, t_to=until)
                except Exception:
                    log.exception("alignment of session %s failed; retrying next window", self.background)
                    return
                self._aligned_to = until

    # ------------------------------------------------------------------ streams

    def recorder(self, stream: str, modality: str, policy: CaptureSettings, settings: dict[str, Any]) -> StreamRecorder:
        """A recorder for a stream whose device just opened (registered for takes and triggers)."""
        rec = StreamRecorder(
            stream,
            modality,
            policy,
            settings,
            self.clock,
            self.writer,
            session_of=self.sessions.current,
            live=self.live,
            triggers=self.triggers,
        )
        with self._lock:
            self.recorders[stream] = rec
        if policy.policy == "triggered":
            self.triggers.subscribe(stream, rec.trigger)
        return rec

    def release(self, stream: str) -> None:
        """The stream's device closed: its recorder has been flushed and takes no more work."""
        self.triggers.unsubscribe(stream)
        with self._lock:
            self.recorders.pop(stream, None)

    # ------------------------------------------------------------------ triggers

    def trigger(self, reason: str, *, streams: tuple[str, ...] | None = None, source: str = "operator") -> Trigger:
        """An operator / API trigger: open a window on the triggered streams (all by default)."""
        return self.triggers.fire(source, reason, streams=streams)

    def on_verdict(self, stream: str, metrics: dict[str, Any]) -> None:
        """Evaluate analyzer trigger rules on a screened capture's metrics."""
        self.triggers.check_metrics(stream, metrics, time.monotonic_ns())

    def _record_trigger(self, trig: Trigger) -> None:
        try:
            with self.open_catalog() as cat:
                cat.add_event(
                    "trigger",
                    f"{trig.source} trigger: {trig.reason}",
                    detail={
                        "trigger_id": trig.trigger_id,
                        "source": trig.source,
                        "t_mono_ns": trig.t_mono_ns,
                        "t_utc_ns": self.clock.utc_ns(trig.t_mono_ns),
                        "streams": list(trig.streams) if trig.streams else None,
                        **dict(trig.detail),
                    },
                )
        except Exception:  # a trigger must still open its window when the audit row fails
            log.exception("could not record trigger %s", trig.trigger_id)
