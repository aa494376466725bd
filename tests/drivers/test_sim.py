"""The simulated twins: real-time pacing, seeded content, ground truth, drift, drops."""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

import numpy as np
import pytest
from pydantic import ValidationError

from drivers import Driver, Sample, open_driver, parse_device_settings
from drivers.audio_clock import IndexClock
from drivers.errors import DriverIOError, DriverTimeout
from drivers.sim.microphone import SimMicrophone, tone_onsets
from drivers.sim.serial import waveform_value
from drivers.sim.thermal import celsius_to_ck
from drivers.sim.voice import synthesize
from models import Screener, registry


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


# -- the voice ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_screener() -> Screener:
    env = os.environ.get("FIELDCAP_MODEL_DIR")
    folder = pathlib.Path(env) if env else pathlib.Path(tempfile.mkdtemp(prefix="fieldcap-models-"))
    statuses = registry.fetch(None, folder)
    assert all(s.state == "ok" for s in statuses), statuses
    return Screener(model_dir=folder)


@pytest.mark.parametrize("seed", [0, 3])
def test_microphone_voice_passes_booth_speech_qc_where_the_truth_says(full_screener: Screener, seed: int) -> None:
    """Every 2 s take of the voice loop (near + mid, as the demo records them) passes booth-speech,
    and the VAD's speech lies on the twin's ground-truth segments."""
    settings = parse_device_settings({"name": "s", "type": "sim-microphone", "speech_like": True, "seed": seed})
    mic = open_driver(settings)
    assert isinstance(mic, SimMicrophone)
    with mic:
        sample = mic.read(2)  # the driver API delivers the same content as _block below
        assert sample.meta["speech"] == []  # block 0 lies in the pause before the first phrase
        assert mic.speech_segments(0, 96000)[0][0] == 14400  # which lasts 0.3 s
        assert sample.meta["tones"] == [] and sample.meta["snr_db"] == 40.0
        take_blocks = round(2.0 * 48000 / 1024)
        audio = np.concatenate([mic._block(k) for k in range(4 * take_blocks + 1)])
    assert np.array_equal(audio[:1024], sample.payload)
    for i in range(4):
        first, stop = i * 96000, (i + 1) * 96000
        screening = full_screener.audio(audio[first:stop], 48000, "booth-speech")
        assert screening.verdict == "pass", (i, screening.reasons, screening.metrics)
        truth = [(max(a, first) - first, min(b, stop) - first) for a, b in mic.speech_segments(first, stop)]
        found = [(a.t_start_s, a.t_end_s) for a in screening.annotations if a.kind == "speech_segment"]
        assert truth and found
        for start, end in found:  # VAD speech lies on a true segment (VAD edges are ~32 ms chunks)
            assert any(start >= a / 48000 - 0.15 and end <= b / 48000 + 0.15 for a, b in truth), (found, truth)
        covered = sum(min(end, b / 48000) - max(start, a / 48000) for start, end in found for a, b in truth)
        assert covered >= 0.8 * sum(b - a for a, b in truth) / 48000


def test_voice_is_deterministic_and_band_noise_is_still_there() -> None:
    a = synthesize(1, 16000)
    assert np.array_equal(a.signal, synthesize.__wrapped__(1, 16000).signal)
    assert not np.array_equal(a.signal, synthesize(2, 16000).signal)
    band = parse_device_settings({"name": "s", "type": "sim-microphone", "speech": "band-noise"})
    assert band.speech_mode == "band-noise" and band.tones_on  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="speech_like = true means"):
        parse_device_settings({"name": "s", "type": "sim-microphone", "speech": "band-noise", "speech_like": True})


# -- fault switches -------------------------------------------------------------------------------


def test_fault_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"stall_every and faults\.stall_s go together"):
        parse_device_settings({"name": "s", "type": "sim-camera", "faults": {"stall_every": 3}})
    with pytest.raises(ValidationError, match="garbage_every"):
        parse_device_settings({"name": "s", "type": "sim-camera", "faults": {"garbage_every": 3}})
    with pytest.raises(ValidationError, match="drop_every"):
        parse_device_settings({"name": "s", "type": "sim-thermal", "faults": {"drop_every": 1}})
    with pytest.raises(ValidationError, match="not both"):
        parse_device_settings({"name": "s", "type": "sim-microphone", "drift_ppm": 5, "faults": {"drift_ppm": 5}})
    with pytest.raises(ValidationError, match="reopen_failures needs"):
        parse_device_settings({"name": "s", "type": "sim-serial", "faults": {"reopen_failures": 2}})


def test_drop_is_a_gap_in_device_time_counted_as_drops() -> None:
    with sim("sim-camera", fps=50, width=32, height=32, faults={"drop_every": 3}) as cam:
        samples = read_n(cam, 12)
        stats = cam.stats
    index = [s.device_time for s in samples]
    assert all(i % 3 != 2 for i in index)  # frames 2, 5, 8, ... never arrive
    assert stats.drops == index[-1] + 1 - len(samples) and stats.drops >= 4
    assert stats.gaps == 0 and any("drop" in s.meta.get("faults", []) for s in samples)


def test_stall_is_a_late_read_then_a_timeout() -> None:
    with sim("sim-serial", rate_hz=20, faults={"stall_every": 4, "stall_s": 0.6}) as sensor:
        first = read_n(sensor, 4)  # readings 0..3 at the normal pace
        with pytest.raises(DriverTimeout):
            sensor.read(0.2)  # reading 4 is stalled
        late = sensor.read(2)
        stats = sensor.stats
    assert [s.device_time for s in first] == [0, 1, 2, 3] and late.device_time == 4
    assert late.meta["faults"] == ["stall"] and stats.timeouts == 1
    # the stalled reading came a stall plus one period after the previous one was due
    assert (late.t_mono_ns - first[-1].meta["t_truth_ns"]) / 1e9 >= 0.6 + 0.05 - 0.005
    assert (late.meta["t_truth_ns"] - first[-1].meta["t_truth_ns"]) / 1e9 == pytest.approx(0.65, abs=1e-6)


def test_disconnect_raises_the_io_error_and_reopen_works() -> None:
    with sim("sim-thermal", fps=30, max_reconnects=0, faults={"disconnect_after": 3}) as ir:
        read_n(ir, 3)
        with pytest.raises(DriverIOError, match="disconnected"):
            ir.read(1)
        ir.close()
        time.sleep(0.2)
        ir.open()  # a fresh open brings the device back, on its running timeline
        again = read_n(ir, 3)
        assert again[0].device_time > 3 + 3 and ir.stats.errors == 1
        assert ir.stats.drops == again[0].device_time - 3  # what it sent while away is lost


def test_disconnect_reconnects_by_itself_after_failed_reopens() -> None:
    with sim("sim-serial", rate_hz=20, faults={"disconnect_after": 5, "reopen_failures": 1}) as sensor:
        samples = read_n(sensor, 8)
        stats = sensor.stats
    assert stats.reconnects == 1 and stats.errors == 2  # the disconnect and the failed reopen
    assert samples[5].meta["faults"] == ["reconnect"] and samples[5].device_time > 5
    assert "reopen attempt 1 failed" in (stats.last_error or "")


def test_garbage_bytes_are_counted_as_bad_frames() -> None:
    with sim("sim-serial", rate_hz=50, faults={"garbage_every": 4}) as sensor:
        samples = read_n(sensor, 9)
        stats = sensor.stats
    index = [s.device_time for s in samples]
    assert all(i % 4 != 3 for i in index)  # garbled readings never become samples
    assert stats.bad_frames == sum(1 for i in range(index[-1]) if i % 4 == 3) >= 2
    assert "garbled line" in (stats.last_error or "")


def test_clock_jump_shows_in_device_time_against_t_mono() -> None:
    with sim("sim-camera", fps=20, width=32, height=32, faults={"clock_jump_s": 5.0, "clock_jump_at_s": 0.2}) as cam:
        samples = read_n(cam, 8)
    seq = [s.meta["frame_index"] for s in samples]
    offset = [s.device_time - i for s, i in zip(samples, seq, strict=True)]  # type: ignore[operator]
    assert offset == [0 if i < 4 else 100 for i in seq]
    # device clock minus host clock steps by the jump between frames 3 and 4
    skew = [s.device_time / 20 - s.t_mono_ns / 1e9 for s in samples]  # type: ignore[operator]
    steps = np.diff(skew)
    assert np.sum(np.abs(steps - 5.0) < 0.05) == 1 and np.all(np.abs(steps[np.abs(steps - 5.0) >= 0.05]) < 0.05)


def test_drift_is_measurable_over_the_run() -> None:
    with sim("sim-serial", rate_hz=100, faults={"drift_ppm": 1000}) as sensor:
        samples = read_n(sensor, 300)  # ~3 s
    t = np.array([s.t_mono_ns for s in samples]) / 1e9
    d = np.array([s.device_time for s in samples], dtype=np.float64) / 100  # nominal device seconds
    lag = t - t[0] - d  # host minus device time: falls 1 ms per second when the device runs fast
    thirds = np.array_split(np.arange(len(samples)), 3)
    # delivery delays are one-sided: the lowest lag of a stretch sits on the device's clock line
    low = [(d[i][np.argmin(lag[i])], lag[i].min()) for i in thirds]
    ppm = -(low[2][1] - low[0][1]) / (low[2][0] - low[0][0]) * 1e6
    assert ppm == pytest.approx(1000, abs=400)


def test_microphone_faults_drop_stall_and_disconnect() -> None:
    faults = {"drop_every": 4, "stall_every": 6, "stall_s": 0.5, "disconnect_after": 9, "clock_jump_s": 1.0}
    with sim("sim-microphone", blocksize=480, channels=1, faults=faults) as mic:
        samples = []
        with pytest.raises(DriverTimeout):
            while True:
                samples.append(mic.read(0.3))  # block 6 stalls longer than the read
        samples += read_n(mic, 8)  # the stalled block, then a disconnect and a reconnect
        stats = mic.stats
    seqs = [s.device_time // 480 - 100 for s in samples]  # type: ignore[operator]
    assert all(k % 4 != 3 for k in seqs)
    assert [s.device_time for s in samples[:3]] == [48000, 48480, 48960]  # clock jumped by 1 s at 0
    assert stats.drops >= 2 and stats.timeouts == 1 and stats.reconnects == 1 and stats.errors == 1
    events = [e for s in samples for e in s.meta.get("faults", [])]
    assert {"drop", "stall", "reconnect"} <= set(events)
    err = [abs(s.t_mono_ns - s.meta["t_truth_ns"]) for s in samples]
    assert max(err) < 5e6  # stamps follow the device clock through stalls and reconnects
