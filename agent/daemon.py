"""The agent: drivers → recorder → catalog → QC → publisher, each on its own thread.

``fieldcap run`` and ``fieldcap demo`` both use this class, so the demo exercises exactly the code
that runs in the field. A device that fails is reopened with backoff without touching the other
streams; every drop a driver or the writer reports becomes an ``events`` row (itself synced).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from agent.catalog import Catalog
from agent.clock import Clock
from agent.config import Config, resolve_secret, resolve_secret_path
from agent.recorder import StreamRecorder, Writer
from agent.recovery import recover
from drivers import DeviceSettings, DriverError, DriverTimeout, driver_modality, open_driver
from models import ModelError, Screener, Screening
from sync import Credentials, Publisher, tls_context

log = logging.getLogger("fieldcap.agent")

STAT_EVENTS = ("drops", "gaps", "duplicates", "bad_frames", "overflows")
STATS_PERIOD_S = 5.0


@dataclass
class StreamState:
    name: str
    modality: str
    samples: int = 0
    restarts: int = 0
    open: bool = False
    last_error: str | None = None
    reported: dict[str, int] = field(default_factory=dict)


class Agent:
    """Runs one configuration until stopped."""

    def __init__(self, config: Config, *, config_file: str = "<config>") -> None:
        self.config = config
        self.config_file = config_file
        self.data_dir = config.agent.data_dir
        self.catalog_path = self.data_dir / "catalog.sqlite"
        self.clock = Clock()
        self.streams: dict[str, StreamState] = {}
        self._stop_capture = threading.Event()
        self._stop_qc = threading.Event()
        self._threads: list[threading.Thread] = []
        self._qc_thread: threading.Thread | None = None
        self.writer = Writer(
            self.catalog_path,
            config.agent.device_id,
            self.data_dir,
            self.clock,
            queue_size=config.storage.queue_size,
            synchronous=config.storage.synchronous,
        )
        self.publisher: Publisher | None = None
        self.screener = Screener(config.qc)
        self.qc_done = 0

    def catalog(self) -> Catalog:
        return Catalog(self.catalog_path, self.config.agent.device_id, synchronous=self.config.storage.synchronous)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.catalog() as cat:
            recover(cat, self.data_dir)
            sample = self.clock.latest
            cat.add_clock_sample(
                sample.t_mono_ns,
                sample.t_realtime_ns,
                sample.health.synced,
                sample.health.maxerror_us,
                sample.health.esterror_us,
                sample.reason,
            )
        self.writer.start()
        for device in self.config.devices:
            state = StreamState(device.name, driver_modality(device.type))
            self.streams[device.name] = state
            t = threading.Thread(
                target=self._capture_loop, args=(device, state), name=f"capture-{device.name}", daemon=True
            )
            t.start()
            self._threads.append(t)
        self._qc_thread = threading.Thread(target=self._qc_loop, name="fieldcap-qc", daemon=True)
        self._qc_thread.start()
        self._housekeeping = threading.Thread(target=self._housekeeping_loop, name="fieldcap-housekeeping", daemon=True)
        self._housekeeping.start()
        if self.config.sync.enabled:
            self.publisher = Publisher(
                device_id=self.config.agent.device_id,
                settings=self.config.sync,
                credentials=self._credentials(),
                open_store=self.catalog,
            )
            self.publisher.start()

    def _credentials(self) -> Credentials:
        s = self.config.sync
        password = resolve_secret(self.config_file, "sync.password_file", s.password_file) if s.password_file else None
        tls = None
        if s.tls is not None:
            ca = resolve_secret_path(self.config_file, "sync.tls.ca_file", s.tls.ca_file)
            cert = (
                resolve_secret_path(self.config_file, "sync.tls.cert_file", s.tls.cert_file)
                if s.tls.cert_file
                else None
            )
            key = resolve_secret_path(self.config_file, "sync.tls.key_file", s.tls.key_file) if s.tls.key_file else None
            tls = tls_context(str(ca), str(cert) if cert else None, str(key) if key else None)
        username = s.username or (self.config.agent.device_id if password else None)
        return Credentials(username, password, tls)

    def stop_capture(self, timeout: float = 30.0) -> None:
        """Stop the devices, flush open segments, and write everything queued."""
        self._stop_capture.set()
        for t in self._threads:
            t.join(timeout)
        self.writer.stop(timeout)
        self._record_drops()

    def wait_screened(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.catalog() as cat:
            while time.monotonic() < deadline:
                if not cat.unscreened(1):
                    return True
                time.sleep(0.1)
            return not cat.unscreened(1)

    def stop(self, timeout: float = 30.0) -> None:
        if not self._stop_capture.is_set():
            self.stop_capture(timeout)
        self._stop_qc.set()
        if self._qc_thread is not None:
            self._qc_thread.join(timeout)
        if self.publisher is not None:
            self.publisher.stop(timeout)

    # ------------------------------------------------------------------ capture

    def _capture_loop(self, device: DeviceSettings, state: StreamState) -> None:
        policy = self.config.capture_for(device.name)
        attempt = 0
        with self.catalog() as cat:
            while not self._stop_capture.is_set():
                try:
                    driver = open_driver(device)
                    driver.open()
                except Exception as exc:
                    attempt += 1
                    state.last_error = str(exc)
                    cat.add_event("driver_error", f"{device.name}: cannot open: {exc}", stream=device.name)
                    log.error("%s: cannot open: %s", device.name, exc)
                    self._stop_capture.wait(min(60.0, 2.0 ** min(attempt, 6)))
                    continue
                state.open = True
                settings = driver.settings_in_force()
                cat.upsert_device(device.name, device.type, state.modality, settings)
                recorder = StreamRecorder(device.name, state.modality, policy, settings, self.clock, self.writer.submit)
                next_stats = time.monotonic() + STATS_PERIOD_S
                try:
                    while not self._stop_capture.is_set():
                        if time.monotonic() >= next_stats:
                            next_stats += STATS_PERIOD_S
                            self._record_stats(cat, state, driver.stats)
                        try:
                            sample = driver.read(timeout=1.0)
                        except DriverTimeout:
                            continue
                        state.samples += 1
                        recorder.feed(sample)
                        attempt = 0
                except Exception as exc:  # a failing or crashing driver must not take the agent down
                    attempt += 1
                    state.restarts += 1
                    state.last_error = str(exc) or type(exc).__name__
                    kind = "driver_error" if isinstance(exc, DriverError) else "driver_crash"
                    cat.add_event(kind, f"{device.name}: {state.last_error}; restarting", stream=device.name)
                    log.error("%s: %s; restarting", device.name, state.last_error, exc_info=kind == "driver_crash")
                finally:
                    recorder.flush()
                    self._record_stats(cat, state, driver.stats, reset=True)
                    driver.close()
                    state.open = False
                if not self._stop_capture.is_set():
                    self._stop_capture.wait(min(60.0, 2.0 ** min(attempt, 6)))

    def _record_stats(self, cat: Catalog, state: StreamState, stats: Any, *, reset: bool = False) -> None:
        """Turn new driver counter increments into loss-ledger events."""
        for name in STAT_EVENTS:
            value = int(getattr(stats, name, 0) or 0)
            delta = value - state.reported.get(name, 0)
            if delta > 0:
                cat.add_event(
                    name.rstrip("s") if name != "bad_frames" else "bad_frame",
                    f"{state.name}: {delta} {name.replace('_', ' ')} reported by the driver",
                    stream=state.name,
                    count=delta,
                )
            state.reported[name] = value
        if reset:
            state.reported = {}  # a reopened driver starts its counters at zero

    def _record_drops(self) -> None:
        drops = self.writer.take_drops()
        if drops:
            with self.catalog() as cat:
                for stream, n in drops.items():
                    cat.add_event("drop", f"{stream}: {n} captures dropped, writer queue full", stream=stream, count=n)

    def _housekeeping_loop(self) -> None:
        with self.catalog() as cat:
            while not self._stop_qc.wait(1.0):
                sample = self.clock.tick()
                if sample is not None:
                    cat.add_clock_sample(
                        sample.t_mono_ns,
                        sample.t_realtime_ns,
                        sample.health.synced,
                        sample.health.maxerror_us,
                        sample.health.esterror_us,
                        sample.reason,
                    )
                self._record_drops()

    # ------------------------------------------------------------------ QC

    def _qc_loop(self) -> None:
        """Screen every capture that has no verdict yet; resumes after a restart from the catalog."""
        previous: dict[str, np.ndarray[Any, Any]] = {}
        with self.catalog() as cat:
            while not self._stop_qc.is_set():
                rows = cat.unscreened(16)
                if not rows:
                    self._stop_qc.wait(0.2)
                    continue
                for row in rows:
                    self._screen_one(cat, row, previous)
                    self.qc_done += 1

    def _screen_one(self, cat: Catalog, row: Any, previous: dict[str, np.ndarray[Any, Any]]) -> None:
        stream, modality = row["stream"], row["modality"]
        policy = self.config.capture_for(stream) if stream in self.streams else None
        profile = policy.qc_profile if policy else None
        path = self.data_dir / row["path"]
        try:
            result = self._screen(path, modality, profile, json.loads(row["meta_json"]), previous.get(stream))
            if modality == "thermal":
                raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if raw is not None:
                    previous[stream] = raw
        except (ModelError, ValueError, OSError, RuntimeError) as exc:
            cat.add_verdict(
                row["record_id"],
                profile=profile or "none",
                profile_version="-",
                verdict="review",
                reasons=[f"QC could not run: {exc}"],
                metrics={},
                analyzers=[],
                annotations=[],
            )
            log.error("QC of %s failed: %s", path, exc)
            return
        cat.add_verdict(
            row["record_id"],
            profile=result.profile,
            profile_version=result.profile_version,
            verdict=result.verdict,
            reasons=result.reasons,
            metrics=result.metrics,
            analyzers=[a.to_dict() for a in result.analyzers],
            annotations=[a.to_dict() for a in result.annotations],
        )

    def _screen(self, path: Path, modality: str, profile: str | None, meta: dict[str, Any], prev: Any) -> Screening:
        if modality == "audio":
            samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
            return self.screener.audio(samples, int(rate), profile)
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: cannot decode the image")
        if modality == "thermal":
            return self.screener.thermal(img, meta, profile, previous=prev)
        return self.screener.image(img, profile)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        with self.catalog() as cat:
            records, media_bytes = cat.outbox_backlog()
            last_receipt = cat.get_state("last_receipt_utc")
        pub = self.publisher.stats if self.publisher else None
        return {
            "device_id": self.config.agent.device_id,
            "streams": {
                n: {
                    "modality": s.modality,
                    "open": s.open,
                    "samples": s.samples,
                    "restarts": s.restarts,
                    "last_error": s.last_error,
                }
                for n, s in self.streams.items()
            },
            "outbox": {"records": records, "media_bytes": media_bytes},
            "last_receipt_utc": last_receipt,
            "broker_connected": bool(pub and pub.connected),
            "clock": self.clock.health().as_dict(),
        }
