"""One object that wires time, sessions, triggers and the stream recorders for an agent process.

The daemon (and the booth, which runs the same capture path) holds one ``Recording`` and calls it
at a handful of points: ``start`` (background session), ``recorder`` / ``release`` around each
device's capture loop (unless the caller makes its recorders and passes ``recorders``),
``housekeeping`` once a second (incremental alignment), ``record_clock`` for each clock map
entry, ``on_verdict`` after QC (analyzer trigger rules) and ``stop``. Everything else — the
session API for the booth UI, operator triggers — hangs off it.

Alignment runs while a session is open, not only at its end: a continuous session may last
months, and a booth session hours. Each open session of this process (the background one and the
booth session in force) is indexed in consecutive windows ``[t_from, t_to)`` of ``align_every_s``,
each once everything in it is surely committed (``align_lag_s``: the longest unit a stream commits
at once — an audio segment, a readings batch, a triggered clip — plus a margin). The windows tile
the session: every reference item lands in exactly one run, and the last run, at the session's end,
is open-ended.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.capture.clock import Clock, ClockSample
from agent.capture.environment import LatestReadings
from agent.capture.pairing import FRAME_MODALITIES
from agent.capture.recorder import StreamRecorder
from agent.capture.triggers import Trigger, TriggerBus, hold_s
from agent.catalog.db import Catalog
from agent.catalog.writer import Writer
from agent.config import CaptureSettings, Config
from agent.sessions.alignment import align_session
from agent.sessions.takes import Sessions, load_subject_key

if TYPE_CHECKING:
    from agent.capture.redaction import FaceRedactor

log = logging.getLogger("fieldcap.recording")

ALIGN_EVERY_S = 300.0  # a long session is indexed in windows of this length...
ALIGN_LAG_S = 15.0  # ...each once its audio files (segment_s later) are surely committed
ALIGN_GRACE_S = 2.0  # an ended booth session is indexed this long after its end (queued frames)
ALIGN_TRIES = 5  # a window that fails this often is left out (logged), so the next ones still run
SWITCH_INTERVAL_S = 0.0005  # capture threads must get the GIL promptly to stamp on time


@dataclass
class _Indexed:
    """How far an open session's alignment index reaches."""

    t_from: int | None  # start of the next window (None: the session's beginning)
    since_ns: int  # what the next window's length is measured from
    failures: int = 0


def commit_lag_s(config: Config) -> float:
    """The longest a capture may reach the catalog after its own start, plus a margin."""
    units = [0.0]
    for cap in config.capture.values():
        if cap.policy == "segment":
            units.append(cap.segment_s)
        elif cap.policy == "readings":
            units.append(cap.batch_s)
        elif cap.policy == "triggered":
            units.append(cap.pre_s + cap.post_s)
    return max(units) + ALIGN_LAG_S


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
        align_every_s: float = ALIGN_EVERY_S,
        align_lag_s: float | None = None,
    ) -> None:
        self.config = config
        self.open_catalog = open_catalog
        self.clock = clock
        self.writer = writer
        self.live = live or LatestReadings()
        # A callable lets the daemon swap its bus on a config reload.
        self._triggers = triggers or TriggerBus(record=self.record_trigger)
        self.recorders: dict[str, StreamRecorder] = {}
        self._external_recorders = recorders
        self._lock = threading.Lock()
        self._redactor: FaceRedactor | None = None
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
        self.started_ns = time.monotonic_ns()
        self._indexed: dict[str, _Indexed] = {}
        self._closed_at: dict[str, int] = {}  # sessions whose open-ended last window ran: up to when
        self.align_every_ns = int(align_every_s * 1e9)
        self.align_lag_ns = int((commit_lag_s(config) if align_lag_s is None else align_lag_s) * 1e9)

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
        self.started_ns = time.monotonic_ns()
        if background_session:
            info = self.sessions.start_session(kind="continuous", meta={"started_by": "agent"})
            self.background = info.session_id
            self._indexed[info.session_id] = _Indexed(None, self.started_ns)

    def stop(self) -> None:
        """Index what is left of every session this process indexed, and end the background one.

        Called after capture has stopped and the writer has drained, so the last windows are
        complete. A booth session left open keeps its index up to here; a later process that
        resumes it continues from the last window (see ``_track``).
        """
        background, self.background = self.background, None
        try:
            with self.open_catalog() as cat:
                for session in list(self._indexed):
                    row = cat.sessions.session(session)
                    still_open = session != background and row is not None and row["ended_utc"] is None
                    # A session that goes on later gets a closed window, so a resumed index does not
                    # overlap this one; an ended one its open-ended last window.
                    self._align(cat, session, time.monotonic_ns() if still_open else None)
        except Exception:  # the index can be rebuilt later; ending the session must not fail
            log.exception("alignment at stop failed")
        self._indexed.clear()
        if background is not None:
            self.sessions.end_session(background)

    @staticmethod
    def record_clock(cat: Catalog, sample: ClockSample) -> None:
        """Store a clock map entry with its full health (and sync it)."""
        cat.add_clock_entry(sample.t_mono_ns, sample.t_realtime_ns, sample.health.as_dict(), sample.reason)

    def housekeeping(self, cat: Catalog) -> None:
        """Called about once a second (after the clock tick): index the next window of each open session."""
        now = time.monotonic_ns()
        current = self.sessions.current()
        if current is not None and current not in self._indexed:
            self._track(cat, current, now)
        for session, state in list(self._indexed.items()):
            if session != self.background:
                row = cat.sessions.session(session)
                ended = row is None or row["ended_utc"] is not None
                if ended and (row is None or now - int(row["ended_mono_ns"] or 0) >= ALIGN_GRACE_S * 1e9):
                    self._align(cat, session, None)  # its last window, open-ended
                    continue
                if ended:
                    continue
            until = now - self.align_lag_ns
            if until - state.since_ns >= self.align_every_ns:
                self._align(cat, session, until)

    def _track(self, cat: Catalog, session: str, now: int) -> None:
        """Start indexing a session: from its beginning, or after what is indexed already.

        A session seen again was resumed or reopened (``fieldcap rerecord``): its index goes on
        from where this process's last window ended, or from where an earlier process left it
        (its last closed window; after an open-ended one, from this process's start — everything
        before was in that run).
        """
        t_from = self._closed_at.pop(session, None)
        if t_from is None:
            until, open_ended = cat.timeline.indexed_until(session)
            if open_ended:
                t_from = self.started_ns
            elif until is not None and until <= now:
                t_from = until
        self._indexed[session] = _Indexed(t_from, now if t_from is None else max(t_from, self.started_ns))

    def _align(self, cat: Catalog, session: str, t_to: int | None) -> None:
        """Index ``[t_from, t_to)`` of a session; ``t_to`` None is its last window (then it is dropped)."""
        state = self._indexed.get(session)
        if state is None:
            return
        reached = time.monotonic_ns()
        try:
            align_session(cat, session, t_from=state.t_from, t_to=t_to)
        except Exception:  # the next tick retries the same window; capture must not suffer
            state.failures += 1
            if state.failures < ALIGN_TRIES:
                log.exception("alignment of session %s failed; retrying", session)
                return
            log.exception("alignment of session %s failed %d times; window left unindexed", session, state.failures)
        state.failures = 0
        if t_to is None:
            self._indexed.pop(session, None)
            self._closed_at[session] = reached
        else:
            state.t_from = state.since_ns = t_to

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
            redactor=self._face_redactor() if policy.redact_faces else None,
        )
        self._pair(rec)
        with self._lock:
            self.recorders[stream] = rec
        if policy.policy == "triggered":
            self.triggers.subscribe(stream, rec.trigger)
        return rec

    def _face_redactor(self) -> FaceRedactor:
        """One face redactor for every redacting camera, loaded when the first one opens: a missing
        model fails that camera's start (and is shown), it never lets a frame through unredacted."""
        from agent.capture.redaction import FaceRedactor

        with self._lock:
            if self._redactor is None:
                self._redactor = FaceRedactor(self.config.qc, self._redact_min_score())
            return self._redactor

    def _redact_min_score(self) -> float:
        scores = [cap.redact_min_score for cap in self.config.capture.values() if cap.redact_faces]
        return min(scores, default=0.4)

    def _pair(self, rec: StreamRecorder) -> None:
        """Wire pairing (``pair_with``): every camera may lead the running recorders paired with it; a
        follower's ring reaches as far back as its leader's pre-roll."""
        if rec.modality in FRAME_MODALITIES:
            stream = rec.stream
            rec.lead(lambda: [r for r in self._running().values() if r.policy.pair_with == stream])
        leader = rec.policy.pair_with
        if leader is not None:
            running = self._running().get(leader)
            lead = running.policy if running is not None else self.config.capture_for(leader)
            if lead.policy == "triggered":
                rec.pair_hold_s = lead.pre_s + hold_s(lead.triggers)

    def release(self, stream: str) -> None:
        """The stream's device closed: its recorder has been flushed and takes no more work."""
        self.triggers.unsubscribe(stream)
        with self._lock:
            self.recorders.pop(stream, None)

    # ------------------------------------------------------------------ triggers

    def trigger(self, reason: str, *, streams: tuple[str, ...] | None = None, source: str = "operator") -> Trigger:
        """An operator / API trigger: open a window on the triggered streams (all by default)."""
        return self.triggers.fire(source, reason, streams=streams)

    def on_verdict(
        self,
        stream: str,
        metrics: Mapping[str, Any],
        t_event_ns: int | None = None,
        *,
        detail: Mapping[str, Any] | None = None,
    ) -> list[Trigger]:
        """Evaluate analyzer trigger rules on a screened capture's metrics.

        ``t_event_ns`` is when the finding happened (``triggers.analyzer_event_ns``; None: now). A
        capture from before this process started (QC resuming after a restart) triggers nothing:
        its moment is gone, and its monotonic time may belong to another boot.
        """
        now = time.monotonic_ns()
        t = now if t_event_ns is None else t_event_ns
        if not self.started_ns <= t <= now:
            return []
        return self.triggers.check_metrics(stream, metrics, t, detail)

    def record_trigger(self, trig: Trigger) -> None:
        """Write the ``trigger`` event (why a clip exists); a failure is logged, never raised."""
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
