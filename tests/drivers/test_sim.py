"""The simulated twins: real-time pacing, seeded content, ground truth, drift, drops."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers import Driver, Sample, open_driver, parse_device_settings
from drivers.audio_clock import IndexClock
from drivers.sim.microphone import tone_onsets
from drivers.sim.serial import waveform_value
from drivers.sim.thermal import celsius_to_ck


def sim(type_: str, **kw: object) -> Driver:  # type: ignore[type-arg]
    return open_driver(parse_device_settings({"name": "s", "type": type_, **kw}))


def read_n(drv: Driver, n: int) -> list[Sample]:  # type: ignore[type-arg]
    return [drv.read(2) for _ in range(n)]


def test_camera_paced_never_faster_than_real_time() -> None:
    with sim("sim-camera", fps=20, width=160, height=120) as cam:
        samples = read_n(cam, 10)
    truths = np.array([s.meta["t_truth_ns"] for s in samples])
    index = np.array([s.meta["frame_index"] for s in samples])
    assert index[0] == 0 and (np.diff(index) >= 1).all()  # a late reader may skip, never repeat
    assert np.allclose(truths - truths[0], index * 50e6, atol=1)
    assert cam.stats.drops == index[-1] - 9
    lag = np.array([s.t_mono_ns - s.meta["t_truth_ns"] for s in samples])
    assert (lag >= 0).all()  # never delivered before its capture time
    assert np.median(lag) < 10e6  # generous: CI machines are shared
    assert samples[0].payload.shape == (120, 160, 3)  # type: ignore[union-attr]
    assert samples[0].payload.dtype == np.uint8  # type: ignore[union-attr]
    assert [s.device_time for s in samples] == index.tolist()


def test_camera_is_seeded_and_draws_the_index() -> None:
    from drivers.sim.camera import render_frame

    a = render_frame(320, 240, 7, 123, seed=1)
    assert np.array_equal(a, render_frame(320, 240, 7, 123, seed=1))
    assert not np.array_equal(a, render_frame(320, 240, 8, 123, seed=1))
    assert not np.array_equal(a[:40], render_frame(320, 240, 7, 999_000_000_000, seed=1)[:40])


def test_late_reader_skips_and_counts_drops() -> None:
    with sim("sim-camera", fps=20, width=64, height=48) as cam:
        cam.read(1)
        time.sleep(0.5)
        sample = cam.read(1)
    assert sample.meta["frame_index"] >= 9
    assert cam.stats.drops == sample.meta["frame_index"] - 1
    assert cam.stats.gaps == 0


def test_thermal_is_uint16_centikelvin_with_a_warm_object() -> None:
    with sim("sim-thermal", fps=30, noise_ck=0) as ir:
        sample = ir.read(1)
        force = ir.settings_in_force()
    frame = sample.payload
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint16 and frame.shape == (120, 160)
    assert force["units"] == "centikelvin" and force["radiometric"] is True
    x, y = round(sample.meta["object_x"]), round(sample.meta["object_y"])
    assert frame[y, x] == celsius_to_ck(36.0)
    background = np.median(frame)
    assert abs(background - celsius_to_ck(22.0)) <= 60


def test_serial_waveform_matches_formula() -> None:
    with sim("sim-serial", rate_hz=20, period_s=2.0) as sensor:
        samples = read_n(sensor, 5)
    for s in samples:
        assert s.payload["temperature_c"] == pytest.approx(  # type: ignore[index]
            waveform_value("temperature_c", s.meta["t_s"], 2.0)
        )
        assert s.meta["units"]["humidity_pct"] == "%"
    assert [s.device_time for s in samples] == list(range(5))


def test_microphone_tones_at_known_indices_and_mid_delay() -> None:
    with sim("sim-microphone", tone_interval_s=0.25, noise_dbfs=-90) as mic:
        samples = read_n(mic, 20)  # ~0.43 s
    audio = np.concatenate([s.payload for s in samples])  # type: ignore[misc]
    assert audio.dtype == np.int16 and audio.shape[1] == 2
    tones = [t for s in samples for t in s.meta["tones"]]
    assert [t["index"] for t in tones] == [0, 12000]
    delay = tones[0]["mid_index"] - tones[0]["index"]
    assert delay == 139
    near_start = int(np.argmax(np.abs(audio[:, 0]) > 1000))
    mid_start = int(np.argmax(np.abs(audio[:, 1]) > 500))
    assert near_start <= 3 and abs(mid_start - delay) <= 3
    settings = parse_device_settings({"name": "s", "type": "sim-microphone"})
    assert tone_onsets(settings, 1, 48001) == [48000]  # type: ignore[arg-type]


def test_microphone_stamps_track_truth_and_estimate_drift() -> None:
    with sim("sim-microphone", drift_ppm=1000, blocksize=256) as mic:
        samples = read_n(mic, 520)  # ~2.8 s of device time
    err = np.array([s.t_mono_ns - s.meta["t_truth_ns"] for s in samples[-100:]])
    assert np.abs(err).max() < 0.5e6  # stamped within 0.5 ms of the true first-frame time
    assert samples[-1].meta["drift_ppm_fit"] == pytest.approx(1000, abs=50)
    assert [s.device_time for s in samples[:3]] == [0, 256, 512]


def test_index_clock_fits_drift_exactly_without_jitter() -> None:
    clock = IndexClock(48000, window_s=10, min_span_s=1)
    rate = 48000 * (1 + 50e-6)
    for k in range(1, 300):
        clock.add(k * 1024, round(5e9 + k * 1024 / rate * 1e9))
    assert clock.drift_ppm() == pytest.approx(50, abs=0.5)
    assert abs(clock.mono_ns(0) - 5e9) < 1000
    clock.reset()
    assert clock.segment == 1 and clock.points == 0


def test_reopen_keeps_the_timeline() -> None:
    cam = sim("sim-camera", fps=50, width=32, height=32)
    first = cam.read(1)
    cam.close()
    time.sleep(0.1)
    cam.open()
    later = cam.read(1)
    cam.close()
    assert later.meta["frame_index"] > first.meta["frame_index"] + 3
