"""Thermal-frame screening on synthetic radiometric frames (160x120, Lepton-like)."""

from __future__ import annotations

import pathlib

import numpy as np
import numpy.typing as npt
import pytest

from models import MediaError, Screener


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener(model_dir=pathlib.Path("/nonexistent"))


def scene(seed: int = 0, units: str = "centikelvin") -> npt.NDArray[np.uint16]:
    """A room at 22-25 °C with a ~62 °C hot spot (a warm breaker) and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:160]
    celsius = 22 + 3 * xx / 160 + 38 * np.exp(-((xx - 100) ** 2 + (yy - 60) ** 2) / 200)
    celsius += rng.normal(0, 0.05, celsius.shape)
    offset = 273.15 if units == "centikelvin" else 0.0
    frame: npt.NDArray[np.uint16] = np.round((celsius + offset) * 100).astype(np.uint16)
    return frame


def test_good_frame_passes_with_temperatures(screener: Screener) -> None:
    result = screener.thermal(scene(0), previous=scene(1))
    assert result.verdict == "pass", result.reasons
    assert result.metrics["min_c"] == pytest.approx(22, abs=0.5)
    assert result.metrics["max_c"] == pytest.approx(61.9, abs=0.5)
    assert result.metrics["frozen"] == 0


def test_centicelsius_units(screener: Screener) -> None:
    result = screener.thermal(scene(0, "centicelsius"), {"units": "centicelsius"})
    assert result.metrics["max_c"] == pytest.approx(61.9, abs=0.5)
    wrong = screener.thermal(scene(0, "centicelsius"))  # read as centikelvin: ~-250 °C
    assert wrong.verdict == "fail"
    assert any("check units" in r for r in wrong.reasons)


def test_flat_frame_fails(screener: Screener) -> None:
    flat = np.full((120, 160), 29515, np.uint16)
    result = screener.thermal(flat)
    assert result.verdict == "fail"
    assert any(r.startswith("std") and "flat frame" in r for r in result.reasons)


def test_frozen_frame_fails(screener: Screener) -> None:
    frame = scene(0)
    result = screener.thermal(frame, previous=frame.copy())
    assert result.metrics["frozen"] == 1
    assert any("frozen frame" in r for r in result.reasons)


def test_dead_stuck_and_saturated_pixels(screener: Screener) -> None:
    frame = scene(0)
    frame[::10, ::10] = 0  # 192 dead pixels = 1 %
    dead = screener.thermal(frame)
    assert dead.verdict == "fail" and any(r.startswith("dead pixels") for r in dead.reasons)
    frame = scene(0)
    frame[5:120:20, 5:160:20] += 3000  # isolated +30 °C pixels
    stuck = screener.thermal(frame)
    assert stuck.verdict == "review" and any(r.startswith("stuck pixels") for r in stuck.reasons)
    frame = scene(0)
    frame[50:70, 90:110] = 65535
    hot = screener.thermal(frame)
    assert any(r.startswith("saturated") for r in hot.reasons)


def test_settling_after_ffc_is_review(screener: Screener) -> None:
    result = screener.thermal(scene(0), {"ffc_age_s": 0.5})
    assert result.verdict == "review"
    assert any("settling" in r for r in result.reasons)


@pytest.mark.parametrize(
    ("raw", "meta", "message"),
    [
        (np.zeros((120, 160), np.uint8), {}, "uint16"),
        (np.zeros((2, 2), np.uint16), {}, "at least 3x3"),
        (np.zeros((120, 160), np.uint16), {"units": "fahrenheit"}, "units"),
    ],
)
def test_bad_thermal_input(screener: Screener, raw: object, meta: dict[str, str], message: str) -> None:
    with pytest.raises(MediaError, match=message):
        screener.thermal(raw, meta)  # type: ignore[arg-type]


def test_previous_of_other_size_is_an_error(screener: Screener) -> None:
    with pytest.raises(MediaError, match="previous frame"):
        screener.thermal(scene(0), previous=scene(0)[:60])
