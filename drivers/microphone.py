"""``microphone``: audio input through sounddevice (PortAudio), stamped by sample index.

The PortAudio callback only copies the block, notes its arrival time on the monotonic clock and
queues it; everything else happens in ``read()``. Each block's ``device_time`` is the index of
its first frame; ``t_mono_ns`` comes from the fitted index->monotonic relation
(``drivers.audio_clock.IndexClock``) minus the input latency PortAudio reports, because the
backends' own ``inputBufferAdcTime`` values live on different clocks. An input overflow (audio
lost before it reached us) is counted in ``stats.overflows`` and restarts the fit, since the
index no longer maps linearly to time across it (``meta["clock_segment"]`` tells segments apart).
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

__all__ = ["Microphone", "list_input_devices", "resolve_input_device"]


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
        with self._cond:
            while not self._queue:
                if self._finished or (self._stream is not None and not self._stream.active):
                    raise DriverIOError("audio stream stopped (device removed or server gone)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
            first, block, arrival, overflow = self._queue.popleft()
        if overflow:
            self._clock.reset()
        frames = len(block)
        self._clock.add(first + frames, arrival)
        block_no = first // self.settings.blocksize
        skipped = 0 if self._last_block is None else max(0, block_no - self._last_block - 1)
        self._last_block = block_no
        meta: dict[str, Any] = {
            "sample_rate": self.settings.sample_rate,
            "clock_segment": self._clock.segment,
            "fit_points": self._clock.points,
            "drift_ppm_fit": self._clock.drift_ppm(),
        }
        if overflow:
            meta["overflow"] = True
        return RawSample(
            payload=block,
            t_mono_ns=self._clock.mono_ns(first) - self._latency_ns,
            device_time=first,
            device_seq=block_no,
            skipped=skipped,
            meta=meta,
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
