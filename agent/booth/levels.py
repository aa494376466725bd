"""Live levels of every booth microphone, with the warnings an operator acts on before QC does.

The meter is fed each audio block on the capture thread (a few microseconds of numpy per block)
and read by the UI about ten times a second. Per microphone (a channel of an audio stream) it
keeps the last few seconds of per-block peak and RMS and derives:

- ``clipping``: a run of ``clip_run`` full-scale samples within the last ``hold_s`` (the take will
  fail QC's clipping check — lower the gain);
- ``too_quiet``: something is happening on the mic (block RMS well above its own noise floor) but
  nothing in the last ``quiet_window_s`` peaked above ``min_peak_dbfs`` ("can't hear you" — the
  take would fail QC's peak check);
- ``silent``: the loudest block in the last ``quiet_window_s`` is below ``silence_rms_dbfs`` (mic
  off, muted or unplugged when someone should be speaking).

The thresholds default to the QC profile's, so the meter warns about exactly what QC would fail.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ChannelLevel", "LevelMeter", "LevelThresholds", "dbfs"]

FULL_SCALE = 32768.0
HISTORY_S = 6.0
FLOOR_DBFS = -96.0  # below 16-bit resolution: treated as digital silence
ACTIVITY_ABOVE_FLOOR_DB = 12.0
HISTORY_BLOCKS = 20_000  # block RMS values kept for the noise floor of a mic test or take (minutes)


def dbfs(amplitude: float) -> float:
    """Amplitude (of 16-bit full scale) in dBFS; -inf for digital silence."""
    return 20.0 * math.log10(amplitude / FULL_SCALE) if amplitude > 0 else -math.inf


@dataclass(frozen=True, slots=True)
class LevelThresholds:
    """When the meter warns (defaults: the ``booth-speech`` QC profile)."""

    min_peak_dbfs: float = -30.0
    silence_rms_dbfs: float = -60.0
    clip_run: int = 3
    hold_s: float = 1.5
    quiet_window_s: float = 2.5
    stale_s: float = 1.0

    @classmethod
    def from_profile(cls, profile: Any) -> LevelThresholds:
        """Take the peak, silence and clipping thresholds of an ``AudioProfile``."""
        default = cls()
        peak, silence = profile.min_peak_dbfs, profile.silence_max_rms_dbfs
        return cls(
            min_peak_dbfs=default.min_peak_dbfs if peak is None else float(peak),
            silence_rms_dbfs=default.silence_rms_dbfs if silence is None else float(silence),
            clip_run=int(profile.clip_run_samples),
        )


@dataclass(frozen=True, slots=True)
class ChannelLevel:
    """What the UI shows for one microphone."""

    mic: str
    peak_dbfs: float  # the newest ~0.1 s
    hold_dbfs: float  # the loudest peak within hold_s
    rms_dbfs: float
    clipping: bool
    too_quiet: bool
    silent: bool
    stale: bool  # no audio arrived for stale_s: the stream stalled or closed

    @property
    def warning(self) -> str | None:
        if self.stale:
            return "no audio"
        if self.clipping:
            return "CLIPPING - lower the gain"
        if self.silent:
            return "silent - is the mic on?"
        if self.too_quiet:
            return "too quiet - can't hear you"
        return None


@dataclass
class _Channel:
    mic: str
    blocks: deque[tuple[float, float, float, bool]] = field(default_factory=deque)  # (t, peak, rms, clipped)
    since_reset_peak: float = 0.0
    since_reset_clips: int = 0
    rms_history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_BLOCKS))


class LevelMeter:
    """Per-microphone levels for every audio stream the booth records."""

    def __init__(self, thresholds: LevelThresholds | None = None, *, clock: Any = time.monotonic) -> None:
        self.thresholds = thresholds or LevelThresholds()
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, list[_Channel]] = {}
        self._last: dict[str, float] = {}

    def attach(self, stream: str, channel_names: list[str] | None, channels: int) -> None:
        """Name a stream's channels (``stream:near``, ``stream:mid``); blocks of unknown streams are ignored."""
        names = list(channel_names or [])[:channels]
        names += [f"ch{i}" for i in range(len(names), channels)]
        with self._lock:
            old = {c.mic: c for c in self._streams.get(stream, [])}
            self._streams[stream] = [old.get(f"{stream}:{n}") or _Channel(f"{stream}:{n}") for n in names]

    def mics(self) -> list[str]:
        with self._lock:
            return [c.mic for chans in self._streams.values() for c in chans]

    def feed(self, stream: str, block: np.ndarray[Any, Any]) -> None:
        """One block of int16 audio, shape (frames, channels) or (frames,)."""
        now = self._clock()
        data = block.reshape(-1, 1) if block.ndim == 1 else block
        if data.shape[0] == 0:
            return
        wide = data.astype(np.int32)
        peaks = np.abs(wide).max(axis=0)
        rms = np.sqrt(np.mean(np.square(wide, dtype=np.float64), axis=0))
        clipped = self._clipped(wide)
        cutoff = now - HISTORY_S
        with self._lock:
            chans = self._streams.get(stream)
            if chans is None:
                return
            self._last[stream] = now
            for i, chan in enumerate(chans[: data.shape[1]]):
                chan.blocks.append((now, float(peaks[i]), float(rms[i]), bool(clipped[i])))
                while chan.blocks and chan.blocks[0][0] < cutoff:
                    chan.blocks.popleft()
                chan.since_reset_peak = max(chan.since_reset_peak, float(peaks[i]))
                chan.since_reset_clips += int(clipped[i])
                chan.rms_history.append(float(rms[i]))

    def _clipped(self, wide: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Per channel: does the block hold a run of ``clip_run`` samples at full scale?"""
        run = self.thresholds.clip_run
        full = (wide >= 32767) | (wide <= -32768)
        if run <= 1:
            return np.asarray(full.any(axis=0))
        out = np.zeros(wide.shape[1], dtype=bool)
        for c in np.flatnonzero(full.any(axis=0)):
            counts = np.convolve(full[:, c].astype(np.int8), np.ones(run, dtype=np.int8), mode="valid")
            out[c] = bool((counts >= run).any())
        return out

    def reset(self) -> None:
        """Start a new measurement (a mic test or a take): ``summary`` covers only what follows."""
        with self._lock:
            for chans in self._streams.values():
                for chan in chans:
                    chan.since_reset_peak = 0.0
                    chan.since_reset_clips = 0
                    chan.rms_history.clear()

    def levels(self) -> list[ChannelLevel]:
        """The current level and warnings of every microphone."""
        th = self.thresholds
        now = self._clock()
        out = []
        with self._lock:
            for stream, chans in self._streams.items():
                stale = now - self._last.get(stream, -math.inf) > th.stale_s
                for chan in chans:
                    out.append(self._level(chan, now, stale))
        return out

    def _level(self, chan: _Channel, now: float, stale: bool) -> ChannelLevel:
        th = self.thresholds
        recent = [b for b in chan.blocks if b[0] >= now - 0.1] or list(chan.blocks)[-1:]
        held = [b for b in chan.blocks if b[0] >= now - th.hold_s]
        window = [b for b in chan.blocks if b[0] >= now - th.quiet_window_s]
        peak = max((b[1] for b in recent), default=0.0)
        rms = max((b[2] for b in recent), default=0.0)
        floor = max(FLOOR_DBFS, min((dbfs(b[2]) for b in chan.blocks), default=FLOOR_DBFS))
        loudest_rms = dbfs(max((b[2] for b in window), default=0.0))
        window_peak = dbfs(max((b[1] for b in window), default=0.0))
        # A full window is needed before judging "quiet" or "silent": the first blocks prove nothing.
        judged = bool(chan.blocks) and now - chan.blocks[0][0] >= th.quiet_window_s
        silent = judged and loudest_rms < th.silence_rms_dbfs
        active = loudest_rms >= floor + ACTIVITY_ABOVE_FLOOR_DB
        return ChannelLevel(
            mic=chan.mic,
            peak_dbfs=dbfs(peak),
            hold_dbfs=dbfs(max((b[1] for b in held), default=0.0)),
            rms_dbfs=dbfs(rms),
            clipping=any(b[3] for b in held),
            too_quiet=judged and not silent and active and window_peak < th.min_peak_dbfs,
            silent=silent,
            stale=stale,
        )

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Since the last ``reset``, per mic: loudest peak, noise floor (10th percentile of block RMS), clips."""
        out: dict[str, dict[str, float | int | None]] = {}
        with self._lock:
            for chans in self._streams.values():
                for chan in chans:
                    hist = chan.rms_history
                    floor = dbfs(float(np.percentile(hist, 10))) if hist else None
                    peak = dbfs(chan.since_reset_peak) if hist else None
                    out[chan.mic] = {
                        "peak_dbfs": None if peak is None or math.isinf(peak) else round(peak, 1),
                        "noise_floor_dbfs": None if floor is None or math.isinf(floor) else round(floor, 1),
                        "clipped_blocks": chan.since_reset_clips,
                        "blocks": len(hist),
                    }
        return out
