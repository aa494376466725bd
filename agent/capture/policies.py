"""Capture policies, one class each: what a stream's recorder keeps of the samples it is fed.

``StreamRecorder`` (``agent.capture.recorder``) holds what the policies share — the writer, the
clock, audio files, the pre-roll ring and the windows — and picks its policy once, when it is made
(``policy_for``); every sample then goes to that policy's ``feed``, and ``flush`` on stop hands over
what the policy holds open. The recorder module's docstring says what each policy keeps.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from agent.capture.pairing import PairRequest, pair_meta
from agent.capture.triggers import hold_s
from agent.catalog.writer import CaptureJob, Reading

if TYPE_CHECKING:
    from agent.capture.recorder import StreamRecorder, _AudioFile
    from drivers import Sample


class CapturePolicy:
    """The policy of one stream; ``feed`` and ``flush`` run under the recorder's lock."""

    name: ClassVar[str]

    def __init__(self, rec: StreamRecorder) -> None:
        self.rec = rec

    def hold_s(self) -> float:
        """How far back the recorder's ring keeps samples for a window's pre-roll."""
        return self.rec.policy.pre_s

    def feed(self, sample: Sample) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """On stop: hand what is still open to the writer."""


class EveryFrame(CapturePolicy):
    """``every``: each frame is a capture."""

    name = "every"

    def feed(self, sample: Sample) -> None:
        self.rec.submit(self.rec.frame_job(sample, None))


class IntervalFrames(CapturePolicy):
    """``interval``: one frame per ``interval_s``, on a schedule rather than from the last kept stamp.

    Each kept frame is due one interval after the previous one was *due*, and the first frame within
    half a frame period of that moment is kept: a 9 fps camera at ``interval_s = 1`` keeps every
    ninth frame (nine periods are a hair under 1 s) instead of drifting to every tenth, and two
    cameras on the same interval stay in step. After a gap longer than an interval (a stall, a
    reopen) the schedule restarts from the next frame instead of catching up.
    """

    name = "interval"

    def __init__(self, rec: StreamRecorder) -> None:
        super().__init__(rec)
        self._due_ns: float | None = None
        self._last_ns: int | None = None
        self._period_ns: float | None = None

    def feed(self, sample: Sample) -> None:
        t = sample.t_mono_ns
        if self._last_ns is not None and t > self._last_ns:  # the frame period, smoothed
            step = float(t - self._last_ns)
            self._period_ns = step if self._period_ns is None else 0.9 * self._period_ns + 0.1 * step
        self._last_ns = t
        interval = self.rec.policy.interval_s * 1e9
        due = self._due_ns
        slack = 0.5 * min(self._period_ns or 0.0, interval)
        if due is None or t >= due - slack:
            self._due_ns = (t if due is None or t - due > interval else due) + interval
            self.rec.submit(self.rec.frame_job(sample, None))


class PairedFrames(CapturePolicy):
    """``pair_with``: for each frame the leader keeps, the frame of this stream nearest in time.

    A ring holds the last ``RING_PERIODS`` periods of frames (longer where the leader's pre-roll
    reaches further back, at most ``RING_MAX`` frames); a request whose time lies after the newest
    frame waits for the next one, then the nearer of the two is kept. See ``agent.capture.pairing``.
    """

    name = "paired"
    RING_PERIODS = 4
    RING_MAX = 256
    PENDING_MAX = 64

    def __init__(self, rec: StreamRecorder) -> None:
        super().__init__(rec)
        self._ring: deque[Sample] = deque()
        self._pending: deque[PairRequest] = deque()
        fps = rec.settings.get("fps")
        self._period_ns = 1e9 / float(fps) if fps else 100_000_000.0

    def hold_s(self) -> float:
        return 0.0

    def feed(self, sample: Sample) -> None:
        ring = self._ring
        ring.append(sample)
        keep_ns = self.RING_PERIODS * self._period_ns + self.rec.pair_hold_s * 1e9
        while len(ring) > self.RING_MAX or (len(ring) > 1 and ring[0].t_mono_ns < sample.t_mono_ns - keep_ns):
            ring.popleft()
        t_new, _ = self.rec.frame_time(sample)
        while self._pending and self._pending[0].t_ns <= t_new:
            self._keep(self._pending.popleft())

    def request(self, req: PairRequest) -> None:
        newest = self._ring[-1] if self._ring else None
        if newest is not None and self.rec.frame_time(newest)[0] >= req.t_ns:
            self._keep(req)
            return
        self._pending.append(req)  # the next frame may be nearer
        while len(self._pending) > self.PENDING_MAX:  # the stream stalled: the best there is
            self._keep(self._pending.popleft())

    def _keep(self, req: PairRequest) -> None:
        if not self._ring:
            return  # no frame at all yet: the leader's frame stays unpaired (the index says so)
        best, t_best, placed = None, 0, "stamps"
        for s in self._ring:
            t, p = self.rec.frame_time(s)
            if best is None or abs(t - req.t_ns) < abs(t_best - req.t_ns):
                best, t_best, placed = s, t, p
        assert best is not None
        self.rec.submit(self.rec.frame_job(best, None, pair_meta(req, t_best, placed)))

    def flush(self) -> None:
        while self._pending:
            self._keep(self._pending.popleft())


class Segments(CapturePolicy):
    """``segment``: continuous audio in WAV files of exactly ``segment_s``, each contiguous."""

    name = "segment"

    def __init__(self, rec: StreamRecorder) -> None:
        super().__init__(rec)
        self._segment: _AudioFile | None = None

    def feed(self, sample: Sample) -> None:
        rec = self.rec
        block = sample.payload
        assert isinstance(block, np.ndarray)
        target = max(1, round(rec.policy.segment_s * rec.rate()))
        seg = self._segment
        if seg is not None and self._discontinuous(seg, sample):
            rec.finish_audio(seg, "segment")  # keep every file's samples contiguous
            self._segment = seg = None
        offset, n = 0, block.shape[0]
        while offset < n:
            if seg is None:
                if not rec.writer.allows_media(rec.stream, "segment", sample.t_mono_ns, sample.seq):
                    return  # disk full of unsynced data: the block is refused (and recorded by the guard)
                seg = self._segment = rec.open_audio(sample, offset, "segment", target, None)
            take = min(n - offset, target - seg.part.frames)
            rec.append_audio(seg, sample, offset, offset + take)
            offset += take
            if seg.part.frames >= target:
                rec.finish_audio(seg, "segment")
                self._segment = seg = None

    @staticmethod
    def _discontinuous(audio: _AudioFile, sample: Sample) -> bool:
        if audio.next_index is None or not isinstance(sample.device_time, int):
            return False
        segment = sample.meta.get("clock_segment")
        return sample.device_time != audio.next_index or segment != audio.first.meta.get("clock_segment")

    def flush(self) -> None:
        if self._segment is not None:
            self.rec.finish_audio(self._segment, "segment")
            self._segment = None


class Readings(CapturePolicy):
    """``readings`` (every sensor stream): values in batches of ``batch_s``, the live environment
    table and the sensor trigger rules."""

    name = "readings"

    def __init__(self, rec: StreamRecorder) -> None:
        super().__init__(rec)
        self._readings: list[Reading] = []
        self._batch_start: Sample | None = None
        self._batch_last: Sample | None = None

    def feed(self, sample: Sample) -> None:
        rec = self.rec
        values = sample.payload
        assert isinstance(values, dict)
        if self._batch_start is None:
            self._batch_start = sample
        self._batch_last = sample
        utc = rec.clock.utc_ns(sample.t_mono_ns)
        clean: dict[str, float | None] = {}
        for name, value in values.items():
            number = None if value is None else float(value)
            clean[name] = number
            self._readings.append((sample.seq, sample.t_mono_ns, utc, name, number))
        if rec.live is not None:
            rec.live.update(rec.stream, clean, sample.t_mono_ns, utc)
        if rec.triggers is not None:
            rec.triggers.check_reading(rec.stream, clean, sample.t_mono_ns)
        if sample.t_mono_ns - self._batch_start.t_mono_ns >= rec.policy.batch_s * 1e9:
            self.flush()

    def flush(self) -> None:
        rec = self.rec
        first, last = self._batch_start, self._batch_last
        if first is None or last is None or not self._readings:
            return
        rec.submit(
            CaptureJob(
                stream=rec.stream,
                modality="sensor",
                kind="readings",
                t_start_mono_ns=first.t_mono_ns,
                t_end_mono_ns=last.t_mono_ns,
                seq_first=first.seq,
                seq_last=last.seq,
                meta={"readings": len(self._readings), "units": rec.settings.get("units", {})},
                readings=self._readings,
                session_id=rec.session_of(),
                t_captured_ns=last.t_mono_ns,
            )
        )
        self._readings = []
        self._batch_start = self._batch_last = None


class Windows(CapturePolicy):
    """Samples go through the recorder's pre-roll ring into the windows it has open."""

    def feed(self, sample: Sample) -> None:
        self.rec.feed_windows(sample)


class Triggered(Windows):
    """``triggered``: a trigger opens a window ``[t - pre_s, t + post_s]``; the ring also keeps the
    longest analyzer rule's ``delay_s``, since an analyzer result arrives after the moment it is about."""

    name = "triggered"

    def hold_s(self) -> float:
        return self.rec.policy.pre_s + hold_s(self.rec.policy.triggers)


class Takes(Windows):
    """``take``: windows opened and closed through the session API (booth takes)."""

    name = "take"


POLICIES: dict[str, type[CapturePolicy]] = {
    cls.name: cls for cls in (EveryFrame, IntervalFrames, PairedFrames, Segments, Readings, Triggered, Takes)
}


def policy_for(rec: StreamRecorder) -> CapturePolicy:
    """The policy a recorder applies: its stream's ``policy``, ``paired`` for a camera with
    ``pair_with``, and ``readings`` for every sensor."""
    if rec.modality == "sensor":
        return Readings(rec)
    if rec.policy.pair_with is not None:
        return PairedFrames(rec)
    return POLICIES[rec.policy.policy](rec)
