"""RTSP cameras against a real gst-rtsp-server: drain, PTS, stall timeout, reconnect."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable

import numpy as np
import pytest

from drivers import DriverOpenError, DriverTimeout, open_driver, parse_device_settings

from .conftest import SYSTEM_PYTHON, RtspServer, free_port

pytestmark = pytest.mark.timeout(120)


def camera(url: str, type_: str = "rtsp", **kw: object):  # type: ignore[no-untyped-def]
    spec = {
        "name": "cam",
        "type": type_,
        "url": url,
        "open_timeout_s": 8,
        "stall_timeout_s": 2,
        "backoff_max_s": 0.5,
        **kw,
    }
    return open_driver(parse_device_settings(spec))


def test_frames_pts_and_settings(rtsp_server: Callable[..., RtspServer]) -> None:
    server = rtsp_server(320, 240, 10)
    with camera(server.url) as cam:
        frames = [cam.read(3) for _ in range(8)]
        force = cam.settings_in_force()
    shape = frames[0].payload.shape  # type: ignore[union-attr]
    assert shape == (240, 320, 3) and frames[0].payload.dtype == np.uint8  # type: ignore[union-attr]
    pts = [f.device_time for f in frames]
    assert all(isinstance(p, int) for p in pts) and pts == sorted(pts) and len(set(pts)) == 8
    assert [f.seq for f in frames] == list(range(8))
    assert force["backend"] == "FFMPEG" and force["transport"] == "tcp"
    assert (force["width"], force["height"], force["fps"]) == (320, 240, 10)
    assert all(force["timeouts_by_name"].values())


def test_drain_keeps_the_newest_frame_and_counts_skipped(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    server = rtsp_server(320, 240, 20)
    with camera(server.url) as cam:
        cam.read(3)
        time.sleep(1.0)
        before = cam.stats.drops
        frame = cam.read(3)
        age_ms = (time.monotonic_ns() - frame.t_mono_ns) / 1e6
    assert age_ms < 250  # the newest frame, not one queued a second ago
    assert frame.seq == 1
    assert cam.stats.drops - before >= 10  # ~20 frames arrived while nobody read


def test_stalled_stream_times_out_then_reconnects(rtsp_server: Callable[..., RtspServer]) -> None:
    server = rtsp_server()
    cam = camera(server.url, max_reconnects=100)
    try:
        cam.read(3)
        server.pause()  # SIGSTOP: TCP stays up, no data
        with pytest.raises(DriverTimeout):
            for _ in range(50):  # frames already in flight in socket buffers still arrive
                t0 = time.monotonic()
                cam.read(1.0)
        assert time.monotonic() - t0 < 2.5
        time.sleep(2.5)  # past stall_timeout_s: FFmpeg gives up, the capture is released
        with pytest.raises(DriverTimeout):
            cam.read(0.5)
        assert cam.stats.errors >= 1
        server.resume()
        deadline = time.monotonic() + 30
        while cam.stats.reconnects == 0 and time.monotonic() < deadline:
            with contextlib.suppress(DriverTimeout):
                cam.read(1)
        assert cam.stats.reconnects >= 1
        assert cam.read(5).payload.shape == (240, 320, 3)  # type: ignore[union-attr]
    finally:
        cam.close()


def test_killed_server_reconnects_when_it_returns(rtsp_server: Callable[..., RtspServer]) -> None:
    server = rtsp_server()
    cam = camera(server.url, max_reconnects=100)
    try:
        first = cam.read(3)
        assert (time.monotonic_ns() - first.t_mono_ns) / 1e6 < 250  # live, not the open backlog
        server.kill()
        with pytest.raises(DriverTimeout):
            for _ in range(10):
                cam.read(1)
        assert cam.stats.errors >= 1
        server.start()  # same port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                cam.read(1)
                break
            except DriverTimeout:
                continue
        assert cam.stats.reconnects >= 1
    finally:
        cam.close()


def test_unreachable_camera_fails_within_open_timeout() -> None:
    t0 = time.monotonic()
    with pytest.raises(DriverOpenError, match=r"cannot open stream rtsp://127\.0\.0\.1"):
        camera(f"rtsp://127.0.0.1:{free_port()}/none", open_timeout_s=2)
    assert time.monotonic() - t0 < 5


def test_credentials_come_from_a_file_and_never_show(tmp_path: object) -> None:
    from pathlib import Path

    from drivers.opencv_capture import redact, stream_url
    from drivers.settings import RtspCameraSettings

    secret = Path(str(tmp_path)) / "cred"
    secret.write_text("admin:p@ss:word\n")
    s = RtspCameraSettings(name="c", type="rtsp", url="rtsp://cam:554/s", credentials_file=str(secret))
    assert stream_url(s) == "rtsp://admin:p%40ss%3Aword@cam:554/s"
    assert redact(stream_url(s)) == "rtsp://cam:554/s"


def test_thermal_rtsp_8bit_stream_is_refused_unless_units_raw(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    server = rtsp_server(160, 120, 9)
    with pytest.raises(DriverOpenError, match=r"delivers 8-bit video \(uint8 120x160\).*units = 'raw'"):
        camera(server.url, type_="thermal-rtsp")  # default units: centikelvin
    with camera(server.url, type_="thermal-rtsp", units="raw") as cam:
        frame = cam.read(3)
        force = cam.settings_in_force()
    assert frame.payload.dtype == np.uint16 and frame.payload.shape == (120, 160)  # type: ignore[union-attr]
    assert frame.payload.max() <= 255  # type: ignore[union-attr]
    assert frame.meta["radiometric"] is False
    assert force["radiometric"] is False and force["units"] == "raw"


def _gst_has(*elements: str) -> bool:
    check = "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); " + "; ".join(
        f"assert Gst.ElementFactory.find({e!r})" for e in elements
    )
    return subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, check=False).returncode == 0


def test_thermal_rtsp_16bit_stream_arrives_bit_exact(rtsp_server: Callable[..., RtspServer]) -> None:
    """16-bit grey over RTSP (JPEG 2000 lossless in MPEG-TS over RTP) stays uint16, bit-exact.

    This documents a limit, too: FFmpeg cannot frame GStreamer's JPEG 2000 transport stream, so
    the open waits out ``open_timeout_s`` probing and each frame only comes out when the read
    timeout (``stall_timeout_s``) interrupts the read. The pixels are right; the rate is not.
    """
    if not _gst_has("openjpegenc", "mpegtsmux", "rtpmp2tpay"):
        pytest.skip("GStreamer JPEG 2000 / MPEG-TS elements missing (apt install gstreamer1.0-plugins-bad)")
    server = rtsp_server(160, 120, 9, "j2k16")
    y, x = np.mgrid[0:120, 0:160]
    expected = ((x * 257 + y * 509 + 1000) % 65536).astype(np.uint16)
    with camera(server.url, type_="thermal-rtsp", open_timeout_s=3, stall_timeout_s=1) as cam:
        frames = [cam.read(5) for _ in range(2)]
        force = cam.settings_in_force()
    for frame in frames:
        img = frame.payload
        assert isinstance(img, np.ndarray) and img.dtype == np.uint16 and img.shape == (120, 160)
        assert img[0, 1] == 0xA5A5
        got = img.copy()
        got[0, :2] = expected[0, :2]
        assert np.array_equal(got, expected)  # every 16-bit value exact, high byte included
        assert frame.meta["units"] == "centikelvin"
    assert frames[1].payload[0, 0] > frames[0].payload[0, 0]  # type: ignore[index]  # a newer frame
    assert force["radiometric"] is True and force["pixel_format"] == "Y16"
