"""``microphone``: audio input through sounddevice (PortAudio), stamped by sample index.

The PortAudio callback only copies the block, notes its arrival time on the monotonic clock and
queues it; everything else happens in ``read()``. Each block's ``device_time`` is the index of
its first frame; ``t_mono_ns`` comes from the fitted index->monotonic relation
(``drivers.audio_clock.IndexClock``) minus the input latency PortAudio reports, because the
backends' own ``inputBufferAdcTime`` values live on different clocks.

Input overflows (audio lost before it reached us) are counted in ``stats.overflows`` and as
``stats.drops`` (in blocks), and restart the fit, since the index no longer maps linearly to time
across them (``meta["clock_segment"]`` tells segments apart). PortAudio flags only the overflows
its host API sees. Through PulseAudio (ALSA ``pulse`` PCM) a stalled callback is never flagged:
the server buffers up to 4 MiB per record stream (about 22 s of 48 kHz stereo int16), delivers it
in a burst once the callback runs again, and silently discards whatever did not fit - measured
against a private PulseAudio server (``tests/drivers/test_microphone.py``).

So the driver also finds losses from arrival times. Blocks arriving more than
``LOSS_TOLERANCE_S`` later than the fitted clock predicts are held back (a late episode). If the
lateness goes away (the catch-up burst brought everything), they are delivered as they are. If
blocks arrive paced again (one per block period, for ``SETTLE_S``) yet steadily late, audio is
missing and that lateness is how much: the blocks after the hole get ``device_time`` advanced by
the lost frames (the recorder sees the discontinuity) and a new clock segment; the first of them
carries ``meta["overflow"]``, ``meta["lost_frames"]`` and ``meta["loss_detected_by"]``. Losses
shorter than the tolerance stay invisible, and a lasting rise of the server's latency beyond it
would be taken for a loss.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import sounddevice as sd

from drivers.audio_clock import IndexClock
from drivers.base import Driver, RawSample
from drivers.errors import DriverIOError, DriverOpenError
from drivers.settings.audio import MicrophoneSettings

__all__ = ["LOSS_TOLERANCE_S", "SETTLE_S", "Microphone", "list_input_devices", "resolve_input_device"]

LOSS_TOLERANCE_S = 0.1  # lateness that jitter and scheduling never sustain over SETTLE_S of paced blocks
SETTLE_S = 0.2  # paced, steadily late audio needed before a loss is declared (held back that long)

_Block = tuple[int, np.ndarray[Any, Any], int, bool]  # (first frame, data, arrival ns, overflow flag)


def list_input_devices() -> list[dict[str, Any]]:
    """Input-capable PortAudio devices: index, name, host API, channels, default rate."""
    hostapis = sd.query_hostapis()
    out = []
    for dev in sd.query_devices():
        if dev["max_input_channels"] > 0:
            out.append(
                {
                    "index": dev["index"],
                    "name": dev["name"],
                    "hostapi": hostapis[dev["hostapi"]]["name"],
                    "max_input_channels": dev["max_input_channels"],
                    "default_samplerate": dev["default_samplerate"],
                }
            )
    return out


def resolve_input_device(device: str | int | None) -> int | None:
    """A device index from an index, an exact name or a unique name substring."""
    if device is None or isinstance(device, int):
        return device
    devices = list_input_devices()
    exact = [d["index"] for d in devices if d["name"] == device]
    if len(exact) == 1:
        return int(exact[0])
    found = [d for d in devices if device.lower() in d["name"].lower()]
    if len(found) == 1:
        return int(found[0]["index"])
    names = ", ".join(f"{d['index']}: {d['name']}" for d in devices) or "none"
    what = "matches several" if found else "matches no"
    raise DriverOpenError(f"audio device {device!r} {what} input device(s); inputs: {names}")


class Microphone(Driver[MicrophoneSettings]):
    """Blocks of ``blocksize`` frames, (frames, channels) int16, from a callback InputStream."""

    modality = "audio"

    def __init__(self, settings: MicrophoneSettings) -> None:
        super().__init__(settings)
        self._stream: sd.InputStream | None = None
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, np.ndarray[Any, Any], int, bool]] = deque()
        self._capacity = max(2, math.ceil(settings.queue_s * settings.sample_rate / settings.blocksize))
        self._index = 0  # frames received by the callback since open
        self._overflow_pending = False
        self._clock = IndexClock(settings.sample_rate, window_s=settings.fit_window_s)
        self._latency_ns = 0
        self._last_block: int | None = None
        self._finished = False
        self._device_name = ""
        period_s = settings.blocksize / settings.sample_rate
        self._period_ns = period_s * 1e9
        self._tolerance_ns = max(LOSS_TOLERANCE_S, 3 * period_s) * 1e9
        self._settle_blocks = max(4, math.ceil(SETTLE_S / period_s))
        self._lost = 0  # frames found missing so far: added to the callback's index
        self._held: list[_Block] = []  # blocks of a late episode awaiting a decision
        self._held_late: list[int] = []  # their lateness against the fit (ns)
        self._ready: deque[RawSample] = deque()
        self._note: dict[str, Any] = {}  # meta for the next delivered block (where a hole ends)

    def describe(self) -> str:
        dev = self.settings.device
        return f"audio input {dev if dev is not None else '(default)'}"

    def _callback(self, indata: Any, frames: int, _time: Any, status: sd.CallbackFlags) -> None:
        t_mono = time.monotonic_ns()
        overflow = bool(status.input_overflow)
        block = indata.copy()
        first = self._index
        self._index += frames
        with self._cond:
            if len(self._queue) >= self._capacity:
                self._queue.popleft()  # counted as a drop by the reader (block numbers jump)
            self._queue.append((first, block, t_mono, overflow))
            self._cond.notify()
        if overflow:
            self._count("overflows", why=f"{self.name}: input overflow (audio lost before capture)")

    def _finished_callback(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _open(self) -> None:
        s = self.settings
        device = resolve_input_device(s.device)
        try:
            sd.check_input_settings(device=device, channels=s.channels, dtype="int16", samplerate=s.sample_rate)
            stream = sd.InputStream(
                device=device,
                samplerate=s.sample_rate,
                channels=s.channels,
                dtype="int16",
                blocksize=s.blocksize,
                latency=s.latency,
                callback=self._callback,
                finished_callback=self._finished_callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise DriverOpenError(
                f"{s.name}: cannot open {self.describe()} at {s.sample_rate} Hz x {s.channels} "
                f"ch int16: {exc} (list devices with 'fieldcap devices probe')"
            ) from exc
        with self._cond:
            self._queue.clear()
            self._finished = False
        self._index = 0
        self._last_block = None
        self._clock.reset()
        self._lost = 0
        self._held.clear()
        self._held_late.clear()
        self._ready.clear()
        self._note = {}
        self._latency_ns = round(float(stream.latency) * 1e9) if s.latency_compensation == "reported" else 0
        info = sd.query_devices(stream.device)
        self._device_name = str(info["name"])
        self._stream = stream
        stream.start()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
            finally:
                stream.close(ignore_errors=True)

    def _read_raw(self, timeout: float) -> RawSample | None:
        deadline = time.monotonic() + timeout
        while not self._ready:
            with self._cond:
                while not self._queue:
                    if self._finished or (self._stream is not None and not self._stream.active):
                        raise DriverIOError("audio stream stopped (device removed or server gone)")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(min(remaining, 0.5))
                entry = self._queue.popleft()
            self._classify(entry)
        return self._ready.popleft()

    def _classify(self, entry: _Block) -> None:
        """Deliver a block, or hold it while a late episode is undecided (see the module doc)."""
        first, block, arrival, flagged = entry
        if flagged or self._clock.points == 0:
            self._release_held()
            self._emit(entry, fit=True)
            return
        late = arrival - self._clock.mono_ns(first + self._lost + len(block))
        if late <= self._tolerance_ns:
            self._release_held()  # caught up: the episode was a stall, nothing lost
            self._emit(entry, fit=True)
            return
        self._held.append(entry)
        self._held_late.append(late)
        if len(self._held) > self._capacity:  # never settles: give up deciding, deliver as is
            self._release_held()
            return
        k = self._settle_blocks
        if len(self._held) <= k:
            return
        tail = self._held[-k:]
        tail_late = self._held_late[-k:]
        span = tail[-1][2] - tail[0][2]
        paced = span >= 0.75 * (k - 1) * self._period_ns  # a catch-up burst arrives much faster
        steady = abs(tail_late[-1] - tail_late[0]) <= self._tolerance_ns / 2  # a burst catches up
        if paced and steady:
            self._declare_loss(min(tail_late))

    def _release_held(self) -> None:
        held, self._held, self._held_late = self._held, [], []
        for entry in held:
            self._emit(entry, fit=False)  # late: stamped by the fit, not used to fit

    def _declare_loss(self, lost_ns: int) -> None:
        """The held tail arrives paced yet late: audio between it and the fit never reached us.

        Where the hole lies inside the catch-up burst cannot be seen in arrival times. PulseAudio
        keeps the oldest audio and discards what no longer fits, so the hole starts where its
        buffer ran full: the first held block arrived ``late0`` after its fitted time, of which
        ``lost_ns`` were lost; the rest was buffered. The hole is placed at the nearest block
        boundary.
        """
        fpt = self._clock.nominal_ns_per_frame
        lost = round(lost_ns / fpt)
        first0, block0 = self._held[0][0], self._held[0][1]
        hole = first0 + len(block0) + round((self._held_late[0] - lost_ns) / fpt)
        held, self._held, self._held_late = self._held, [], []
        split = next((n for n, e in enumerate(held) if e[0] + len(e[1]) / 2 >= hole), len(held))
        for entry in held[:split]:
            self._emit(entry, fit=False)
        self._lost += lost
        seconds = lost / self.settings.sample_rate
        self._count(
            "overflows",
            why=f"{self.name}: about {seconds:.3f} s of audio ({lost} frames) lost before capture: "
            "the audio callback or the sound server stalled longer than its buffer (PortAudio did not "
            "flag it; found from arrival times)",
        )
        self._clock.reset()
        for first, block, arrival, _ in held[max(split, len(held) - self._settle_blocks) :]:
            self._clock.add(first + self._lost + len(block), arrival)  # paced: they anchor the new fit
        self._note = {"overflow": True, "lost_frames": lost, "loss_detected_by": "arrival-timing"}
        for entry in held[split:]:
            self._emit(entry, fit=False)

    def _emit(self, entry: _Block, *, fit: bool) -> None:
        """Stamp a block from the fit (adding its arrival when it is on time) and queue it."""
        first, block, arrival, flagged = entry
        index = first + self._lost
        frames = len(block)
        if flagged:
            self._clock.reset()
        if fit or self._clock.points == 0:
            self._clock.add(index + frames, arrival)
        block_no = index // self.settings.blocksize
        skipped = 0 if self._last_block is None else max(0, block_no - self._last_block - 1)
        if flagged and skipped == 0:
            skipped = 1  # PortAudio says audio was lost but not how much: at least a block
        self._last_block = block_no
        meta: dict[str, Any] = {
            "sample_rate": self.settings.sample_rate,
            "clock_segment": self._clock.segment,
            "fit_points": self._clock.points,
            "drift_ppm_fit": self._clock.drift_ppm(),
        }
        if flagged:
            meta["overflow"] = True
            meta["lost_frames"] = None  # unknown: the host API does not say
        meta.update(self._note)
        self._note = {}
        self._ready.append(
            RawSample(
                payload=block,
                t_mono_ns=self._clock.mono_ns(index) - self._latency_ns,
                device_time=index,
                device_seq=block_no,
                skipped=skipped,
                meta=meta,
            )
        )

    def _settings_in_force(self) -> dict[str, Any]:
        stream = self._stream
        if stream is None:
            return {}
        names = self.settings.channel_names or [f"ch{i}" for i in range(stream.channels)]
        return {
            "device_name": self._device_name,
            "sample_rate": stream.samplerate,
            "channels": stream.channels,
            "channel_names": names,
            "dtype": "int16",
            "blocksize": stream.blocksize,
            "input_latency_s": stream.latency,
            "latency_compensated_ns": self._latency_ns,
        }
