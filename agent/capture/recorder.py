"""Capture policies: what to keep from each stream.

A ``StreamRecorder`` runs on its device's capture thread and applies the stream's policy, one class each
(``agent.capture.policies``):

- ``every`` / ``interval``: a frame (JPEG or PNG; thermal as 16-bit PNG) per sample / per interval;
- ``segment``: continuous audio cut into WAV files of exactly ``segment_s`` (cut early at a
  discontinuity, where the device's sample counter jumps, so a file's samples are contiguous);
- ``readings``: sensor values into the catalog in batches, the live environment table and the
  sensor trigger rules;
- ``triggered``: a ring buffer of ``pre_s`` seconds (plus the longest analyzer rule's ``delay_s``,
  since an analyzer result arrives after the moment it is about); a trigger opens a window
  ``[t - pre_s, t + post_s]`` (a trigger inside an open window extends it);
- ``take``: a window opened and closed through the session API (booth takes), padded by
  ``pre_s`` / ``post_s``.

A window is one capture per stream: an audio window one WAV (kind ``clip`` or ``take``); a camera
window its frames, each committed as its own ``frame`` capture (QC, alignment and export work per
frame), plus one media-less capture of kind ``clip`` / ``take`` written once the last frame is
committed, which sums the set up (count, frame-counter range, frames missing) and is what the take
lists for the stream and what a retake supersedes — as the WAV is for a microphone.

Audio is streamed into a ``WavPart`` (see ``agent.catalog.wav_part``) as blocks arrive, so a long segment
never sits in memory and a crash loses at most the blocks not yet written. Frames are encoded by
the writer (``agent.catalog.writer``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.capture.clock import Clock
from agent.capture.frame_set import FrameSet
from agent.capture.pairing import FrameClock, PairRequest
from agent.capture.policies import policy_for
from agent.catalog.db import new_record_id
from agent.catalog.media import media_path
from agent.catalog.wav_part import WavPart
from agent.catalog.writer import (
    ARRIVAL_WINDOW_NS,
    CLOCK_POINT_EVERY_NS,
    CaptureContext,
    CaptureJob,
    Writer,
    encode_image,
    scalar_meta,
)
from agent.config import CaptureSettings
from drivers import Sample

if TYPE_CHECKING:
    from agent.capture.environment import LatestReadings
    from agent.capture.triggers import Trigger, TriggerBus

log = logging.getLogger("fieldcap.recorder")

# A face redactor (agent.capture.redaction.FaceRedactor): (frame, meta) -> the frame to encode.
Redactor = Callable[[np.ndarray[Any, Any], dict[str, Any]], np.ndarray[Any, Any]]
RING_MARGIN_MAX_NS = 500_000_000  # the ring keeps up to two sample gaps (at most this) beyond pre_s
RING_WARN_BYTES = 512 << 20  # a ring holding more raw frames than this is worth a warning


class _AudioFile:
    """An audio file being filled from blocks: its part, first/last sample, clock points."""

    def __init__(self, part: WavPart, first: Sample, index_first: int | None, t_start: int, ctx: CaptureContext | None):
        self.part = part
        self.first = first
        self.last = first
        self.index_first = index_first
        self.next_index = index_first
        self.t_start = t_start
        self.t_end = t_start
        self.context = ctx
        self.points: list[tuple[int, int]] = []
        # (block end index, arrival at the recorder): per ARRIVAL_WINDOW_NS window the earliest
        # relative to the nominal rate — the lower envelope a robust drift fit needs (see alignment).
        self.arrivals: list[tuple[int, int]] = []
        self._best: tuple[float, int, int] | None = None
        self._window_start = 0
        self.discontinuities: list[dict[str, int]] = []
        self._last_point = -(1 << 62)


@dataclass
class _Window:
    start_ns: int
    end_ns: int | None
    context: CaptureContext
    audio: _AudioFile | None = None
    frames: FrameSet | None = None
    notes: dict[str, Any] | None = None


class StreamRecorder:
    """Applies one stream's capture policy to its samples (``feed`` runs on the capture thread).

    ``begin_take`` / ``end_take`` / ``trigger`` may be called from any thread.
    """

    def __init__(
        self,
        stream: str,
        modality: str,
        policy: CaptureSettings,
        settings_in_force: dict[str, Any],
        clock: Clock,
        writer: Writer,
        *,
        session_of: Callable[[], str | None] | None = None,
        live: LatestReadings | None = None,
        triggers: TriggerBus | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.stream = stream
        self.redactor = redactor
        self.modality = modality
        self.policy = policy
        self.settings = settings_in_force
        self.clock = clock
        self.writer = writer
        self.session_of = session_of or (lambda: None)
        self.live = live
        self.triggers = triggers
        self._lock = threading.RLock()
        # Pairing (agent.capture.pairing): a follower places its frames by their counter; a leader
        # too, once ``lead`` names its followers.
        self.frame_clock: FrameClock | None = FrameClock(settings_in_force.get("fps")) if policy.pair_with else None
        self.followers: Callable[[], list[StreamRecorder]] | None = None
        self.pair_hold_s = 0.0  # how far back a leader may ask for a frame (its pre-roll), beyond a few periods
        self.strategy = policy_for(self)
        self._ring: deque[Sample] = deque()
        # The ring keeps pre_s, and longer where an analyzer result may come late (see triggers).
        self._keep_ns = round(self.strategy.hold_s() * 1e9)
        self._evicted_end_ns: int | None = None  # end of the newest sample the ring let go
        self._gap_ns = 0  # between the last two samples: a window opened "now" starts before the newest
        self._windows: list[_Window] = []
        self._newest_ns = 0
        self._arrival_ns = 0

    # ------------------------------------------------------------------ dispatch

    def feed(self, sample: Sample) -> None:
        self._arrival_ns = time.monotonic_ns()  # before the lock: when the block reached us
        with self._lock:
            self._newest_ns = max(self._newest_ns, sample.t_mono_ns)
            if self.frame_clock is not None:
                self.frame_clock.note(sample)
            self.strategy.feed(sample)

    def submit(self, job: CaptureJob) -> None:
        if job.context is not None:
            job.context.job_submitted()
        job.settings = self.settings
        self.writer.submit(job)

    # ------------------------------------------------------------------ pairing

    def lead(self, followers: Callable[[], list[StreamRecorder]]) -> None:
        """Let this camera lead: each frame it keeps asks the running ``followers()`` (those paired
        with it now, so a reload that pairs a camera needs no restart of this one) for a partner."""
        with self._lock:
            self.followers = followers
            if self.frame_clock is None:
                self.frame_clock = FrameClock(self.settings.get("fps"))

    def pair_request(self, req: PairRequest) -> None:
        """A leader kept a frame (called on the leader's thread): keep this stream's nearest one."""
        request = getattr(self.strategy, "request", None)
        if request is not None:
            with self._lock:
                request(req)

    def frame_time(self, sample: Sample) -> tuple[int, str]:
        """A frame's placed time and how it was placed (see ``FrameClock``)."""
        if self.frame_clock is None:
            return sample.t_mono_ns, "stamps"
        return self.frame_clock.time_of(sample)

    def _lead_pair(self, sample: Sample) -> dict[str, Any] | None:
        """Ask the running followers for a partner of a frame being kept; the leader frame's ``pair``
        meta (None when no follower is running)."""
        followers = self.followers() if self.followers is not None else []
        if not followers:
            return None
        t, placed = self.frame_time(sample)
        req = PairRequest(new_record_id(), self.stream, sample.seq, t, placed)
        for follower in followers:
            follower.pair_request(req)
        return {"id": req.pair_id, "t_mono_ns": t, "time": placed}

    # ------------------------------------------------------------------ frames

    def frame_job(self, sample: Sample, ctx: CaptureContext | None, pair: dict[str, Any] | None = None) -> CaptureJob:
        frame = sample.payload
        assert isinstance(frame, np.ndarray)
        meta: dict[str, Any] = {"device_time": sample.device_time, **sample.meta}
        if pair is None and self.followers is not None:
            pair = self._lead_pair(sample)
        if pair is not None:
            meta["pair"] = pair
        if self.modality == "thermal":
            fmt, media_type = "png", "image/png"
        else:
            fmt = self.policy.image_format
            media_type = "image/jpeg" if fmt == "jpeg" else "image/png"
        quality = self.policy.jpeg_quality
        if ctx is not None:
            meta[ctx.kind] = ctx.context_id
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
            encode=self._encoder(frame, fmt, quality, meta),
            session_id=ctx.session_id if ctx and ctx.session_id else self.session_of(),
            item_id=ctx.item_id if ctx else None,
            take=ctx.take_no if ctx else None,
            context=ctx,
            t_captured_ns=sample.t_mono_ns,
        )

    def _encoder(
        self, frame: np.ndarray[Any, Any], fmt: str, quality: int, meta: dict[str, Any]
    ) -> Callable[[], bytes]:
        """Encoding runs on a writer thread; with redaction on, faces are blurred first (into ``meta``)."""
        redactor = self.redactor
        if redactor is None:
            return lambda: encode_image(frame, fmt, quality)
        return lambda: encode_image(redactor(frame, meta), fmt, quality)

    # ------------------------------------------------------------------ audio files

    def rate(self) -> int:
        return int(self.settings.get("sample_rate", 48000))

    def open_audio(
        self, sample: Sample, offset: int, kind: str, expected: int, ctx: CaptureContext | None
    ) -> _AudioFile:
        rate = self.rate()
        block = sample.payload
        assert isinstance(block, np.ndarray)
        channels = int(block.shape[1]) if block.ndim == 2 else 1
        t_start = sample.t_mono_ns + round(offset * 1e9 / rate)
        index = sample.device_time + offset if isinstance(sample.device_time, int) else None
        utc = self.clock.utc_ns(t_start)
        session = ctx.session_id if ctx and ctx.session_id else self.session_of()
        sidecar = {
            "stream": self.stream,
            "modality": "audio",
            "kind": kind,
            "t_start_mono_ns": t_start,
            "t_start_utc_ns": utc,
            "seq_first": sample.seq,
            "sample_index_first": index,
            "session_id": session,
            "item_id": ctx.item_id if ctx else None,
            "take": ctx.take_no if ctx else None,
            "supersedes": ctx.supersedes.get(self.stream) if ctx else None,
            "context": {"kind": ctx.kind, "id": ctx.context_id} if ctx else None,
            "clock": self.clock.entry_at(t_start).health.as_dict(),
        }
        path = media_path(self.writer.media_root, self.stream, new_record_id(), "audio/wav", utc)
        part = WavPart(path, rate, channels, expected, sidecar)
        audio = _AudioFile(part, sample, index, t_start, ctx)
        audio.points.append((index if index is not None else 0, t_start))
        audio._last_point = t_start  # the first block's own point would repeat this one
        return audio

    def append_audio(self, audio: _AudioFile, sample: Sample, lo: int, hi: int) -> None:
        block = sample.payload
        assert isinstance(block, np.ndarray)
        index = sample.device_time + lo if isinstance(sample.device_time, int) else None
        if audio.next_index is not None and index is not None and index != audio.next_index:
            audio.discontinuities.append({"at_frame": audio.part.frames, "expected": audio.next_index, "got": index})
        audio.part.append(block[lo:hi])
        audio.next_index = index + (hi - lo) if index is not None else None
        audio.last = sample
        rate = self.rate()
        t_lo = sample.t_mono_ns + round(lo * 1e9 / rate)
        audio.t_end = sample.t_mono_ns + round(hi * 1e9 / rate)
        if index is not None and t_lo - audio._last_point >= CLOCK_POINT_EVERY_NS:
            audio.points.append((index, t_lo))
            audio._last_point = t_lo
        if hi == block.shape[0] and isinstance(sample.device_time, int):
            self._note_arrival(audio, sample.device_time + hi, self._arrival_ns)

    def _note_arrival(self, audio: _AudioFile, end_index: int, arrival: int) -> None:
        if audio._best is not None and arrival - audio._window_start >= ARRIVAL_WINDOW_NS:
            audio.arrivals.append(audio._best[1:])
            audio._best = None
        if audio._best is None:
            audio._window_start = arrival
        lateness = arrival - end_index * 1e9 / self.rate()
        if audio._best is None or lateness < audio._best[0]:
            audio._best = (lateness, end_index, arrival)

    def finish_audio(self, audio: _AudioFile, kind: str, notes: dict[str, Any] | None = None) -> None:
        """Hand a filled audio file to the writer (never dropped), or discard an empty one."""
        ctx = audio.context
        if audio.part.frames == 0:
            audio.part.abandon()
            audio.part.cleanup()
            if ctx is not None:
                ctx.stream_closed(self.stream, "no audio reached the window")
            return
        first = audio.first
        meta: dict[str, Any] = {
            "sample_rate": self.rate(),
            "channels": audio.part.format.channels,
            "frames": audio.part.frames,
            "sample_index_first": audio.index_first,
            "clock_points": audio.points,
            "arrival_points": audio.arrivals + ([audio._best[1:]] if audio._best is not None else []),
            "first_block": {**scalar_meta(first.meta), "device_time": first.device_time},
        }
        if audio.discontinuities:
            meta["discontinuities"] = audio.discontinuities
        if ctx is not None:
            meta[ctx.kind] = ctx.context_id
            meta.update(ctx.meta)
        meta.update(notes or {})
        job = CaptureJob(
            stream=self.stream,
            modality="audio",
            kind=kind,
            t_start_mono_ns=audio.t_start,
            t_end_mono_ns=audio.t_end,
            seq_first=first.seq,
            seq_last=audio.last.seq,
            meta=meta,
            media_type="audio/wav",
            part=audio.part,
            session_id=ctx.session_id if ctx and ctx.session_id else self.session_of(),
            item_id=ctx.item_id if ctx else None,
            take=ctx.take_no if ctx else None,
            supersedes=ctx.supersedes.get(self.stream) if ctx else None,
            context=ctx,
            t_captured_ns=audio.t_end,
        )
        self.submit(job)
        if ctx is not None:
            ctx.stream_closed(self.stream)

    def _admitted(self, sample: Sample, kind: str) -> bool:
        """Ask the disk guard before a new audio file (a refused block is counted by the guard)."""
        return self.writer.allows_media(self.stream, kind, sample.t_mono_ns, sample.seq)

    # ------------------------------------------------------------------ windows (triggered, take)

    def feed_windows(self, sample: Sample) -> None:
        if self._ring:
            self._gap_ns = min(RING_MARGIN_MAX_NS, max(0, sample.t_mono_ns - self._ring[-1].t_mono_ns))
        self._ring.append(sample)
        horizon = sample.t_mono_ns - self._keep_ns - 2 * self._gap_ns - self._span_ns(sample)
        while self._ring and self._ring[0].t_mono_ns < horizon:
            old = self._ring.popleft()
            if self._evicted_end_ns is None:
                self._check_ring_size()
            self._evicted_end_ns = old.t_mono_ns + self._span_ns(old)
        for win in list(self._windows):
            self._window_sample(win, sample)

    def _check_ring_size(self) -> None:
        """Once the ring is full: warn if pre_s + delay_s of raw frames takes a lot of memory."""
        size = sum(s.payload.nbytes for s in self._ring if isinstance(s.payload, np.ndarray))
        if size > RING_WARN_BYTES:
            log.warning(
                "%s: the ring buffer holds %.0f MB of raw samples (%.1f s); lower pre_s or the analyzer"
                " rules' delay_s, or the stream's resolution or rate, if memory is short",
                self.stream,
                size / 1e6,
                self._keep_ns / 1e9,
            )

    def _span_ns(self, sample: Sample) -> int:
        """How long a sample lasts (an audio block covers many frames)."""
        if self.modality == "audio" and isinstance(sample.payload, np.ndarray):
            return round(int(sample.payload.shape[0]) * 1e9 / self.rate())
        return 0

    def _window_sample(self, win: _Window, sample: Sample) -> None:
        span = self._span_ns(sample)
        if (sample.t_mono_ns + span <= win.start_ns) if span else (sample.t_mono_ns < win.start_ns):
            return
        if self.modality == "audio":
            block = sample.payload
            assert isinstance(block, np.ndarray)
            rate, n = self.rate(), block.shape[0]
            lo = max(0, math.ceil((win.start_ns - sample.t_mono_ns) * rate / 1e9))
            hi = n if win.end_ns is None else min(n, math.floor((win.end_ns - sample.t_mono_ns) * rate / 1e9) + 1)
            if lo < hi and (win.audio is not None or self._admitted(sample, win.context.kind)):
                if win.audio is None:
                    kind = "take" if win.context.kind == "take" else "clip"
                    expected = 0 if win.end_ns is None else round((win.end_ns - win.start_ns) * rate / 1e9)
                    win.audio = self.open_audio(sample, lo, kind, expected, win.context)
                self.append_audio(win.audio, sample, lo, hi)
        elif (win.end_ns is None or sample.t_mono_ns <= win.end_ns) and win.frames is not None:
            win.frames.add(sample)
            self.submit(self.frame_job(sample, win.frames))
        if win.end_ns is not None and sample.t_mono_ns + span >= win.end_ns:
            self._close_window(win)

    def _close_window(self, win: _Window) -> None:
        self._windows.remove(win)
        if self.modality == "audio":
            if win.audio is None:
                win.context.stream_closed(self.stream, "no audio reached the window")
            else:
                self.finish_audio(win.audio, "take" if win.context.kind == "take" else "clip", win.notes)
        elif win.frames is not None:
            win.frames.notes.update(
                win.notes or {}, window_start_mono_ns=win.start_ns, window_end_mono_ns=win.end_ns or self._newest_ns
            )
            win.frames.close()

    def _finish_frames(self, frames: FrameSet) -> None:
        """The window's frames are all settled: submit its summary capture, then close the stream.

        Runs on the capture thread or on the writer thread that settled the last frame; it touches
        only the frame set, so it takes no recorder lock.
        """
        ctx, first, last = frames.parent, frames.first, frames.last
        failed = frames.submitted - frames.committed
        error = None
        if failed:
            error = f"{failed} of {frames.submitted} frames not committed ({frames.failures[0]})"
        if first is None or last is None or not frames.committed:
            ctx.stream_closed(self.stream, error or "no frame reached the window")
            return
        meta: dict[str, Any] = {
            ctx.kind: ctx.context_id,
            **ctx.meta,
            **frames.notes,
            "frames": frames.committed,
            "frames_failed": failed,
            "fps": self.settings.get("fps"),
        }
        if isinstance(first.device_time, int) and isinstance(last.device_time, int):
            # The frame counter says what the device produced in between; anything else was lost.
            meta["device_time_first"], meta["device_time_last"] = first.device_time, last.device_time
            meta["frames_missing"] = last.device_time - first.device_time + 1 - frames.submitted
        kind = "take" if ctx.kind == "take" else "clip"
        self.submit(
            CaptureJob(
                stream=self.stream,
                modality=self.modality,
                kind=kind,
                t_start_mono_ns=first.t_mono_ns,
                t_end_mono_ns=last.t_mono_ns,
                seq_first=first.seq,
                seq_last=last.seq,
                meta=meta,
                session_id=ctx.session_id or self.session_of(),
                item_id=ctx.item_id,
                take=ctx.take_no,
                supersedes=ctx.supersedes.get(self.stream),
                context=ctx,
                t_captured_ns=last.t_mono_ns,
            )
        )
        ctx.stream_closed(self.stream, error)  # after the submit: the take waits for the summary

    def _open_window(self, start_ns: int, end_ns: int | None, ctx: CaptureContext) -> None:
        win = _Window(start_ns, end_ns, ctx)
        if self.modality != "audio":
            win.frames = FrameSet(ctx, self._finish_frames)
        evicted = self._evicted_end_ns
        if evicted is not None and evicted >= start_ns:
            # What the window wants from before this instant is no longer in memory (the trigger
            # came later than delay_s allows for): say so rather than pass a short pre-roll off.
            win.notes = {"preroll_missing_s": round((evicted - start_ns) / 1e9, 3)}
            log.warning(
                "%s: %s %s starts %.3f s before the oldest sample still held; that part is lost",
                self.stream,
                ctx.kind,
                ctx.context_id,
                (evicted - start_ns) / 1e9,
            )
        ctx.stream_opened(self.stream)
        self._windows.append(win)
        for sample in list(self._ring):  # the pre-roll
            if win in self._windows:
                self._window_sample(win, sample)

    def trigger(self, trig: Trigger) -> None:
        """Open a window around a trigger, or extend the open one it falls into.

        Only a window that started no later than this one would is extended: a late analyzer
        trigger about an earlier moment gets its own window (audio cannot be prepended).
        """
        pre, post = round(self.policy.pre_s * 1e9), round(self.policy.post_s * 1e9)
        start = trig.t_mono_ns - pre
        with self._lock:
            for win in self._windows:
                if win.context.kind == "trigger" and win.end_ns is not None and win.start_ns <= start <= win.end_ns:
                    win.end_ns = max(win.end_ns, trig.t_mono_ns + post)
                    win.context.meta.setdefault("extended_by", []).append(trig.trigger_id)
                    return
            ctx = CaptureContext("trigger", trig.trigger_id, session_id=self.session_of(), meta={})
            self._open_window(trig.t_mono_ns - pre, trig.t_mono_ns + post, ctx)

    def begin_take(self, ctx: CaptureContext, t_mono_ns: int | None = None) -> None:
        """Start a take window at ``t_mono_ns`` (now), with the ``pre_s`` pre-roll."""
        t = time.monotonic_ns() if t_mono_ns is None else t_mono_ns
        with self._lock:
            if any(w.context.kind == "take" and w.end_ns is None for w in self._windows):
                raise RuntimeError(f"{self.stream}: a take is already recording")
            self._open_window(t - round(self.policy.pre_s * 1e9), None, ctx)

    def end_take(self, context_id: str, t_mono_ns: int | None = None) -> None:
        """Stop a take: the window closes ``post_s`` after ``t_mono_ns`` (now)."""
        t = time.monotonic_ns() if t_mono_ns is None else t_mono_ns
        with self._lock:
            for win in self._windows:
                if win.context.context_id == context_id and win.end_ns is None:
                    win.end_ns = t + round(self.policy.post_s * 1e9)
                    if self._newest_ns >= win.end_ns:
                        self._close_window(win)
                    return

    def flush(self) -> None:
        """On stop: finish the open segment, close every window, emit the partial readings batch."""
        with self._lock:
            self.strategy.flush()
            for win in list(self._windows):
                self._close_window(win)
