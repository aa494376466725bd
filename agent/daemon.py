"""The agent: drivers → recorder → writer → catalog → QC → publisher, each on its own thread.

``fieldcap run`` (through ``agent.ops.supervisor``) and ``fieldcap demo`` both use this class, so the
demo exercises exactly the code that runs in the field.

Each device has its own supervised capture thread (``agent.capture.streams``): a failing device is
restarted with backoff and a limit without touching the other streams. ``apply`` takes a new
configuration while running and restarts only what changed. Every drop is an ``events`` row
(itself synced), and every loop beats a ``Heartbeats`` registry from inside its own iteration,
which is what the systemd watchdog is fed from.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from agent.capture.clock import Clock
from agent.capture.environment import LatestReadings
from agent.capture.recorder import StreamRecorder
from agent.capture.recording import Recording
from agent.capture.streams import StreamRunner, StreamState
from agent.capture.triggers import Trigger, TriggerBus, analyzer_event_ns
from agent.catalog.db import Catalog
from agent.catalog.recovery import recover
from agent.catalog.reports import catalog_numbers, qc_totals
from agent.catalog.writer import Writer
from agent.config import (
    CaptureSettings,
    Config,
    config_warnings,
    load_receipt_verifier,
    resolve_secret,
    resolve_secret_path,
)
from agent.ops.heartbeat import Heartbeats
from agent.ops.retention import DiskGuard
from agent.ops.status import age_seconds
from agent.qc import QcWorker, screen_channels_pending
from drivers import DeviceSettings
from models import Screener, Screening
from sync.mqtt import Credentials, tls_context
from sync.publisher import Publisher
from sync.signing import ReceiptVerifier

log = logging.getLogger("fieldcap.agent")

STATS_PERIOD_S = 5.0
QC_RELOOK_S = 10.0  # an idle QC loop looks again this often even without a commit (a reload)
QC_BUSY_S = 600.0  # screening one long audio file may take minutes; not a stall


class Agent:
    """Runs one configuration until stopped; ``apply`` takes a new one while running."""

    def __init__(self, config: Config, *, config_file: str = "<config>", heartbeats: Heartbeats | None = None) -> None:
        self.config = config
        self.config_file = config_file
        self.data_dir = config.agent.data_dir
        self.catalog_path = self.data_dir / "catalog.sqlite"
        self.clock = Clock()
        self.heartbeats = heartbeats or Heartbeats()
        self.heartbeat_limit_s = config.daemon.heartbeat_timeout_s
        self.streams: dict[str, StreamState] = {}
        self._runs: dict[str, StreamRunner] = {}
        self._stop_capture = threading.Event()
        self._stop_bg = threading.Event()
        self._bg_threads: list[threading.Thread] = []
        self.guard: DiskGuard | None = None
        self.writer = Writer(
            self.catalog_path,
            config.agent.device_id,
            self.data_dir,
            self.clock,
            queue_size=config.storage.queue_size,
            synchronous=config.storage.synchronous,
            media_allowed=self._media_allowed,
        )
        self.live = LatestReadings()
        self.triggers = TriggerBus(record=self._record_trigger)
        self.recording = Recording(
            config,
            open_catalog=self.catalog,
            clock=self.clock,
            writer=self.writer,
            config_file=config_file,
            live=self.live,
            triggers=lambda: self.triggers,
            recorders=lambda: {n: s.recorder for n, s in self.streams.items() if s.recorder is not None},
        )
        self.publisher: Publisher | None = None
        self.screener = Screener(config.qc)
        self.qc = QcWorker(self.data_dir, lambda: self.screener, self.profile_of)
        self.qc_done = 0
        self._numbers: dict[str, Any] = {}
        self._writer_seen = (-1, 0.0)

    def catalog(self) -> Catalog:
        return Catalog(self.catalog_path, self.config.agent.device_id, synchronous=self.config.storage.synchronous)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        verifier = load_receipt_verifier(self.config, self.config_file) if self.config.sync.enabled else None
        for warning in config_warnings(self.config):
            log.warning("%s", warning)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.catalog() as cat:
            recover(cat, self.data_dir)
            self._add_clock_sample(cat, self.clock.latest)
            self.qc.counts = qc_totals(cat.conn)
            self._numbers = catalog_numbers(cat.conn, with_qc=False)
        self.guard = DiskGuard(
            self.catalog_path,
            self.config.agent.device_id,
            self.config.storage,
            synchronous=self.config.storage.synchronous,
            evict_confirmed=self.config.sync.receipt_public_key is not None,
        )
        self.writer.start()
        self.recording.start(background_session=self.needs_background_session())
        self.heartbeats.watch("writer", self._writer_progress)
        for device in self.config.devices:
            self._start_stream(device)
        for name, target in (
            ("qc", self._qc_loop),
            ("housekeeping", self._housekeeping_loop),
            ("retention", self._retention_loop),
        ):
            t = threading.Thread(target=target, name=f"fieldcap-{name}", daemon=True)
            t.start()
            self._bg_threads.append(t)
        if self.config.sync.enabled:
            self.publisher = self._new_publisher(self.config, self._credentials(self.config), verifier)
            self.publisher.start()

    def _new_publisher(self, config: Config, credentials: Credentials, verifier: ReceiptVerifier | None) -> Publisher:
        pub = Publisher(
            device_id=config.agent.device_id,
            settings=config.sync,
            credentials=credentials,
            open_store=lambda: self.catalog().outbox,
            verifier=verifier,
        )
        self.heartbeats.watch("sync", lambda: getattr(self.publisher, "heartbeat", None))
        return pub

    def _credentials(self, config: Config) -> Credentials:
        s = config.sync
        file = self.config_file
        password = resolve_secret(file, "sync.password_file", s.password_file) if s.password_file else None
        tls = None
        if s.tls is not None:
            ca = resolve_secret_path(file, "sync.tls.ca_file", s.tls.ca_file)
            cert = resolve_secret_path(file, "sync.tls.cert_file", s.tls.cert_file) if s.tls.cert_file else None
            key = resolve_secret_path(file, "sync.tls.key_file", s.tls.key_file) if s.tls.key_file else None
            tls = tls_context(str(ca), str(cert) if cert else None, str(key) if key else None)
        username = s.username or (config.agent.device_id if password else None)
        return Credentials(username, password, tls)

    def devices_attempted(self) -> bool:
        """True once every stream has tried to open its device at least once (READY=1 waits for it)."""
        return all(s.attempted.is_set() for s in self.streams.values())

    def stop_capture(self, timeout: float = 30.0) -> None:
        """Stop the devices, flush open segments and windows, and write everything queued."""
        deadline = time.monotonic() + timeout
        self._stop_capture.set()
        for run in self._runs.values():
            run.stop_event.set()
        for name, run in list(self._runs.items()):
            if not run.stop(max(0.1, deadline - time.monotonic())):
                log.error("%s: capture thread did not stop in time; its open segment may be lost", name)
        self.writer.stop(max(0.1, deadline - time.monotonic()))
        left = self.writer.pending()
        if left:  # the stop deadline passed with captures still queued: they are lost, so say so
            msg = f"{left} capture(s) still queued for the writer when the stop deadline passed; not written"
            log.error("%s", msg, extra={"event": "drop"})
            with self.catalog() as cat:
                cat.add_event("drop", msg, count=left, detail={"reason": "stop deadline"})
        self._record_drops()
        if self.guard is not None:
            self.guard.check()  # records refusals still pending
        self.recording.stop()  # ends the continuous session and indexes its alignment

    def wait_screened(self, timeout: float) -> bool:
        """True once every capture has its verdict and every multi-channel take its microphones' verdicts."""
        deadline = time.monotonic() + timeout
        with self.catalog() as cat:
            while time.monotonic() < deadline:
                if not cat.unscreened(1) and not cat.channel_unscreened(1):
                    return True
                time.sleep(0.1)
            return not cat.unscreened(1) and not cat.channel_unscreened(1)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop everything within ``timeout``: capture and writer first, then QC, housekeeping and sync."""
        deadline = time.monotonic() + timeout
        if not self._stop_capture.is_set():
            self.stop_capture(max(0.1, 0.6 * timeout))
        self._stop_bg.set()
        for t in self._bg_threads:
            t.join(max(0.1, min(5.0, deadline - time.monotonic())))
        if self.publisher is not None:
            self.publisher.stop(max(0.1, deadline - time.monotonic()))
            self.heartbeats.forget("sync")
        self.heartbeats.forget("writer")
        if self.guard is not None:
            self.guard.close()
        try:
            with self.catalog() as cat:
                self._numbers = catalog_numbers(cat.conn, with_qc=False)
        except Exception as exc:  # stopping must not fail on a catalog that cannot be read
            log.error("cannot read the final catalog numbers: %s", exc)

    # ------------------------------------------------------------------ reload

    def restart_needed(self, new: Config) -> list[str]:
        """Settings that differ and cannot change while running (a reload with them is refused)."""
        old = self.config
        keys = []
        for section in ("agent", "metrics"):
            if getattr(old, section) != getattr(new, section):
                keys.append(section)
        for key in ("synchronous", "queue_size"):
            if getattr(old.storage, key) != getattr(new.storage, key):
                keys.append(f"storage.{key}")
        return keys

    def apply(self, new: Config) -> list[str]:
        """Switch to ``new`` (already validated), restarting only what changed; return what changed.

        Everything that can fail (models settings, credentials) is prepared before anything is
        touched, so a failure leaves the running configuration as it was.
        """
        old = self.config
        screener = Screener(new.qc) if new.qc != old.qc else None
        credentials = self._credentials(new) if new.sync != old.sync and new.sync.enabled else None
        verifier = load_receipt_verifier(new, self.config_file) if credentials is not None else None
        changes: list[str] = []
        self.config = new
        old_devices = {d.name: d for d in old.devices}
        new_devices = {d.name: d for d in new.devices}
        triggers_changed = any(
            (old.capture.get(n) or CaptureSettings(policy="every")).triggers
            != (new.capture.get(n) or CaptureSettings(policy="every")).triggers
            for n in set(old.capture) | set(new.capture)
        )
        if triggers_changed:
            self.triggers = TriggerBus(record=self._record_trigger)
        for name in sorted(set(old_devices) | set(new_devices)):
            before, after = old_devices.get(name), new_devices.get(name)
            state = self.streams.get(name)
            same = (
                before == after
                and after is not None
                and old.capture_for(name) == new.capture_for(name)
                and not (triggers_changed and new.capture_for(name).policy == "triggered")
            )
            if same and state is not None and state.state not in ("failed", "ended"):
                continue
            if name in self._runs:
                self._stop_stream(name)
            if after is None:
                self.streams.pop(name, None)
                changes.append(f"stream {name} removed")
                continue
            self._start_stream(after)
            changes.append(f"stream {name} {'added' if before is None else 'restarted'}")
        if screener is not None:
            self.screener = screener
            changes.append("qc settings")
        if new.sync != old.sync:
            if self.publisher is not None:
                self.publisher.stop(10.0)
                self.publisher = None
                self.heartbeats.forget("sync")
            if new.sync.enabled and credentials is not None:
                self.publisher = self._new_publisher(new, credentials, verifier)
                self.publisher.start()
            if self.guard is not None:
                self.guard.evict_confirmed = new.sync.receipt_public_key is not None
            changes.append("sync settings")
        if new.storage != old.storage and self.guard is not None:
            self.guard.update(new.storage)
            changes.append("storage watermarks")
        if new.daemon != old.daemon:
            changes.append("daemon settings")
        return changes

    # ------------------------------------------------------------------ capture

    def _start_stream(self, device: DeviceSettings) -> None:
        run = StreamRunner(
            device,
            self.config.capture_for(device.name),
            open_catalog=self.catalog,
            heartbeats=self.heartbeats,
            daemon=lambda: self.config.daemon,
            make_recorder=self.make_recorder,
            release_recorder=self._release_recorder,
            previous=self.streams.get(device.name),
        )
        self.streams[device.name] = run.state
        self._runs[device.name] = run
        run.start()

    def needs_background_session(self) -> bool:
        """Whether ``start`` opens the continuous session that captures made outside any other
        session belong to (an extension point: a booth whose devices only record takes has none)."""
        return True

    def _stop_stream(self, name: str, timeout: float = 10.0) -> None:
        self._runs.pop(name).stop(timeout)

    def make_recorder(
        self, name: str, modality: str, policy: CaptureSettings, settings: dict[str, Any]
    ) -> StreamRecorder:
        """Build the recorder of stream ``name`` each time its device opens (an extension point).

        Called on the stream's capture thread with the settings actually in force. A subclass may
        override it to add to what every sample goes through (the booth taps audio blocks for its
        level meter): call ``super().make_recorder`` and return that recorder, wrapped or as is, so
        that writing, sessions, takes and triggers keep working. It must not block: the device is
        open and delivering while it runs.
        """
        recorder = self.recording.recorder(name, modality, policy, settings)
        if policy.policy == "triggered":  # the rules may have changed with a reload (a new bus)
            for rule in policy.triggers:
                self.triggers.add_rule(rule, name)
        return recorder

    def _release_recorder(self, name: str, _policy: CaptureSettings) -> None:
        self.recording.release(name)

    def _record_drops(self) -> None:
        drops = self.writer.take_drops()
        if drops:
            with self.catalog() as cat:
                for stream, n in drops.items():
                    if stream in self.streams:
                        totals = self.streams[stream].totals
                        totals["writer_queue"] = totals.get("writer_queue", 0) + n
                    cat.add_event("drop", f"{stream}: {n} captures dropped, writer queue full", stream=stream, count=n)

    def _record_trigger(self, trig: Trigger) -> None:
        """The ``trigger`` event, with its time (the same row as a booth or capture process writes)."""
        self.recording.record_trigger(trig)

    def _media_allowed(self, stream: str, kind: str, t_mono_ns: int, seq: int) -> bool:
        guard = self.guard
        return True if guard is None else guard.media_allowed(stream, kind, t_mono_ns, seq)

    def _writer_progress(self) -> float | None:
        """The writer is progressing while it is idle or finishes captures."""
        done = self.writer.written + self.writer.errors
        last_done, last_t = self._writer_seen
        now = time.monotonic()
        if done != last_done or self.writer.pending() == 0:
            self._writer_seen = (done, now)
            return now
        return last_t

    # ------------------------------------------------------------------ background loops

    def _add_clock_sample(self, cat: Catalog, sample: Any) -> None:
        Recording.record_clock(cat, sample)  # with chrony/PTP health, and synced

    def _housekeeping_loop(self) -> None:
        next_numbers = 0.0
        with self.catalog() as cat:
            while not self._stop_bg.wait(1.0):
                self.heartbeats.beat("housekeeping", busy_for=10.0)  # a clock probe may take seconds
                sample = self.clock.tick()
                if sample is not None:
                    self._add_clock_sample(cat, sample)
                self._record_drops()
                self.recording.housekeeping(cat)
                if time.monotonic() >= next_numbers:
                    next_numbers = time.monotonic() + min(STATS_PERIOD_S, self.config.daemon.status_interval_s)
                    self._numbers = catalog_numbers(cat.conn, with_qc=False)
        self.heartbeats.forget("housekeeping")

    def _retention_loop(self) -> None:
        while not self._stop_bg.is_set():
            self.heartbeats.beat("retention", busy_for=60.0)  # an eviction pass deletes many files
            if self.guard is not None:
                try:
                    self.guard.check()
                except Exception:  # the disk check must keep running whatever one pass hit
                    log.exception("disk check failed")
            self._stop_bg.wait(self.config.storage.check_interval_s)
        self.heartbeats.forget("retention")

    # ------------------------------------------------------------------ QC

    def _qc_loop(self) -> None:
        """Screen every capture that has no verdict yet; resumes after a restart from the catalog.

        When none waits, takes screened before they got per-microphone verdicts are caught up.
        """
        idle_at: tuple[int, float] | None = None  # data_version and time of the last look that found nothing
        with self.catalog() as cat:
            while not self._stop_bg.is_set():
                self.heartbeats.beat("qc", busy_for=QC_BUSY_S)
                version = cat.data_version()
                if idle_at is not None and idle_at[0] == version and time.monotonic() - idle_at[1] < QC_RELOOK_S:
                    self._stop_bg.wait(0.5)  # nothing committed since: an idle agent runs no query
                    continue
                idle_at = None
                qc = self.config.qc
                rows = cat.unscreened(16)
                # an idle agent runs no extra query: nothing waits when the oldest 16 are none
                backlog = self.qc.measure_backlog(cat if rows else None, qc.max_backlog_s, qc.when_behind)
                if rows and backlog.behind and qc.when_behind == "sample":
                    k = qc.sample_one_in
                    skipped = [r for i, r in enumerate(rows) if i % k]
                    waiting = f"{backlog.captures}{'+' if backlog.capped else ''}"
                    why = (
                        f"{waiting} waiting, oldest {backlog.oldest_age_s:.0f} s > [qc] max_backlog_s"
                        f" {qc.max_backlog_s:g} s; screening 1 in {k}"
                    )
                    self.qc.mark_unscreened(cat, skipped, why)
                    rows = rows[::k]
                if not rows:
                    try:
                        caught_up = screen_channels_pending(cat, self.data_dir, self.screener, self.profile_of, 1)
                    except Exception:  # a catalog hiccup must not end QC
                        log.exception("per-microphone QC catch-up failed")
                        caught_up = 0
                    if not caught_up:
                        idle_at = (version, time.monotonic())
                        self._stop_bg.wait(0.5)  # a new capture waits at most half a second for QC
                    continue
                for row in rows:
                    if self._stop_bg.is_set():
                        break
                    self.heartbeats.beat("qc", busy_for=QC_BUSY_S)
                    result = self.qc.screen(cat, row)
                    if result is not None:
                        self._analyzer_triggers(cat, row["record_id"], row["stream"], result)
                    self.qc_done += 1
        self.heartbeats.forget("qc")

    def profile_of(self, stream: str) -> str | None:
        """The QC profile of a stream's captures (none for a stream no longer configured)."""
        known = {d.name for d in self.config.devices}
        return self.config.capture_for(stream).qc_profile if stream in known else None

    def _analyzer_triggers(self, cat: Catalog, record_id: str, stream: str, result: Screening) -> None:
        """Analyzer trigger rules, dated at the moment the screened capture's finding happened."""
        if not self.triggers.watches("analyzer", stream):
            return
        found = cat.capture(record_id)
        if found is None:
            return
        t_event = analyzer_event_ns(int(found["t_start_mono_ns"]), [a.to_dict() for a in result.annotations])
        self.recording.on_verdict(stream, result.metrics, t_event, detail={"capture_id": record_id})

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """The numbers behind ``fieldcap status``, ``STATUS=`` and the metrics (cheap: no full scans)."""
        guard = self.guard
        disk = guard.stats() if guard is not None else {}
        refused = disk.get("refused", {})
        numbers = dict(self._numbers)
        pub = self.publisher.stats if self.publisher else None
        health = self.clock.health()
        loops = {
            a.name: {"age_s": round(a.age_s, 3), "stalled": a.stalled(self.heartbeat_limit_s)}
            for a in self.heartbeats.ages()
        }
        return {
            "device_id": self.config.agent.device_id,
            # list(...) copies first: a reload or the QC thread may add entries while a scrape reads
            "streams": {n: s.as_dict(refused.get(n, 0)) for n, s in list(self.streams.items())},
            "qc": {p: dict(c) for p, c in list(self.qc.counts.items())},
            "qc_backlog": self.qc.backlog.as_dict(),
            "outbox": numbers.get("outbox", {}),
            "last_receipt_utc": numbers.get("last_receipt_utc"),
            "last_receipt_age_s": age_seconds(numbers.get("last_receipt_utc")),
            "recent_alerts": numbers.get("recent_alerts", []),
            "broker_connected": None if pub is None else bool(pub.connected),
            "forged_receipts": None if pub is None else pub.forged_receipts,
            "disk": disk,
            "clock": {
                "synced": health.synced,
                "maxerror_us": health.maxerror_us,
                "esterror_us": health.esterror_us,
                "source": health.source,
            },
            "loops": loops,
            "writer": {"pending": self.writer.pending(), "written": self.writer.written, "errors": self.writer.errors},
        }
