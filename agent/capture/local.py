"""Capture without the rest of the daemon: devices → recorders → writer, with sessions and time.

The daemon adds QC, sync, retention and supervision around the same pieces. A booth process, the
recording benchmark and the alignment tests need only this part, and need it to be the production
path (the same ``Recording``, ``StreamRecorder`` and ``Writer``), so it lives here. Every counter a
driver or the writer reports at stop becomes an ``events`` row, as in the daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.capture.clock import Clock
from agent.capture.recorder import StreamRecorder
from agent.capture.recording import ALIGN_EVERY_S, Recording
from agent.catalog.db import Catalog
from agent.catalog.recovery import recover_report
from agent.catalog.writer import Writer
from agent.config import Config
from drivers import DeviceSettings, DriverStats, DriverTimeout, driver_modality, open_driver

log = logging.getLogger("fieldcap.local_capture")

LOSS_COUNTERS = ("drops", "gaps", "duplicates", "bad_frames", "overflows")


@dataclass
class CaptureStream:
    name: str
    modality: str
    samples: int = 0
    native_id: int | None = None  # the capture thread's kernel id (CPU accounting)
    stats: DriverStats | None = None
    error: str | None = None
    recorder: StreamRecorder | None = None
    opened: threading.Event = field(default_factory=threading.Event)


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
        self.streams: dict[str, CaptureStream] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._housekeeping: threading.Thread | None = None
        self._writer_drops: dict[str, int] = {}
        self._device_rows: list[threading.Thread] = []

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
            stream = CaptureStream(device.name, driver_modality(device.type))
            self.streams[device.name] = stream
            t = threading.Thread(target=self._loop, args=(device, stream), name=f"capture-{device.name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._housekeeping = threading.Thread(target=self._keep, name="fieldcap-housekeeping", daemon=True)
        self._housekeeping.start()

    def wait_open(self, timeout: float = 30.0) -> bool:
        """Wait until every device has opened once (True) or the timeout passed."""
        deadline = time.monotonic() + timeout
        return all(s.opened.wait(max(0.0, deadline - time.monotonic())) for s in self.streams.values())

    def _keep(self) -> None:
        with self.catalog() as cat:
            while not self._stop.wait(1.0):
                sample = self.clock.tick()
                if sample is not None:
                    self.recording.record_clock(cat, sample)
                self.recording.housekeeping(cat)

    def _loop(self, device: DeviceSettings, stream: CaptureStream) -> None:
        stream.native_id = threading.get_native_id()
        policy = self.config.capture_for(device.name)
        try:
            driver = open_driver(device)
            driver.open()
        except Exception as exc:  # reported as an event at stop; the other streams go on
            stream.error = f"cannot open: {exc}"
            stream.opened.set()
            return
        settings = driver.settings_in_force()
        # The device row is written beside the capture loop: the device delivers from the moment it
        # opened, and at start-up every stream commits its row at once (up to ~25 ms waiting for the
        # write lock and fsync, measured), enough for a 30 fps camera with a small buffer to skip frames.
        row = threading.Thread(
            target=self._record_device, args=(device, stream.modality, settings), name=f"device-row-{device.name}"
        )
        row.start()
        self._device_rows.append(row)
        recorder = stream.recorder = self.recording.recorder(device.name, stream.modality, policy, settings)
        stream.opened.set()
        try:
            while not self._stop.is_set():
                try:
                    sample = driver.read(timeout=0.5)
                except DriverTimeout:
                    continue
                stream.samples += 1
                recorder.feed(sample)
        except Exception as exc:  # a failing driver ends its own stream only
            stream.error = str(exc) or type(exc).__name__
            log.error("%s: %s", device.name, stream.error)
        finally:
            recorder.flush()
            self.recording.release(device.name)
            stream.stats = driver.stats
            driver.close()

    def _record_device(self, device: DeviceSettings, modality: str, settings: dict[str, Any]) -> None:
        try:
            with self.catalog() as cat:
                cat.upsert_device(device.name, device.type, modality, settings)
        except Exception:  # alignment reads the streams rows too; capture goes on
            log.exception("%s: could not record the device row", device.name)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the devices, flush windows and segments, write everything queued, end the session."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        if self._housekeeping is not None:
            self._housekeeping.join(timeout)
        for row in self._device_rows:
            row.join(timeout)
        self.writer.stop(timeout)
        self._record_losses()
        self.recording.stop()

    def _record_losses(self) -> None:
        with self.catalog() as cat:
            for name, n in self.writer.take_drops().items():
                self._writer_drops[name] = self._writer_drops.get(name, 0) + n
                cat.add_event("drop", f"{name}: {n} captures dropped, writer queue full", stream=name, count=n)
            for s in self.streams.values():
                if s.error:
                    cat.add_event("driver_error", f"{s.name}: {s.error}", stream=s.name)
                for counter in LOSS_COUNTERS:
                    n = int(getattr(s.stats, counter, 0) or 0) if s.stats else 0
                    if n:
                        cat.add_event(
                            counter.rstrip("s"),
                            f"{s.name}: {n} {counter} reported by the driver",
                            stream=s.name,
                            count=n,
                        )

    def losses(self) -> dict[str, dict[str, int]]:
        """Per stream: what the drivers and the writer lost (all zero on a healthy run)."""
        out: dict[str, dict[str, int]] = {}
        drops = dict(self._writer_drops)
        for k, v in self.writer.dropped.items():
            drops[k] = drops.get(k, 0) + v
        for s in self.streams.values():
            d = {c: int(getattr(s.stats, c, 0) or 0) if s.stats else 0 for c in LOSS_COUNTERS}
            d["writer_drops"] = drops.get(s.name, 0)
            out[s.name] = d
        return out

