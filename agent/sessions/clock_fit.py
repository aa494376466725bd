"""Device clocks against the host clock: straight-line fits of device time to monotonic stamps.

Host stamps are only ever late (a thread woke late, a block waited in a queue), never early, so
each fit follows the *lower edge* of the stamps: ``envelope_points`` (the earliest stamp of each
second) for cameras, ``lower_fit`` (the earlier half) for audio arrivals and short runs. Each fit's
rate error comes with an uncertainty (``drift_estimate``). Used by ``agent.sessions.alignment``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LineFit:
    """``t_mono = t0 + slope * (x - x0)`` fitted by least squares."""

    x0: float
    t0: float
    slope: float
    residual_rms_ns: float
    points: int
    span: float
    slope_se: float = 0.0  # standard error of the slope, from the residuals

    def at(self, x: float) -> float:
        return self.t0 + self.slope * (x - self.x0)

    def inverse(self, t: float) -> float:
        return self.x0 + (t - self.t0) / self.slope


def lower_fit(x: np.ndarray[Any, Any], t: np.ndarray[Any, Any], rounds: int = 1) -> LineFit | None:
    """A line along the lower edge of (x, t): stamps are only ever *late* (a thread woke late, a
    block waited in a queue), never early, so each round refits through the earlier half of the
    points. Plain least squares would follow the mean delay, which moves with CPU load.
    """
    fit = fit_line(x, t)
    for _ in range(rounds):
        if fit is None or len(x) < 8:
            break
        resid = t.astype(np.float64) - (fit.t0 + fit.slope * (x.astype(np.float64) - fit.x0))
        keep = resid <= np.percentile(resid, 50)
        better = fit_line(x[keep], t[keep])
        if better is None:
            break
        x, t, fit = x[keep], t[keep], better
    return fit


def envelope_points(
    x: np.ndarray[Any, Any], t: np.ndarray[Any, Any], bin_ns: int = 1_000_000_000
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The earliest stamp (relative to a first fit) of each ``bin_ns`` of host time.

    Host stamps are late in bursts while the machine is loaded, so a whole stretch of them can sit
    above the true line; within each second, though, one frame is nearly always on time. A line
    through only those stays on the device's clock (within a few ppm over 30 s on a loaded 2-core
    machine, where a fit through the earlier half of all stamps was off by up to 100 ppm).
    """
    for _ in range(2):
        fit = fit_line(x, t)
        if fit is None:
            break
        resid = t.astype(np.float64) - (fit.t0 + fit.slope * (x.astype(np.float64) - fit.x0))
        bins = (t - t.min()) // bin_ns
        order = np.lexsort((resid, bins))
        first = np.ones(len(order), dtype=bool)
        first[1:] = bins[order][1:] != bins[order][:-1]
        pick = np.sort(order[first])
        if len(pick) < 3:
            break
        x, t = x[pick], t[pick]
    return x, t


def envelope_fit(x: np.ndarray[Any, Any], t: np.ndarray[Any, Any]) -> LineFit | None:
    """``fit_line`` through ``envelope_points``."""
    return fit_line(*envelope_points(x, t))


def fit_line(x: np.ndarray[Any, Any], t: np.ndarray[Any, Any]) -> LineFit | None:
    """Least-squares line through (x, t), centred for numerical stability; None below 2 points."""
    if len(x) < 2 or float(np.ptp(x)) == 0:
        return None
    x0, t0 = float(x[0]), float(t[0])
    xs, ts = x.astype(np.float64) - x0, t.astype(np.float64) - t0
    xm, tm = xs.mean(), ts.mean()
    slope = float(((xs - xm) * (ts - tm)).sum() / ((xs - xm) ** 2).sum())
    intercept = tm - slope * xm
    resid = ts - (intercept + slope * xs)
    dof = max(1, len(x) - 2)
    slope_se = float(np.sqrt((resid**2).sum() / dof / ((xs - xm) ** 2).sum()))
    return LineFit(x0, t0 + intercept, slope, float(np.sqrt((resid**2).mean())), len(x), float(np.ptp(x)), slope_se)


MIN_ENVELOPE_POINTS = 10  # seconds of frames before a camera is fitted through its per-second envelope
MIN_DRIFT_SPAN_S = 20.0  # below this a drift estimate is reported but never judged significant
DRIFT_BLOCKS = 8  # contiguous blocks for the jackknife
DRIFT_COVERAGE = 4.0  # the interval is this many standard errors wide on each side


def drift_estimate(
    x: np.ndarray[Any, Any],
    t: np.ndarray[Any, Any],
    fit: LineFit,
    nominal: float,
    span_s: float,
    refit: Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any]], LineFit | None],
) -> dict[str, Any]:
    """A device clock's rate error in ppm with its uncertainty, and whether it is significant.

    ``x``, ``t`` are the points ``fit`` was made from (``refit`` makes it again from a subset). The
    uncertainty is ``DRIFT_COVERAGE`` times the larger of two standard errors: the fit's own (from
    its residuals) and a block jackknife (the fit redone without each eighth of the span in turn).
    Host stamps are late in bursts while the machine is loaded, so their errors are neither
    independent nor steady; the jackknife sees a stretch of late stamps that bends the line, where
    the residuals alone would claim a precision the data does not have. Four standard errors: on
    stamps recorded under load (``tests/agent/test_drift.py``) no zero-drift window came closer
    than 0.7 of the interval, while 50 ppm stands out from 30 s on. An estimate whose interval
    includes zero is "not significant"; below ``MIN_DRIFT_SPAN_S`` none is, and the note says why.
    """
    ppm = (nominal / fit.slope - 1.0) * 1e6
    formal = nominal / fit.slope**2 * fit.slope_se * 1e6
    jack = 0.0
    k = min(DRIFT_BLOCKS, len(x) // 4)
    if k >= 3:
        order = np.argsort(x, kind="stable")
        parts = np.array_split(order, k)
        estimates = []
        for i in range(k):
            keep = np.concatenate([p for j, p in enumerate(parts) if j != i])
            f = refit(x[keep], t[keep])  # the same fitting as ``fit`` was made with
            if f is not None:
                estimates.append((nominal / f.slope - 1.0) * 1e6)
        if len(estimates) >= 3:
            e = np.array(estimates)
            jack = float(np.sqrt((len(e) - 1) / len(e) * ((e - e.mean()) ** 2).sum()))
    uncertainty = DRIFT_COVERAGE * max(formal, jack)
    short = span_s < MIN_DRIFT_SPAN_S
    out: dict[str, Any] = {
        "drift_ppm": round(ppm, 3),
        "drift_uncertainty_ppm": round(uncertainty, 3),
        "drift_significant": bool(not short and abs(ppm) > uncertainty),
    }
    if short:
        out["drift_note"] = (
            f"{span_s:.0f} s of data: too short to tell drift from timing noise (needs {MIN_DRIFT_SPAN_S:.0f} s)"
        )
    elif not out["drift_significant"]:
        out["drift_note"] = f"not significant: {ppm:+.1f} ppm within ±{uncertainty:.1f} ppm of zero"
    return out
