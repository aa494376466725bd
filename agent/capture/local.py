"""Capture without the rest of the daemon: devices → recorders → writer, with sessions and time.

It runs the daemon's own capture threads (``agent.capture.streams.StreamRunner``: supervised, with
restarts and the loss ledger) with the same ``Recording``, ``StreamRecorder`` and ``Writer``; the
daemon (``agent.daemon.Agent``) adds QC, sync, retention, reload and the watchdog around them. The
recording benchmark and the session, alignment and MCAP tests use this part alone. Every counter a
driver or the writer reports becomes an ``events`` row, as in the daemon.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.capture.clock import Clock
from agent.capture.recording import ALIGN_EVERY_S, Recording
from agent.capture.streams import STAT_EVENTS, StreamRunner, StreamState
from agent.catalog.db import Catalog
from agent.catalog.recovery import recover_report
from agent.catalog.writer import Writer
from agent.config import CaptureSettings, Config
from agent.ops.heartbeat import Heartbeats

log = logging.getLogger("fieldcap.capture")

LOSS_COUNTERS = STAT_EVENTS


class LocalCapture:
    """Runs the configured devices through their capture policies until ``stop``."""

    def __init__(
        self,
        config: Config,
        *,
        config_file: str = "<config>",
        clock: Clock | None = None,
        workers: int = 2,
        align_every_s: float = ALIGN_EVERY_S,
        align_lag_s: float | None = None,
    ):
        self.config = config
        self.data_dir = config.agent.data_dir
        self.catalog_path = self.data_dir / "catalog.sqlite"
        self.clock = clock or Clock()
        self.writer = Writer(
            self.catalog_path,
            config.agent.device_id,
            self.data_dir,
            self.clock,
            queue_size=config.storage.queue_size,
            synchronous=config.storage.synchronous,
            workers=workers,
        )
        self.recording = Recording(
            config,
            open_catalog=self.catalog,
            clock=self.clock,
            writer=self.writer,
            config_file=config_file,
            align_every_s=align_every_s,
            align_lag_s=align_lag_s,
        )
        self.sessions = self.recording.sessions
        self.heartbeats = Heartbeats()  # beaten by the capture threads; no watchdog reads them here
        self.streams: dict[str, StreamState] = {}
        self._runs: dict[str, StreamRunner] = {}
        self._stop = threading.Event()
        self._housekeeping: threading.Thread | None = None

    def catalog(self) -> Catalog:
        return Catalog(self.catalog_path, self.config.agent.device_id, synchronous=self.config.storage.synchronous)

    def start(self, *, background_session: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.catalog() as cat:
            recover_report(cat, self.data_dir)
            self.recording.record_clock(cat, self.clock.latest)
        self.writer.start()
        self.recording.start(background_session=background_session)
        for device in self.config.devices:
            run = StreamRunner(
                device,
                self.config.capture_for(device.name),
                open_catalog=self.catalog,
                heartbeats=self.heartbeats,
                daemon=lambda: self.config.daemon,
                make_recorder=self.recording.recorder,
                release_recorder=self._release_recorder,
            )
            self.streams[device.name] = run.state
            self._runs[device.name] = run
            run.start()
        self._housekeeping = threading.Thread(target=self._keep, name="fieldcap-housekeeping", daemon=True)
        self._housekeeping.start()

    def _release_recorder(self, name: str, _policy: CaptureSettings) -> None:
        self.recording.release(name)

    def wait_open(self, timeout: float = 30.0) -> bool:
        """Wait until every device has tried to open once and is open (True), or the timeout passed."""
        deadline = time.monotonic() + timeout
        attempted = all(s.attempted.wait(max(0.0, deadline - time.monotonic())) for s in self.streams.values())
        return attempted and all(s.open for s in self.streams.values())

    def _keep(self) -> None:
        with self.catalog() as cat:
            while not self._stop.wait(1.0):
                sample = self.clock.tick()
                if sample is not None:
                    self.recording.record_clock(cat, sample)
                self._record_drops(cat)
                self.recording.housekeeping(cat)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the devices, flush windows and segments, write everything queued, end the session."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        for run in self._runs.values():
            run.stop_event.set()
        for name, run in self._runs.items():
            if not run.stop(max(0.1, deadline - time.monotonic())):
                log.error("%s: capture thread did not stop in time; its open segment may be lost", name)
        if self._housekeeping is not None:
            self._housekeeping.join(timeout)
        self.writer.stop(max(0.1, deadline - time.monotonic()))
        with self.catalog() as cat:
            self._record_drops(cat)
        self.recording.stop()

    def _record_drops(self, cat: Catalog) -> None:
        for name, n in self.writer.take_drops().items():
            if name in self.streams:
                totals = self.streams[name].totals
                totals["writer_queue"] = totals.get("writer_queue", 0) + n
            cat.add_event("drop", f"{name}: {n} captures dropped, writer queue full", stream=name, count=n)

    def losses(self) -> dict[str, dict[str, int]]:
        """Per stream: what the drivers and the writer lost (all zero on a healthy run)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.streams.values():
            d = {c: s.totals.get(c, 0) for c in LOSS_COUNTERS}
            d["writer_drops"] = s.totals.get("writer_queue", 0) + self.writer.dropped.get(s.name, 0)
            out[s.name] = d
        return out


__all__ = ["LOSS_COUNTERS", "LocalCapture"]
