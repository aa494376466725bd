"""The writer: makes captures durable, in order, without blocking capture.

``CaptureJob``s come from the stream recorders through a bounded queue. A few worker threads
(encoding releases the GIL; fsyncs overlap) encode, write the file atomically and commit the
catalog row with its outbox row. When the writer falls behind, a frame is dropped and the drop is
recorded as an event; the job that finishes a streamed audio file is never dropped. The disk
guard can refuse new media (``media_allowed``); the refusal is an event, not a write error.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from agent.capture.clock import Clock
from agent.catalog.db import Catalog, new_record_id
from agent.catalog.media import media_path
from agent.catalog.wav_part import WavPart
from agent.errors import CatalogError
from sync.files import write_atomic
from sync.outbox import BlobRef

log = logging.getLogger("fieldcap.recorder")

# The disk guard's hook (agent.ops.retention.DiskGuard.media_allowed): (stream, kind, t_mono_ns, seq) -> may
# media be written now? A refusal is recorded by the hook itself, as an event.
MediaAllowed = Callable[[str, str, int, int], bool]


class MediaRefused(Exception):
    """New media is refused while the data disk holds only unsynced data (recorded by the hook)."""


class FrameDropped(Exception):
    """A frame that must not be written as it is (e.g. its face redaction failed): dropped and
    recorded as an ``event`` row of this kind, never written."""

    event = "frame_dropped"


Reading = tuple[int, int, int, str, float | None]
CLOCK_POINT_EVERY_NS = 250_000_000  # (sample index, driver stamp) pairs kept per audio file
ARRIVAL_WINDOW_NS = 1_000_000_000  # one arrival point (the earliest block) per second of audio
LATENCY_KEPT = 200_000


class CaptureContext:
    """What a window's captures are tagged with (a take or a trigger), and their completion.

    ``wait`` returns once every stream that joined has closed its window and every capture it
    submitted is committed (or failed); ``records`` then maps stream -> capture record ids.
    """

    def __init__(
        self,
        kind: Literal["take", "trigger"],
        context_id: str,
        *,
        session_id: str | None = None,
        item_id: str | None = None,
        take_no: int | None = None,
        supersedes: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.context_id = context_id
        self.session_id = session_id
        self.item_id = item_id
        self.take_no = take_no
        self.supersedes = supersedes or {}
        self.meta = meta or {}
        self.records: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._open: set[str] = set()
        self._pending = 0

    def stream_opened(self, stream: str) -> None:
        with self._cond:
            self._open.add(stream)

    def stream_closed(self, stream: str, error: str | None = None) -> None:
        with self._cond:
            self._open.discard(stream)
            if error:
                self.errors.append(f"{stream}: {error}")
            self._cond.notify_all()

    def job_submitted(self) -> None:
        with self._cond:
            self._pending += 1

    def job_done(self, stream: str, record_id: str | None, error: str | None = None) -> None:
        with self._cond:
            self._pending -= 1
            if record_id is not None:
                self.records.setdefault(stream, []).append(record_id)
            if error:
                self.errors.append(f"{stream}: {error}")
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._open and self._pending <= 0, timeout)


@dataclass
class CaptureJob:
    """One capture ready to be made durable: media to encode or a streamed part, plus its timing."""

    stream: str
    modality: str
    kind: str
    t_start_mono_ns: int
    t_end_mono_ns: int
    seq_first: int
    seq_last: int
    meta: dict[str, Any]
    media_type: str | None = None
    encode: Callable[[], bytes] | None = None
    readings: list[Reading] = field(default_factory=list)
    part: WavPart | None = None
    session_id: str | None = None
    item_id: str | None = None
    take: int | None = None
    supersedes: str | None = None
    context: CaptureContext | None = None
    settings: dict[str, Any] | None = None
    t_captured_ns: int = 0  # when the unit's last sample was captured (for capture→commit latency)


def encode_image(frame: np.ndarray[Any, Any], fmt: str, quality: int) -> bytes:
    """JPEG (quality set) or PNG; a uint16 frame (raw thermal) stays 16-bit in PNG."""
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {frame.shape} frame as {fmt}")
    return bytes(buf)


def scalar_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool) or v is None}


class Writer:
    """Encodes, writes and commits captures from a bounded queue on ``workers`` threads.

    Each worker has its own catalog connection (SQLite serialises the commits). ``latency_ns``
    keeps capture→commit latencies and ``cpu_ns`` the writer CPU time, per stream.
    """

    def __init__(
        self,
        catalog_path: Path,
        device_id: str,
        data_dir: Path,
        clock: Clock,
        *,
        queue_size: int,
        synchronous: str = "full",
        workers: int = 2,
        media_allowed: MediaAllowed | None = None,
    ) -> None:
        self.catalog_path = catalog_path
        self.device_id = device_id
        self.media_root = data_dir / "media"
        self.data_dir = data_dir
        self.clock = clock
        self.synchronous = synchronous
        self.queue_size = queue_size
        self.media_allowed = media_allowed
        self._cond = threading.Condition()
        self._jobs: deque[CaptureJob] = deque()
        self._must: deque[CaptureJob] = deque()  # finishing streamed files: never dropped
        self._busy = 0
        self._stopping = False
        self.dropped: dict[str, int] = {}
        self.dropped_on_purpose: dict[str, int] = {}  # FrameDropped, each also an events row
        self.written = 0
        self.errors = 0
        self.latency_ns: dict[str, deque[int]] = {}
        self.cpu_ns: dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self._streams: dict[tuple[str, str, str], str] = {}
        self._streams_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"fieldcap-writer-{i}", daemon=True) for i in range(max(1, workers))
        ]

    def start(self) -> None:
        self._open_catalog().close()  # migrate once, before the workers open theirs side by side
        for t in self._threads:
            t.start()

    def _open_catalog(self) -> Catalog:
        return Catalog(
            self.catalog_path, self.device_id, synchronous="full" if self.synchronous == "full" else "normal"
        )

    def submit(self, job: CaptureJob) -> bool:
        """Queue a capture; if the writer is behind, count the drop (recorded as an event)."""
        with self._cond:
            if job.part is not None:
                self._must.append(job)
            elif len(self._jobs) >= self.queue_size:
                self.dropped[job.stream] = self.dropped.get(job.stream, 0) + 1
                if job.context is not None:
                    job.context.job_done(job.stream, None, "dropped: writer queue full")
                return False
            else:
                self._jobs.append(job)
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return int(len(self._jobs) + len(self._must) + self._busy)

    def take_drops(self) -> dict[str, int]:
        with self._cond:
            drops, self.dropped = self.dropped, {}
        return drops

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive() or t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> CaptureJob | None:
        with self._cond:
            while not self._must and not self._jobs:
                if self._stopping:
                    return None
                self._cond.wait(0.5)
            self._busy += 1
            return self._must.popleft() if self._must else self._jobs.popleft()

    def _run(self) -> None:
        while True:  # a worker must not die because the catalog was briefly unavailable
            try:
                catalog = self._open_catalog()
                break
            except CatalogError as exc:
                log.error("writer cannot open the catalog (%s); retrying", exc)
                time.sleep(1.0)
        try:
            while (job := self._next()) is not None:
                cpu0 = time.thread_time_ns()
                try:
                    record_id = self.write(catalog, job)
                except Exception as exc:  # a bad capture must not stop the writer
                    self._failed(catalog, job, exc)
                else:
                    self._done(job, record_id, time.thread_time_ns() - cpu0)
                finally:
                    with self._cond:
                        self._busy -= 1
        finally:
            catalog.close()

    def _done(self, job: CaptureJob, record_id: str, cpu: int) -> None:
        latency = time.monotonic_ns() - job.t_captured_ns if job.t_captured_ns else None
        with self._stats_lock:
            self.written += 1
            self.cpu_ns[job.stream] = self.cpu_ns.get(job.stream, 0) + cpu
            if latency is not None:
                self.latency_ns.setdefault(job.stream, deque(maxlen=LATENCY_KEPT)).append(latency)
        if job.context is not None:
            job.context.job_done(job.stream, record_id)

    def allows_media(self, stream: str, kind: str, t_mono_ns: int, seq: int) -> bool:
        """Ask the disk guard before starting a media file (a refusal is recorded by the guard)."""
        return self.media_allowed is None or self.media_allowed(stream, kind, t_mono_ns, seq)

    def _failed(self, catalog: Catalog, job: CaptureJob, exc: Exception) -> None:
        if isinstance(exc, MediaRefused):  # already an event (capture_refused); not a write error
            if job.context is not None:
                job.context.job_done(job.stream, None, str(exc))
            return
        if isinstance(exc, FrameDropped):  # by design (e.g. redaction failed): a drop, not a write error
            with self._stats_lock:
                self.dropped_on_purpose[job.stream] = self.dropped_on_purpose.get(job.stream, 0) + 1
            log.warning("%s: frame dropped: %s", job.stream, exc)
            try:
                catalog.add_event(
                    exc.event, f"{job.stream}: frame dropped: {exc}", stream=job.stream, detail={"error": str(exc)}
                )
            except Exception:
                log.exception("could not record the dropped frame")
            if job.context is not None:
                job.context.job_done(job.stream, None, str(exc))
            return
        with self._stats_lock:
            self.errors += 1
        log.error("could not write a %s capture of %s: %s", job.kind, job.stream, exc, exc_info=True)
        detail: dict[str, Any] = {"kind": job.kind, "error": str(exc)}
        if job.part is not None:
            job.part.abandon()  # left for start-up recovery to salvage
            detail["part"] = str(job.part.part)
        try:
            catalog.add_event(
                "write_error", f"capture of {job.stream} not written: {exc}", stream=job.stream, detail=detail
            )
        except Exception:
            log.exception("could not even record the write error")
        if job.context is not None:
            job.context.job_done(job.stream, None, str(exc))

    def _stream_id(self, catalog: Catalog, job: CaptureJob) -> str | None:
        """The ``streams`` row (device, session, settings in force) a capture belongs to."""
        if job.session_id is None or job.settings is None:
            return None
        settings_json = json.dumps(job.settings, sort_keys=True, default=str)
        key = (job.session_id, job.stream, settings_json)
        with self._streams_lock:
            sid = self._streams.get(key)
            if sid is None:
                sid = catalog.sessions.find_or_add_stream(job.stream, job.session_id, job.modality, job.settings)
                self._streams[key] = sid
            return sid

    def write(self, catalog: Catalog, job: CaptureJob) -> str:
        """Make one capture durable: file on disk under its final name, then row + outbox row.

        Raises ``MediaRefused`` when the disk guard refuses new media (the guard records it).
        Streamed audio was admitted when its file was opened, so it is always finished.
        """
        utc = self.clock.utc_ns(job.t_start_mono_ns)
        media: BlobRef | None = None
        rel: str | None = None
        if job.part is not None:
            written = job.part.finish()
        elif job.encode is not None and job.media_type is not None:
            if not self.allows_media(job.stream, job.kind, job.t_start_mono_ns, job.seq_first):
                raise MediaRefused(f"{job.stream}: media refused: the data disk is full of unsynced data")
            data = job.encode()  # may add to job.meta (face redaction): the meta is read after it
            written = write_atomic(media_path(self.media_root, job.stream, new_record_id(), job.media_type, utc), data)
        else:
            written = None
        meta = dict(job.meta)
        meta["clock"] = self.clock.entry_at(job.t_start_mono_ns).health.as_dict()
        if written is not None and job.media_type is not None:
            rel = str(written.path.relative_to(self.data_dir))
            media = BlobRef(written.sha256, written.size, written.path, job.media_type)
        record_id = catalog.add_capture(
            stream=job.stream,
            kind=job.kind,
            modality=job.modality,
            t_start_mono_ns=job.t_start_mono_ns,
            t_end_mono_ns=job.t_end_mono_ns,
            t_start_utc_ns=utc,
            seq_first=job.seq_first,
            seq_last=job.seq_last,
            media=media,
            media_rel=rel,
            meta=meta,
            session_id=job.session_id,
            stream_id=self._stream_id(catalog, job),
            item_id=job.item_id,
            take=job.take,
            supersedes=job.supersedes,
            readings=job.readings,
        )
        if job.part is not None:
            job.part.cleanup()
        return record_id


def latency_percentiles(values: Iterable[int]) -> dict[str, float]:
    """p50 / p99 / max of latencies in ms (for the benchmark and status)."""
    arr = np.fromiter(values, dtype=np.int64)
    if arr.size == 0:
        return {"n": 0}
    return {
        "n": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)) / 1e6, 2),
        "p99_ms": round(float(np.percentile(arr, 99)) / 1e6, 2),
        "max_ms": round(float(arr.max()) / 1e6, 2),
    }
