"""Sample index -> host monotonic time, fitted from the arrival times of audio blocks.

PortAudio's own timestamps use a different clock on every host API (ALSA, PulseAudio, JACK), so
they cannot be trusted to line audio up with video. What every backend does give is: a block whose
last frame has index ``i`` reached us at monotonic time ``t``. Fitting ``t = a + b * i`` by least
squares over a sliding window averages out callback jitter and tracks the device clock's drift
(``b`` differs from ``1e9 / rate`` by the drift). Until the window spans ``min_span_s`` the nominal
slope is used, because a slope fitted over a few blocks is noisier than the drift it measures.

The least-squares line runs through the *mean* arrival delay, but callbacks are only ever late
(scheduling, a busy CPU), never early, so the line is shifted down to the lower envelope of the
last ``envelope_points`` residuals: the least-delayed recent block is the best evidence of when
frames really arrive. On a loaded machine this removes most of the mean scheduling delay.
"""

from __future__ import annotations

import itertools
from collections import deque

__all__ = ["IndexClock"]


class IndexClock:
    """Least-squares fit of arrival time against sample index over a sliding window.

    The sums are kept incrementally as exact Python integers (relative to the segment's first
    point), so each block costs O(1) and hours of samples lose no precision.
    """

    def __init__(
        self,
        sample_rate: float,
        *,
        window_s: float = 30.0,
        min_span_s: float = 2.0,
        envelope_points: int = 64,
    ) -> None:
        self.sample_rate = sample_rate
        self._envelope = envelope_points
        self.nominal_ns_per_frame = 1e9 / sample_rate
        self._window = round(window_s * sample_rate)
        self._min_span = round(min_span_s * sample_rate)
        self._points: deque[tuple[int, int]] = deque()
        self._ref: tuple[int, int] | None = None  # (index, ns) all sums are relative to
        self._sx = self._sy = self._sxx = self._sxy = 0
        self._fit: tuple[float, float] | None = None  # (intercept, slope) relative to _ref
        self.segment = 0  # bumped by reset(): a discontinuity (overflow, reopen)

    def reset(self) -> None:
        """Forget the history (after an overflow or a reopen the relation restarts)."""
        self._points.clear()
        self._ref = None
        self._sx = self._sy = self._sxx = self._sxy = 0
        self._fit = None
        self.segment += 1

    def _accumulate(self, index: int, t_ns: int, sign: int) -> None:
        assert self._ref is not None
        x, y = index - self._ref[0], t_ns - self._ref[1]
        self._sx += sign * x
        self._sy += sign * y
        self._sxx += sign * x * x
        self._sxy += sign * x * y

    def add(self, end_index: int, t_mono_ns: int) -> None:
        """Record that the frame just before ``end_index`` arrived at ``t_mono_ns``."""
        if self._ref is None:
            self._ref = (end_index, t_mono_ns)
        self._points.append((end_index, t_mono_ns))
        self._accumulate(end_index, t_mono_ns, 1)
        while end_index - self._points[0][0] > self._window:
            self._accumulate(*self._points.popleft(), -1)
        self._fit = None

    @property
    def points(self) -> int:
        """Number of blocks in the window."""
        return len(self._points)

    def _solve(self) -> tuple[float, float]:
        if self._fit is not None:
            return self._fit
        if self._ref is None or not self._points:
            raise ValueError("no audio blocks yet: nothing to fit")
        n = len(self._points)
        span = self._points[-1][0] - self._points[0][0]
        denominator = n * self._sxx - self._sx * self._sx
        if span < self._min_span or denominator <= 0:
            slope = self.nominal_ns_per_frame
        else:
            slope = (n * self._sxy - self._sx * self._sy) / denominator
        intercept = (self._sy - slope * self._sx) / n
        ref_idx, ref_t = self._ref
        recent = list(itertools.islice(reversed(self._points), self._envelope))
        intercept += min((t - ref_t) - slope * (i - ref_idx) - intercept for i, t in recent)
        self._fit = (intercept, slope)
        return self._fit

    def mono_ns(self, index: int) -> int:
        """Fitted monotonic time of frame ``index``."""
        intercept, slope = self._solve()
        assert self._ref is not None
        return self._ref[1] + round(intercept + slope * (index - self._ref[0]))

    def drift_ppm(self) -> float:
        """Device clock rate error against the host (positive: device runs fast)."""
        _, slope = self._solve()
        return (self.nominal_ns_per_frame / slope - 1.0) * 1e6
