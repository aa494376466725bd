"""Flat-field-correction settling detected from synthetic 16-bit radiometric frame sequences."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest

from models import MediaError, Screener
from models.thermal_metrics import celsius
from models.thermal_settling import Settling, SettlingTracker

RATE_HZ = 9.0  # a Lepton's frame rate
FFC_AT_S = 3.0
STEP_C = 0.8  # common offset jump when the shutter opens again
DRIFT_C = 0.6  # further offset change while the sensor re-equilibrates ...
TAU_S = 1.0  # ... exponentially, with this time constant


def ffc_offset(t: float) -> float:
    if t < FFC_AT_S:
        return 0.0
    return STEP_C + DRIFT_C * (1.0 - math.exp(-(t - FFC_AT_S) / TAU_S))


def no_offset(_t: float) -> float:
    return 0.0


def ffc_drift(t: float) -> float:
    return 0.0 if t < FFC_AT_S else DRIFT_C / TAU_S * math.exp(-(t - FFC_AT_S) / TAU_S)


def frames(
    offset: Callable[[float], float], seconds: float, seed: int = 0, walker: bool = False
) -> Iterator[tuple[float, npt.NDArray[np.uint16]]]:
    """(t, centikelvin uint16 frame) at 9 Hz: a 160x120 room with a warm breaker, sensor noise,
    a common offset ``offset(t)`` and optionally a person (+12 °C, 40x30 px) who steps into view
    at t = 2 s and walks across."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:160]
    room = 22 + 3 * xx / 160 + 38 * np.exp(-((xx - 100) ** 2 + (yy - 60) ** 2) / 200)
    for i in range(int(seconds * RATE_HZ)):
        t = i / RATE_HZ
        celsius_frame = room + offset(t) + rng.normal(0, 0.05, room.shape)
        celsius_frame += 0.2 * t * np.exp(-((xx - 100) ** 2 + (yy - 60) ** 2) / 50)  # breaker warming
        if walker and t >= 2.0:
            left = int(t * 25) % 120
            celsius_frame[60:100, left : left + 30] += 12.0
        yield t, np.round((celsius_frame + 273.15) * 100).astype(np.uint16)


def track(sequence: Iterator[tuple[float, npt.NDArray[np.uint16]]]) -> list[tuple[float, Settling]]:
    tracker = SettlingTracker()
    return [(t, tracker.update(celsius(raw, "centikelvin"), t)) for t, raw in sequence]


def at(states: list[tuple[float, Settling]], t: float) -> Settling:
    return min(states, key=lambda s: abs(s[0] - t))[1]


def test_a_steady_sensor_has_no_step_and_no_drift() -> None:
    states = track(frames(no_offset, 6.0, walker=True))
    assert all(s.step_age_s is None for _, s in states)
    drifts = [s.drift_c_per_s for _, s in states if s.drift_c_per_s is not None]
    assert len(drifts) > 40 and max(drifts) < 0.01


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ffc_step_and_drift_are_found_and_settle(sign: float) -> None:
    states = track(frames(lambda t: sign * ffc_offset(t), 10.0, seed=1))
    first_after = min(t for t, _ in states if t >= FFC_AT_S)
    step = at(states, first_after)
    assert step.step_age_s == 0.0
    assert step.offset_step_c == pytest.approx(sign * STEP_C, abs=0.02)
    assert all(s.step_age_s is None for t, s in states if t < FFC_AT_S)
    soon = at(states, FFC_AT_S + 1.0)
    assert soon.step_age_s == pytest.approx(1.0, abs=0.12)
    assert soon.drift_c_per_s is not None and soon.drift_c_per_s > 0.05
    # over the 2 s window ending at t the slope is the mean derivative over [t - 2, t]
    for t in (6.0, 7.0):
        expected = (ffc_offset(t) - ffc_offset(t - 2.0)) / 2.0
        assert at(states, t).drift_c_per_s == pytest.approx(expected, rel=0.25)
    late = at(states, 9.8)
    assert late.step_age_s == pytest.approx(6.8, abs=0.12)
    assert late.drift_c_per_s is not None and late.drift_c_per_s < 0.05 and ffc_drift(9.8) < 0.05


def test_screener_reviews_frames_while_settling(tmp_path: pathlib.Path) -> None:
    screener = Screener(model_dir=tmp_path)
    tracker = SettlingTracker()
    verdicts: dict[float, tuple[str, list[str]]] = {}
    for t, raw in frames(ffc_offset, 10.0, seed=2):
        result = screener.thermal(raw, {"t_s": t}, tracker=tracker)
        verdicts[round(t, 2)] = (result.verdict, result.reasons)
    before = verdicts[max(k for k in verdicts if k < FFC_AT_S)]
    assert before[0] == "pass", before
    settling = verdicts[min(k for k in verdicts if k >= FFC_AT_S + 1.0)]
    assert settling[0] == "review"
    assert any(r.startswith("time since offset step") for r in settling[1]), settling
    assert any(r.startswith("offset drift") and "°C/s" in r for r in settling[1]), settling
    assert verdicts[max(verdicts)][0] == "pass", verdicts[max(verdicts)]


def test_tracker_input_errors(tmp_path: pathlib.Path) -> None:
    screener = Screener(model_dir=tmp_path)
    (t0, first), (t1, second) = list(frames(no_offset, 0.3))[:2]
    tracker = SettlingTracker()
    with pytest.raises(MediaError, match="t_s"):
        screener.thermal(first, {}, tracker=tracker)
    screener.thermal(second, {"t_s": t1}, tracker=tracker)
    with pytest.raises(MediaError, match="not after"):
        screener.thermal(first, {"t_s": t0}, tracker=tracker)
    with pytest.raises(MediaError, match="new tracker"):
        screener.thermal(first[:60], {"t_s": 5.0}, tracker=tracker)
    with pytest.raises(ValueError, match="positive"):
        SettlingTracker(step_c=0)
