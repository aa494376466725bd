"""Replayed video files and 16-bit PNG sequences, and the V4L2 / UVC-Y16 logic.

No V4L2 device can exist on a CI machine, so the V4L2 drivers' setting and read-back logic runs
against ``drivers.sim.v4l2.SimV4l2Capture``, a model of OpenCV's V4L2 backend with a UVC camera.
"""

from __future__ import annotations

import contextlib
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


def wait_released(device: str, timeout: float = 5.0) -> SimV4l2Capture:
    """The newest simulated capture of ``device`` once it was released."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cap = SimV4l2Capture.last_opened.get(device)
        if cap is not None and cap.released:
            return cap
        time.sleep(0.02)
    raise AssertionError(f"no released capture of {device}")


def test_v4l2_open_timeout_is_enforced_and_a_late_open_is_released() -> None:
    device = "/dev/video9"
    SimV4l2Capture.last_opened.pop(device, None)
    SimV4l2Capture.hang(device, 1.5)
    cam = SimV4l2Camera(V4l2CameraSettings(name="cam", type="v4l2", device=device, open_timeout_s=0.3))
    try:
        t0 = time.monotonic()
        with pytest.raises(DriverOpenError, match=r"did not open within 0\.3 s \(open_timeout_s\)"):
            cam.open()
        assert time.monotonic() - t0 < 0.8
        t0 = time.monotonic()  # the first open is still blocked: no second thread piles up
        with pytest.raises(DriverOpenError, match=r"earlier open .* has not returned.*wedged"):
            cam.open()
        assert time.monotonic() - t0 < 0.1
        assert device not in SimV4l2Capture.last_opened  # still inside the blocked open
        SimV4l2Capture.hang(device, 0)
        late = wait_released(device)  # returned after 1.5 s and was released by its worker
        assert not late.isOpened()
        deadline = time.monotonic() + 2
        while not cam.is_open:  # the device answers again (once the worker has cleaned up)
            try:
                cam.open()
            except DriverOpenError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        assert cam.read(2).payload.shape == (720, 1280, 3)  # type: ignore[union-attr]
        assert SimV4l2Capture.last_opened[device] is not late
    finally:
        SimV4l2Capture.hang(device, 0)
        cam.close()


def test_v4l2_reopen_of_a_wedged_camera_never_blocks_a_read() -> None:
    device = "/dev/video10"
    settings = V4l2CameraSettings(
        name="cam",
        type="v4l2",
        device=device,
        width=640,
        height=480,
        open_timeout_s=0.3,
        backoff_max_s=0.1,
        max_reconnects=1000,
    )
    cam = SimV4l2Camera(settings)
    cam.open()
    try:
        cam.read(2)
        SimV4l2Capture.unplug(device)
        SimV4l2Capture.hang(device, 2.0)
        longest = 0.0
        for _ in range(6):
            t0 = time.monotonic()
            with contextlib.suppress(DriverTimeout):
                cam.read(0.5)
            longest = max(longest, time.monotonic() - t0)
        assert longest < 0.5 + 0.3 + 0.3  # read timeout + one bounded open attempt (+ slack)
        assert "did not open within" in (cam.stats.last_error or "") or "wedged" in (cam.stats.last_error or "")
        SimV4l2Capture.replug(device)
        SimV4l2Capture.hang(device, 0)
        deadline = time.monotonic() + 10
        while cam.stats.reconnects == 0 and time.monotonic() < deadline:
            with contextlib.suppress(DriverTimeout):
                cam.read(0.5)
        assert cam.stats.reconnects == 1
        assert cam.read(2).payload.shape == (480, 640, 3)  # type: ignore[union-attr]
    finally:
        SimV4l2Capture.replug(device)
        SimV4l2Capture.hang(device, 0)
        cam.close()


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


# -- FLIR Lepton telemetry rows (16-bit PNG frames, real image-sequence backend) ---------------
# No Lepton was available: the rows are crafted from the Lepton engineering datasheet's
# "Telemetry Data Content" word offsets (line A), written out here independently of the driver.


def line_a(
    *,
    uptime_ms: int,
    status: int,
    frame_counter: int,
    fpa_ck: int,
    housing_ck: int,
    fpa_at_ffc_ck: int,
    last_ffc_ms: int,
) -> np.ndarray[Any, np.dtype[np.uint16]]:
    words = np.full(80, 0xBEEF, np.uint16)  # reserved words hold junk that must be ignored
    words[0] = 0x000E  # telemetry revision

    def u32(at: int, value: int) -> None:  # least significant word first
        words[at], words[at + 1] = value & 0xFFFF, value >> 16

    u32(1, uptime_ms)
    u32(3, status)
    u32(20, frame_counter)
    words[22] = 29900  # frame mean
    words[24] = fpa_ck
    words[26] = housing_ck
    words[29] = fpa_at_ffc_ck
    u32(30, last_ffc_ms)
    return words


LEPTON_FRAMES = [  # (ffc state bits, extra status bits, uptime ms, last FFC ms)
    (0b00, 0, 5_000, 0),
    (0b01, 1 << 3, 170_000, 100_000),  # FFC imminent, FFC desired
    (0b10, 1 << 15, 171_000, 100_000),  # in progress, shutter locked out
    (0b11, 1 << 12 | 1 << 20, 1_000, 2**32 - 5_000),  # complete, AGC on, overtemp; counter wrapped
]


def lepton_png_sequence(directory: Path, *, header: bool = False) -> list[np.ndarray[Any, Any]]:
    """Four 160x122 frames: a 160x120 image and two telemetry rows (line A | B, C | padding)."""
    images = []
    for i, (ffc, extra, uptime, last_ffc) in enumerate(LEPTON_FRAMES):
        image = (np.arange(120 * 160, dtype=np.uint32).reshape(120, 160) % 3000 + 29000 + i).astype(np.uint16)
        rows = np.full((2, 160), 0xFFFF, np.uint16)  # lines B, C and padding: not image
        rows[0, :80] = line_a(
            uptime_ms=uptime,
            status=ffc << 4 | extra,
            frame_counter=70_000 + 3 * i,
            fpa_ck=30415 + 10 * i,
            housing_ck=30015,
            fpa_at_ffc_ck=30315,
            last_ffc_ms=last_ffc,
        )
        frame = np.vstack([rows, image] if header else [image, rows])
        cv2.imwrite(str(directory / f"lep_{i:04d}.png"), frame)
        images.append(image)
    return images


def test_lepton_telemetry_rows_are_parsed_and_stripped(tmp_path: Path) -> None:
    images = lepton_png_sequence(tmp_path)
    with open_spec(type="thermal-png", path=str(tmp_path / "lep_%04d.png"), pace="asap") as ir:
        frames = [ir.read(1) for _ in range(4)]
        force = ir.settings_in_force()
    for frame, image in zip(frames, images, strict=True):
        assert frame.payload.shape == (120, 160)  # type: ignore[union-attr]
        assert np.array_equal(frame.payload, image)  # type: ignore[arg-type]
    meta = [f.meta for f in frames]
    assert [m["ffc_state"] for m in meta] == ["never", "imminent", "in_progress", "complete"]
    assert [m["time_since_ffc_ms"] for m in meta] == [None, 70_000, 71_000, 6_000]
    assert [m["fpa_temp_c"] for m in meta] == [31.0, 31.1, 31.2, 31.3]
    assert meta[0]["fpa_temp_at_ffc_c"] == 30.0 and meta[0]["housing_temp_c"] == 27.0
    assert [m["ffc_desired"] for m in meta] == [False, True, False, False]
    assert [m["shutter_lockout"] for m in meta] == [False, False, True, False]
    assert [m["agc_enabled"] for m in meta] == [False, False, False, True]
    assert [m["overtemp_shutdown_imminent"] for m in meta] == [False, False, False, True]
    assert [m["lepton_frame_counter"] for m in meta] == [70_000, 70_003, 70_006, 70_009]
    assert meta[1]["lepton_uptime_ms"] == 170_000 and meta[0]["telemetry_revision"] == 14
    assert all(m["telemetry_plausible"] for m in meta)
    assert force["lepton_telemetry"] == "footer"
    assert (force["width"], force["height"], force["image_height"]) == (160, 122, 120)


def test_lepton_telemetry_header_off_and_wrong_shape(tmp_path: Path) -> None:
    images = lepton_png_sequence(tmp_path, header=True)
    spec = {"type": "thermal-png", "path": str(tmp_path / "lep_%04d.png"), "pace": "asap"}
    with open_spec(**spec, lepton_telemetry="header") as ir:
        frame = ir.read(1)
    assert np.array_equal(frame.payload, images[0]) and frame.meta["ffc_state"] == "never"  # type: ignore[arg-type]
    with open_spec(**spec, lepton_telemetry="off") as ir:
        frame = ir.read(1)
        force = ir.settings_in_force()
    assert frame.payload.shape == (122, 160) and "ffc_state" not in frame.meta  # type: ignore[union-attr]
    assert force["lepton_telemetry"] == "off" and force["image_height"] == 122
    cv2.imwrite(str(tmp_path / "odd_0000.png"), np.zeros((100, 100), np.uint16))
    with pytest.raises(DriverOpenError, match=r"lepton_telemetry='footer' but frames are 100x100"):
        open_spec(type="thermal-png", path=str(tmp_path / "odd_%04d.png"), lepton_telemetry="footer")
    with open_spec(type="thermal-png", path=str(tmp_path / "odd_%04d.png")) as ir:  # auto: not a Lepton
        assert ir.read(1).payload.shape == (100, 100)  # type: ignore[union-attr]
