"""Sample index -> host monotonic time, fitted from the arrival times of audio blocks.

PortAudio's own timestamps use a different clock on every host API (ALSA, PulseAudio, JACK), so
they cannot be trusted to line audio up with video. What every backend does give is: a block whose
last frame has index ``i`` reached us at monotonic time ``t``. Fitting ``t = a + b * i`` by least
squares over a sliding window averages out callback jitter and tracks the device clock's drift
(``b`` differs from ``1e9 / rate`` by the drift). Until the window spans ``min_span_s`` the nominal
slope is used, because a slope fitted over a few blocks is noisier than the drift it measures.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["IndexClock"]


class IndexClock:
    """Least-squares fit of arrival time against sample index over a sliding window."""

    def __init__(self, sample_rate: float, *, window_s: float = 30.0, min_span_s: float = 2.0):
        self.sample_rate = sample_rate
        self.nominal_ns_per_frame = 1e9 / sample_rate
        self._window = round(window_s * sample_rate)
        self._min_span = round(min_span_s * sample_rate)
        self._points: deque[tuple[int, int]] = deque()
        self._fit: tuple[int, int, float, float] | None = None  # (idx0, t0, intercept, slope)
        self.segment = 0  # bumped by reset(): a discontinuity (overflow, reopen)

    def reset(self) -> None:
        """Forget the history (after an overflow or a reopen the relation restarts)."""
        self._points.clear()
        self._fit = None
        self.segment += 1

    def add(self, end_index: int, t_mono_ns: int) -> None:
        """Record that the frame just before ``end_index`` arrived at ``t_mono_ns``."""
        self._points.append((end_index, t_mono_ns))
        while self._points and end_index - self._points[0][0] > self._window:
            self._points.popleft()
        self._fit = None

    @property
    def points(self) -> int:
        """Number of blocks in the window."""
        return len(self._points)

    def _solve(self) -> tuple[int, int, float, float]:
        if self._fit is not None:
            return self._fit
        if not self._points:
            raise ValueError("no audio blocks yet: nothing to fit")
        idx0, t0 = self._points[0]
        arr = np.asarray(self._points, dtype=np.int64)
        x = (arr[:, 0] - idx0).astype(np.float64)
        y = (arr[:, 1] - t0).astype(np.float64)
        if x[-1] < self._min_span:
            slope = self.nominal_ns_per_frame
        else:
            xm, ym = x.mean(), y.mean()
            slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
        intercept = float((y - slope * x).mean())
        self._fit = (idx0, t0, intercept, slope)
        return self._fit

    def mono_ns(self, index: int) -> int:
        """Fitted monotonic time of frame ``index``."""
        idx0, t0, intercept, slope = self._solve()
        return t0 + round(intercept + slope * (index - idx0))

    def drift_ppm(self) -> float:
        """Device clock rate error against the host (positive: device runs fast)."""
        _, _, _, slope = self._solve()
        return (self.nominal_ns_per_frame / slope - 1.0) * 1e6
