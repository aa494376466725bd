"""``sim-microphone``: a near + mid microphone pair with tone bursts at known sample indices,
and optionally a synthesized voice (``drivers.sim.voice``) with known speech segments.

The simulated device clock runs ``drift_ppm`` off the host clock: block ``k`` becomes available at
``t0 + (k + 1) * blocksize / (rate * (1 + drift))``, and its callback "fires" a seeded,
exponentially distributed ``callback_jitter_ms`` later. The driver stamps it exactly as the real
microphone driver does, through ``IndexClock``, so tests of drift estimation and audio<->video
alignment exercise the production path. Content is a pure function of the sample index (noise is
seeded per block), so a dropped block never shifts later content. ``faults`` lose blocks, stall
the callback, disconnect the device, step its sample clock or make it drift.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from drivers.audio_clock import IndexClock
from drivers.base import Driver, RawSample
from drivers.settings.sim import SimMicrophoneSettings
from drivers.sim.faults import FaultPlan
from drivers.sim.voice import synthesize

__all__ = ["SimMicrophone", "tone_onsets"]


def tone_onsets(settings: SimMicrophoneSettings, first: int, stop: int) -> list[int]:
    """Near-channel sample indices in ``[first, stop)`` where a tone burst starts."""
    interval = settings.tone_interval_s * settings.sample_rate
    k = math.ceil(first / interval)
    out = []
    while (start := round(k * interval)) < stop:
        if start >= first:
            out.append(start)
        k += 1
    return out


class SimMicrophone(Driver[SimMicrophoneSettings]):
    """Paced int16 blocks of ``blocksize`` frames; ground truth in ``meta``.

    ``meta``: ``t_truth_ns`` (true monotonic time of the first frame), ``tones`` (list of
    ``{"index", "mid_index", "t_truth_ns"}`` for bursts starting in the block), ``drift_ppm_fit``;
    with the voice, ``speech`` (near-channel ``[start, end)`` sample indices of every phrase that
    overlaps the block), ``speech_dbfs`` and ``snr_db`` (near: speech RMS over the noise floor);
    ``faults`` names a drop, stall or reconnect right before the block.
    """

    modality = "audio"

    def __init__(self, settings: SimMicrophoneSettings) -> None:
        super().__init__(settings)
        s = settings
        self._rate_eff = s.sample_rate * (1.0 + s.clock_drift_ppm * 1e-6)  # frames per host second
        self._plan = FaultPlan(s.faults, s.sample_rate / s.blocksize)
        self._events: list[str] = []
        self._reopen_skip = 0
        self._stall_until = 0
        self._speech_amp = 32767 * 10 ** (s.speech_dbfs / 20)
        self._t0: int | None = None
        self._next = 0
        self._clock = IndexClock(s.sample_rate)
        self._tone_len = max(1, round(s.tone_duration_s * s.sample_rate))
        self._tone_amp = 32767 * 10 ** (s.tone_dbfs / 20)
        self._noise_amp = 32767 * 10 ** (s.noise_dbfs / 20)
        self._mid_gain = 10 ** (s.mid_gain_db / 20)
        self._mid_delay = round(s.mid_delay_ms * 1e-3 * s.sample_rate)

    def describe(self) -> str:
        s = self.settings
        return f"simulated microphone {s.channels}ch@{s.sample_rate}"

    def _open(self) -> None:
        self._plan.on_open(self.name)
        if self.settings.speech_mode == "voice":
            self._voice()  # synthesized once (~0.5 s) before the stream starts
        if self._t0 is None:
            self._t0 = time.monotonic_ns()
        else:
            self._clock.reset()
            # a reopened stream starts now: what the device played meanwhile is gone (drops)
            now_block = int((time.monotonic_ns() - self._t0) / 1e9 * self._rate_eff) // self.settings.blocksize
            if now_block > self._next:
                self._reopen_skip += now_block - self._next
                self._next = now_block
            self._events.append("reconnect")

    def _voice(self) -> tuple[np.ndarray[Any, np.dtype[np.float64]], tuple[tuple[int, int], ...]]:
        s = self.settings
        v = synthesize(s.seed, s.sample_rate, phrase_s=s.phrase_s)
        return v.signal, v.segments

    def speech_segments(self, first: int, stop: int) -> list[tuple[int, int]]:
        """Near-channel ``[start, end)`` indices of the voice's phrases overlapping ``[first, stop)``."""
        if self.settings.speech_mode != "voice":
            return []
        signal, segments = self._voice()
        loop = len(signal)
        out: list[tuple[int, int]] = []
        for rep in range(max(0, first) // loop, max(0, stop - 1) // loop + 1):
            shift = rep * loop
            out.extend((a + shift, b + shift) for a, b in segments if a + shift < stop and b + shift > first)
        return out

    def _true_ns(self, index: float) -> int:
        assert self._t0 is not None
        return self._t0 + round(index / self._rate_eff * 1e9)

    def _near(self, first: int, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Near-channel signal for indices ``[first, first + n)`` (may start below zero)."""
        s = self.settings
        idx = np.arange(first, first + n, dtype=np.int64)
        if s.tones_on:
            interval = s.tone_interval_s * s.sample_rate
            pos = np.mod(idx, interval)
            in_tone = (idx >= 0) & (pos < self._tone_len)
            sig = np.where(in_tone, self._tone_amp * np.sin(2 * np.pi * s.tone_hz * pos / s.sample_rate), 0.0)
        else:
            sig = np.zeros(n)
        mode = s.speech_mode
        if mode == "voice":
            voice, _ = self._voice()
            sig = sig + np.where(idx >= 0, self._speech_amp * voice[np.mod(idx, len(voice))], 0.0)
        elif mode == "band-noise":
            t = idx / s.sample_rate
            envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) * (np.mod(t, 3.0) < 2.0)
            rng = np.random.default_rng((s.seed, 7, first + (1 << 40)))  # mid mic: first may be < 0
            band = np.convolve(rng.normal(0, 1, n + 15), np.hanning(16), mode="valid")[:n]
            sig = sig + self._tone_amp * 0.3 * envelope * band
        return sig

    def _block(self, k: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        s = self.settings
        first, n = k * s.blocksize, s.blocksize
        rng = np.random.default_rng((s.seed, k))
        chans = [self._near(first, n) + rng.normal(0, self._noise_amp, n)]
        if s.channels == 2:
            mid = self._mid_gain * self._near(first - self._mid_delay, n)
            chans.append(mid + rng.normal(0, self._noise_amp, n))
        block = np.stack(chans, axis=1)
        return np.clip(np.rint(block), -32768, 32767).astype(np.int16)

    def _callback_delay_ns(self, k: int) -> int:
        mean_ms = self.settings.callback_jitter_ms
        if mean_ms <= 0:
            return 0
        rng = np.random.default_rng((self.settings.seed, 11, k))
        return round(rng.exponential(mean_ms * 1e6))

    def _read_raw(self, timeout: float) -> RawSample | None:
        s = self.settings
        bs = s.blocksize
        self._plan.check_connected(self.name)
        now = time.monotonic_ns()
        # Blocks older than buffer_s are gone, like audio overwritten in a full ring buffer.
        assert self._t0 is not None
        available = int((now - self._t0) / 1e9 * self._rate_eff) // bs  # complete blocks
        keep = max(1, int(s.buffer_s * s.sample_rate) // bs)
        skipped, self._reopen_skip = self._reopen_skip, 0
        if available - self._next > keep:
            skipped += available - keep - self._next
            self._next = available - keep
        k, lost = self._plan.first_kept(self._next)
        if lost:
            self._events.append("drop")
            skipped += lost
            self._next = k
        stall = self._plan.stall_ns(k)
        if stall:
            self._stall_until = self._true_ns((k + 1) * bs) + stall
            self._events.append("stall")
        ready_ns = self._true_ns((k + 1) * bs)
        # a stalled callback holds the block back; its stamp (from the device clock) stays right
        wait_ns = max(ready_ns, self._stall_until if self._stall_until else 0) - now
        if wait_ns > timeout * 1e9:
            time.sleep(timeout)
            self._reopen_skip = skipped  # not delivered yet: counted with the block that is
            return None
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        # The simulated callback fires when the block is ready plus a seeded, one-sided delay,
        # whenever the reader comes: stamps and the drift fit are reproducible on a busy machine.
        arrival = ready_ns + self._callback_delay_ns(k)
        first = k * bs
        self._clock.add(first + bs, arrival)
        self._next = k + 1
        self._stall_until = 0
        tones = [
            {"index": i, "mid_index": i + self._mid_delay, "t_truth_ns": self._true_ns(i)}
            for i in (tone_onsets(s, first, first + bs) if s.tones_on else [])
        ]
        meta: dict[str, Any] = {
            "t_truth_ns": self._true_ns(first),
            "tones": tones,
            "sample_rate": s.sample_rate,
            "drift_ppm_fit": self._clock.drift_ppm(),
            "clock_segment": self._clock.segment,
        }
        if s.speech_mode == "voice":
            meta["speech"] = [list(seg) for seg in self.speech_segments(first, first + bs)]
            meta["speech_dbfs"] = s.speech_dbfs
            meta["snr_db"] = s.speech_dbfs - s.noise_dbfs
        if self._events:
            meta["faults"], self._events = self._events, []
        self._plan.delivered()
        return RawSample(
            payload=self._block(k),
            t_mono_ns=self._clock.mono_ns(first),
            device_time=first + round(self._plan.clock_offset(k) * s.sample_rate),
            device_seq=k,
            skipped=skipped,
            meta=meta,
        )

    def _close(self) -> None:
        pass

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {
            "sample_rate": s.sample_rate,
            "channels": s.channels,
            "channel_names": ["near", "mid"][: s.channels],
            "dtype": "int16",
            "blocksize": s.blocksize,
            "mid_delay_samples": self._mid_delay,
        }
