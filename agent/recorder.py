"""Capture policies and the media writer.

A ``StreamRecorder`` runs on its device's capture thread and decides what to keep (every sample,
one every N seconds, continuous audio segments, sensor readings in batches); it hands finished
``CaptureJob``s to the ``Writer``, which encodes, writes the file atomically and commits the
catalog row with its outbox row. The queue between them is bounded: when the writer falls behind,
a capture is dropped and that drop is recorded as an event, never lost silently.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from agent.catalog import Catalog, new_record_id
from agent.clock import Clock
from agent.config import CaptureSettings
from agent.media import media_path
from drivers import Sample
from sync.durable import write_atomic
from sync.outbox import BlobRef

log = logging.getLogger("fieldcap.recorder")


@dataclass
class CaptureJob:
    """One capture ready to be written: media to encode (or readings) plus its timing."""

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
    readings: list[tuple[int, int, int, str, float | None]] = field(default_factory=list)


def encode_image(frame: np.ndarray[Any, Any], fmt: str, quality: int) -> bytes:
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {frame.shape} frame as {fmt}")
    return bytes(buf)


def encode_wav(samples: np.ndarray[Any, Any], sample_rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, sample_rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


class StreamRecorder:
    """Applies one stream's capture policy to its samples (runs on the capture thread)."""

    def __init__(
        self,
        stream: str,
        modality: str,
        policy: CaptureSettings,
        settings_in_force: dict[str, Any],
        clock: Clock,
        emit: Callable[[CaptureJob], None],
    ) -> None:
        self.stream = stream
        self.modality = modality
        self.policy = policy
        self.settings = settings_in_force
        self.clock = clock
        self.emit = emit
        self._last_kept_ns: int | None = None
        self._blocks: list[Sample] = []
        self._frames = 0
        self._readings: list[tuple[int, int, int, str, float | None]] = []
        self._batch_start: Sample | None = None
        self._batch_last: Sample | None = None

    def feed(self, sample: Sample) -> None:
        if self.policy.policy == "segment":
            self._feed_audio(sample)
        elif self.policy.policy == "readings":
            self._feed_reading(sample)
        elif self.policy.policy == "every" or self._due(sample.t_mono_ns):
            self._last_kept_ns = sample.t_mono_ns
            self.emit(self._frame_job(sample))

    def _due(self, t_mono_ns: int) -> bool:
        return self._last_kept_ns is None or t_mono_ns - self._last_kept_ns >= self.policy.interval_s * 1e9

    def _frame_job(self, sample: Sample) -> CaptureJob:
        frame = sample.payload
        assert isinstance(frame, np.ndarray)
        meta = {"device_time": sample.device_time, **sample.meta}
        if self.modality == "thermal":
            fmt, media_type = "png", "image/png"
        else:
            fmt = self.policy.image_format
            media_type = "image/jpeg" if fmt == "jpeg" else "image/png"
        quality = self.policy.jpeg_quality
        return CaptureJob(
            stream=self.stream,
            modality=self.modality,
            kind="frame",
            t_start_mono_ns=sample.t_mono_ns,
            t_end_mono_ns=sample.t_mono_ns,
            seq_first=sample.seq,
            seq_last=sample.seq,
            meta=meta,
            media_type=media_type,
            encode=lambda: encode_image(frame, fmt, quality),
        )

    # audio segments ---------------------------------------------------------------

    def _rate(self) -> int:
        return int(self.settings.get("sample_rate", 48000))

    def _feed_audio(self, sample: Sample) -> None:
        block = sample.payload
        assert isinstance(block, np.ndarray)
        self._blocks.append(sample)
        self._frames += block.shape[0]
        target = round(self.policy.segment_s * self._rate())
        while self._frames >= target:
            self._cut(target)

    def _cut(self, frames: int) -> None:
        """Emit exactly ``frames`` frames; the rest of the last block starts the next segment."""
        rate = self._rate()
        first = self._blocks[0]
        data = np.concatenate([b.payload for b in self._blocks if isinstance(b.payload, np.ndarray)], axis=0)
        head, tail = data[:frames], data[frames:]
        last = self._blocks[-1]
        start_index = first.device_time if isinstance(first.device_time, int) else None
        meta = {
            "sample_rate": rate,
            "channels": int(head.shape[1]) if head.ndim == 2 else 1,
            "frames": int(head.shape[0]),
            "sample_index_first": start_index,
        }
        t_end = first.t_mono_ns + int(frames * 1e9 / rate)
        self.emit(
            CaptureJob(
                stream=self.stream,
                modality="audio",
                kind="segment",
                t_start_mono_ns=first.t_mono_ns,
                t_end_mono_ns=t_end,
                seq_first=first.seq,
                seq_last=last.seq,
                meta=meta,
                media_type="audio/wav",
                encode=lambda: encode_wav(head, rate),
            )
        )
        self._blocks = []
        self._frames = 0
        if len(tail):
            index = start_index + frames if start_index is not None else None
            self._blocks.append(Sample(last.stream, last.modality, last.seq, t_end, index, tail, dict(last.meta)))
            self._frames = tail.shape[0]

    # sensor readings --------------------------------------------------------------

    def _feed_reading(self, sample: Sample) -> None:
        values = sample.payload
        assert isinstance(values, dict)
        if self._batch_start is None:
            self._batch_start = sample
        self._batch_last = sample
        utc = self.clock.utc_ns(sample.t_mono_ns)
        for name, value in values.items():
            self._readings.append((sample.seq, sample.t_mono_ns, utc, name, None if value is None else float(value)))
        if sample.t_mono_ns - self._batch_start.t_mono_ns >= self.policy.batch_s * 1e9:
            self._emit_readings()

    def _emit_readings(self) -> None:
        first, last = self._batch_start, self._batch_last
        if first is None or last is None or not self._readings:
            return
        self.emit(
            CaptureJob(
                stream=self.stream,
                modality="sensor",
                kind="readings",
                t_start_mono_ns=first.t_mono_ns,
                t_end_mono_ns=last.t_mono_ns,
                seq_first=first.seq,
                seq_last=last.seq,
                meta={"readings": len(self._readings), "units": self.settings.get("units", {})},
                readings=self._readings,
            )
        )
        self._readings = []
        self._batch_start = self._batch_last = None

    def flush(self) -> None:
        """Emit what is held (a partial audio segment, a partial readings batch) on stop."""
        if self.policy.policy == "segment" and self._frames:
            self._cut(self._frames)
        elif self.policy.policy == "readings":
            self._emit_readings()


class Writer:
    """Encodes, writes and commits captures from a bounded queue (its own thread and catalog)."""

    def __init__(
        self,
        catalog_path: Path,
        device_id: str,
        data_dir: Path,
        clock: Clock,
        *,
        queue_size: int,
        synchronous: str = "full",
    ) -> None:
        self.catalog_path = catalog_path
        self.device_id = device_id
        self.media_root = data_dir / "media"
        self.data_dir = data_dir
        self.clock = clock
        self.synchronous = synchronous
        self.queue: queue.Queue[CaptureJob | None] = queue.Queue(maxsize=queue_size)
        self.dropped: dict[str, int] = {}
        self._drop_lock = threading.Lock()
        self.written = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="fieldcap-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: CaptureJob) -> None:
        """Queue a capture; if the writer is behind, count the drop (recorded as an event)."""
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self._drop_lock:
                self.dropped[job.stream] = self.dropped.get(job.stream, 0) + 1

    def take_drops(self) -> dict[str, int]:
        with self._drop_lock:
            drops, self.dropped = self.dropped, {}
        return drops

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop."""
        self.queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        catalog = Catalog(
            self.catalog_path, self.device_id, synchronous="full" if self.synchronous == "full" else "normal"
        )
        try:
            while True:
                job = self.queue.get()
                if job is None:
                    return
                try:
                    self.write(catalog, job)
                    self.written += 1
                except Exception as exc:  # a bad capture must not stop the writer
                    self.errors += 1
                    log.exception("could not write a %s capture of %s", job.kind, job.stream)
                    catalog.add_event("write_error", f"capture of {job.stream} not written: {exc}", stream=job.stream)
        finally:
            catalog.close()

    def write(self, catalog: Catalog, job: CaptureJob) -> str:
        utc = self.clock.utc_ns(job.t_start_mono_ns)
        meta = dict(job.meta)
        meta["clock"] = self.clock.health().as_dict()
        media: BlobRef | None = None
        rel: str | None = None
        if job.encode is not None and job.media_type is not None:
            data = job.encode()
            path = media_path(self.media_root, job.stream, new_record_id(), job.media_type, utc)
            written = write_atomic(path, data)
            rel = str(path.relative_to(self.data_dir))
            media = BlobRef(written.sha256, written.size, path, job.media_type)
        return catalog.add_capture(
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
            readings=job.readings,
        )
