"""``sim-microphone``: a near + mid microphone pair with tone bursts at known sample indices.

The simulated device clock runs ``drift_ppm`` off the host clock: block ``k`` becomes available at
``t0 + (k + 1) * blocksize / (rate * (1 + drift))``, and its callback "fires" a seeded,
exponentially distributed ``callback_jitter_ms`` later. The driver stamps it exactly as the real
microphone driver does, through ``IndexClock``, so tests of drift estimation and audio<->video
alignment exercise the production path. Content is a pure function of the sample index (noise is
seeded per block), so a dropped block never shifts later content.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from drivers.audio_clock import IndexClock
from drivers.base import Driver, RawSample
from drivers.settings.sim import SimMicrophoneSettings

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
    ``{"index", "mid_index", "t_truth_ns"}`` for bursts starting in the block), ``drift_ppm_fit``.
    """

    modality = "audio"

    def __init__(self, settings: SimMicrophoneSettings) -> None:
        super().__init__(settings)
        s = settings
        self._rate_eff = s.sample_rate * (1.0 + s.drift_ppm * 1e-6)  # frames per host second
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
        if self._t0 is None:
            self._t0 = time.monotonic_ns()
        else:
            self._clock.reset()

    def _true_ns(self, index: float) -> int:
        assert self._t0 is not None
        return self._t0 + round(index / self._rate_eff * 1e9)

    def _near(self, first: int, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Near-channel signal for indices ``[first, first + n)`` (may start below zero)."""
        s = self.settings
        idx = np.arange(first, first + n, dtype=np.int64)
        interval = s.tone_interval_s * s.sample_rate
        pos = np.mod(idx, interval)
        in_tone = (idx >= 0) & (pos < self._tone_len)
        sig = np.where(in_tone, self._tone_amp * np.sin(2 * np.pi * s.tone_hz * pos / s.sample_rate), 0.0)
        if s.speech_like:
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
        now = time.monotonic_ns()
        # Blocks older than buffer_s are gone, like audio overwritten in a full ring buffer.
        assert self._t0 is not None
        available = int((now - self._t0) / 1e9 * self._rate_eff) // bs  # complete blocks
        keep = max(1, int(s.buffer_s * s.sample_rate) // bs)
        skipped = 0
        if available - self._next > keep:
            skipped = available - keep - self._next
            self._next += skipped
        k = self._next
        ready_ns = self._true_ns((k + 1) * bs)
        wait_ns = ready_ns - now
        if wait_ns > timeout * 1e9:
            time.sleep(timeout)
            return None
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        # The simulated callback fires when the block is ready plus a seeded, one-sided delay,
        # whenever the reader comes: stamps and the drift fit are reproducible on a busy machine.
        arrival = ready_ns + self._callback_delay_ns(k)
        first = k * bs
        self._clock.add(first + bs, arrival)
        self._next = k + 1
        tones = [
            {"index": i, "mid_index": i + self._mid_delay, "t_truth_ns": self._true_ns(i)}
            for i in tone_onsets(s, first, first + bs)
        ]
        meta: dict[str, Any] = {
            "t_truth_ns": self._true_ns(first),
            "tones": tones,
            "sample_rate": s.sample_rate,
            "drift_ppm_fit": self._clock.drift_ppm(),
            "clock_segment": self._clock.segment,
        }
        return RawSample(
            payload=self._block(k),
            t_mono_ns=self._clock.mono_ns(first),
            device_time=first,
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
