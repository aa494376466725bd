"""Replayed video files and 16-bit PNG sequences, and the V4L2 / UVC-Y16 logic.

No V4L2 device can exist on a CI machine, so the V4L2 drivers' setting and read-back logic runs
against ``drivers.sim.v4l2.SimV4l2Capture``, a model of OpenCV's V4L2 backend with a UVC camera.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from drivers import (
    DriverEndOfStream,
    DriverOpenError,
    DriverTimeout,
    open_driver,
    parse_device_settings,
)
from drivers.camera import V4l2Camera, apply_v4l2_settings
from drivers.settings import ThermalUvcSettings, V4l2CameraSettings
from drivers.sim.camera import render_frame
from drivers.sim.v4l2 import SimV4l2Capture
from drivers.thermal import UvcThermalCamera, as_y16


def open_spec(**spec: Any):  # type: ignore[no-untyped-def]
    return open_driver(parse_device_settings({"name": "cam", **spec}))


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (160, 120))
    for i in range(10):
        writer.write(render_frame(160, 120, i, i * 40_000_000))
    writer.release()
    return path


def test_video_file_every_frame_paced(video: Path) -> None:
    with open_spec(type="video-file", path=str(video)) as cam:
        t0 = time.monotonic()
        frames = [cam.read(1) for _ in range(10)]
        elapsed = time.monotonic() - t0
        with pytest.raises(DriverEndOfStream):
            cam.read(1)
        force = cam.settings_in_force()
    assert 0.35 < elapsed < 1.5  # 10 frames at 25 fps, never faster than real time
    assert [f.meta["file_frame"] for f in frames] == list(range(10))
    assert [f.device_time for f in frames][:3] == [0.0, 40.0, 80.0]
    assert frames[0].payload.shape == (120, 160, 3)  # type: ignore[union-attr]
    assert force["frame_count"] == 10 and force["fps"] == 25


def test_video_file_loop_and_asap(video: Path) -> None:
    with open_spec(type="video-file", path=str(video), pace="asap", loop=True) as cam:
        t0 = time.monotonic()
        frames = [cam.read(1) for _ in range(25)]
        assert time.monotonic() - t0 < 0.5
    assert [f.meta["file_frame"] for f in frames][9:12] == [9, 0, 1]
    assert [f.seq for f in frames] == list(range(25))


def test_missing_video_is_an_open_error(tmp_path: Path) -> None:
    with pytest.raises(DriverOpenError, match="does not exist"):
        open_spec(type="video-file", path=str(tmp_path / "nope.mp4"))


def test_png16_sequence_is_exact(tmp_path: Path) -> None:
    base = np.arange(120 * 160, dtype=np.uint16).reshape(120, 160)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"ir_{i:04d}.png"), base + 29000 + i)
    pattern = str(tmp_path / "ir_%04d.png")
    with open_spec(type="thermal-png", path=pattern, fps=30, units="decikelvin") as ir:
        frames = [ir.read(1) for _ in range(4)]
        force = ir.settings_in_force()
        with pytest.raises(DriverEndOfStream):
            ir.read(1)
    for i, frame in enumerate(frames):
        assert frame.payload.dtype == np.uint16  # type: ignore[union-attr]
        assert np.array_equal(frame.payload, base + 29000 + i)  # type: ignore[arg-type]
    assert force["units"] == "decikelvin" and force["radiometric"] is True
    assert force["type"] == "thermal-png" and force["pixel_format"] == "Y16"


def test_png8_is_refused_for_thermal(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "f_0000.png"), np.zeros((8, 8), np.uint8))
    with (
        open_spec(type="thermal-png", path=str(tmp_path / "f_%04d.png")) as ir,
        pytest.raises(DriverOpenError, match="not 16-bit"),
    ):
        ir.read(1)


# -- V4L2 (simulated device) -------------------------------------------------------------------


class SimV4l2Camera(V4l2Camera):
    capture_factory = staticmethod(SimV4l2Capture)


class SimUvcThermal(UvcThermalCamera):
    capture_factory = staticmethod(SimV4l2Capture)


def v4l2(**kw: Any) -> SimV4l2Camera:
    settings = V4l2CameraSettings(name="cam", type="v4l2", device="/dev/video7", **kw)
    return SimV4l2Camera(settings)


def test_v4l2_sets_fourcc_first_and_reads_back() -> None:
    with v4l2(width=1920, height=1080, fps=30, exposure=200, gain=5) as cam:
        frame = cam.read(2)
        force = cam.settings_in_force()
    assert frame.payload.shape == (1080, 1920, 3)  # type: ignore[union-attr]
    assert (force["fourcc"], force["width"], force["height"], force["fps"]) == ("MJPG", 1920, 1080, 30.0)
    assert force["auto_exposure"] == 1 and force["exposure"] == 200 and force["gain"] == 5
    assert force["differs"] == {}
    assert force["buffer_frames"] == 1


def test_why_fourcc_goes_first() -> None:
    cap = SimV4l2Capture("/dev/video7")  # starts in YUYV, which has no 1080p mode
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, 1920)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, 1080)
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)
    fresh = SimV4l2Capture("/dev/video7")
    settings = V4l2CameraSettings(name="c", type="v4l2", width=1920, height=1080)
    assert apply_v4l2_settings(fresh, settings, "MJPG")["width"] == 1920


def test_v4l2_reports_what_the_device_changed() -> None:
    with v4l2(fourcc="YUYV", width=1920, height=1080, fps=30, exposure=99999) as cam:
        force = cam.settings_in_force()
    assert force["differs"]["width"] == {"requested": 1920, "actual": 1280}
    assert force["differs"]["fps"]["actual"] == 10.0
    assert force["differs"]["exposure"]["actual"] == 5000


def test_v4l2_unplug_reconnects_and_missing_device_is_clear() -> None:
    cam = v4l2(width=640, height=480, backoff_max_s=0.2)
    cam.open()
    try:
        cam.read(2)
        SimV4l2Capture.unplug("/dev/video7")
        with pytest.raises(DriverTimeout):
            for _ in range(3):  # a frame grabbed just before the unplug may still come
                cam.read(0.5)
        assert cam.stats.errors >= 1
        SimV4l2Capture.replug("/dev/video7")
        cam.read(3)
        assert cam.stats.reconnects == 1
    finally:
        SimV4l2Capture.replug("/dev/video7")
        cam.close()
    with pytest.raises(DriverOpenError, match="/dev/video99"):
        open_spec(type="v4l2", device="/dev/video99")


def test_uvc_thermal_y16_with_convert_rgb_off() -> None:
    settings = ThermalUvcSettings(name="ir", type="thermal-uvc", device="/dev/video8")
    with SimUvcThermal(settings) as ir:
        frame = ir.read(2)
        force = ir.settings_in_force()
    img = frame.payload
    assert isinstance(img, np.ndarray) and img.dtype == np.uint16 and img.shape == (120, 160)
    assert img[0, 0] >= 29515  # raw centikelvin survived, not an 8-bit rendering
    assert force["fourcc"] == "Y16 " and force["convert_rgb"] == 0
    assert force["units"] == "centikelvin" and force["radiometric"] is True


def test_as_y16_accepts_both_layouts() -> None:
    img = np.arange(12, dtype=np.uint16).reshape(3, 4) + 30000
    assert as_y16(img, 4, 3) is img
    raw = img.astype("<u2").view(np.uint8).reshape(1, -1)
    assert np.array_equal(as_y16(raw, 4, 3), img)
    with pytest.raises(ValueError, match="not Y16"):
        as_y16(np.zeros((2, 2, 3), np.uint8), 4, 3)
