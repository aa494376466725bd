"""Settling after a flat-field correction, detected from the frames themselves.

An uncooled microbolometer (FLIR Lepton, Boson and the like) closes its shutter now and then and
re-measures its per-pixel offsets (flat-field correction, FFC). When the shutter opens, the whole
image shifts by a common offset (a *step* between two consecutive frames), and for a few seconds
after it the offset keeps moving while the sensor re-equilibrates (a *drift*). Radiometric values
taken then are off by up to a few tenths of a degree. Many cameras do not report when they ran an
FFC, so we detect it:

* the offset change between consecutive frames is the interquartile mean of the pixelwise
  temperature difference: pixels all move together on a step or drift, while a person walking
  through or a breaker warming up changes a minority of pixels, which the trimmed mean ignores
  (and unlike a median it is not quantised to the sensor's 0.01 °C steps);
* a change of at least ``step_c`` between two frames is a step: ``step_age_s`` restarts there;
* the drift is the least-squares slope of the accumulated offset over the last ``window_s``
  seconds since the last step (the step itself excluded).

One ``SettlingTracker`` per thermal stream, fed every frame in order with its acquisition time
(monotonic seconds); frames a few seconds apart cannot tell a step from a slow scene change.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import numpy.typing as npt

from models.errors import MediaError

F32 = npt.NDArray[np.float32]
MIN_DRIFT_SAMPLES = 3
MIN_DRIFT_SPAN_S = 0.3


@dataclasses.dataclass(frozen=True)
class Settling:
    offset_step_c: float | None  # common offset change since the previous frame (°C)
    step_age_s: float | None  # seconds since the last offset step; None if none was seen
    drift_c_per_s: float | None  # |slope| of the offset over the last window; None: too few frames


def common_offset(current: F32, previous: F32) -> float:
    """Interquartile mean of ``current - previous`` (°C): the shift that most pixels share."""
    diff = (current - previous).ravel()
    n = diff.size
    lo, hi = n // 4, n - n // 4
    if hi - lo < 1:
        return float(diff.mean())
    middle = np.partition(diff, (lo, hi - 1))[lo:hi]
    return float(middle.mean(dtype=np.float64))


class SettlingTracker:
    """Per-stream state: the previous frame and the offset history since the last step."""

    def __init__(self, *, step_c: float = 0.25, window_s: float = 2.0) -> None:
        if step_c <= 0 or window_s <= 0:
            raise ValueError("step_c and window_s must be positive")
        self.step_c = step_c
        self.window_s = window_s
        self._previous: F32 | None = None
        self._t: float | None = None
        self._offset = 0.0
        self._step_t: float | None = None
        self._history: collections.deque[tuple[float, float]] = collections.deque()

    @property
    def last_t_s(self) -> float | None:
        """Time of the last frame fed, or None before the first."""
        return self._t

    def update(self, temps_c: F32, t_s: float) -> Settling:
        """Add one frame (°C, HxW) taken at ``t_s`` seconds and return the settling state."""
        frame = np.asarray(temps_c, dtype=np.float32)
        if self._previous is None or self._t is None:
            self._previous, self._t = frame, float(t_s)
            self._history.append((float(t_s), 0.0))
            return Settling(None, None, None)
        if frame.shape != self._previous.shape:
            raise MediaError(f"frame of shape {frame.shape} in a stream of {self._previous.shape}: use a new tracker")
        if not t_s > self._t:
            raise MediaError(f"frame time {t_s} s is not after the previous frame's {self._t} s")
        step = common_offset(frame, self._previous)
        self._previous, self._t = frame, float(t_s)
        if abs(step) >= self.step_c:
            self._step_t = float(t_s)
            self._offset = 0.0
            self._history.clear()  # the drift is measured after the step, not across it
        else:
            self._offset += step
        self._history.append((float(t_s), self._offset))
        while self._history and self._history[0][0] < t_s - self.window_s:
            self._history.popleft()
        age = None if self._step_t is None else float(t_s) - self._step_t
        return Settling(round(step, 4), age, self._drift())

    def _drift(self) -> float | None:
        if len(self._history) < MIN_DRIFT_SAMPLES:
            return None
        times = np.array([t for t, _ in self._history])
        offsets = np.array([o for _, o in self._history])
        span = float(times[-1] - times[0])
        if span < MIN_DRIFT_SPAN_S:
            return None
        centred = times - times.mean()
        slope = float(np.dot(centred, offsets - offsets.mean()) / np.dot(centred, centred))
        return abs(slope)
