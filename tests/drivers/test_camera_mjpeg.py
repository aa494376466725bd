"""HTTP MJPEG IP cameras (multipart/x-mixed-replace through OpenCV's FFmpeg backend) against a
real HTTP server process: capture, the drain, the stall timeout and reconnect.

The peer draws each frame's index into the frame (a barcode that survives JPEG), so the tests
check *which* frame the driver handed out, not only that one arrived.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from drivers import Driver, DriverTimeout, Sample, open_driver, parse_device_settings

from .conftest import PEERS, MjpegServer

pytestmark = pytest.mark.timeout(120)

_spec = importlib.util.spec_from_file_location("mjpeg_peer", PEERS / "mjpeg_server.py")
assert _spec is not None and _spec.loader is not None
_peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_peer)


def index(sample: Sample) -> int:
    """The frame index the server drew into this frame."""
    frame: Any = sample.payload
    return int(_peer.decode_index(frame))


def camera(url: str, **kw: object) -> Driver[Any]:
    spec = {
        "name": "ipcam",
        "type": "rtsp",  # the network-camera driver takes rtsp:// and http:// URLs
        "url": url,
        "open_timeout_s": 2,
        "stall_timeout_s": 2,
        "backoff_max_s": 0.5,
        "max_reconnects": 100,
        **kw,
    }
    return open_driver(parse_device_settings(spec))


def test_mjpeg_frames_and_settings(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server(320, 240, 10)
    with camera(server.url) as cam:
        frames = [cam.read(3)]
        drops_at_first = cam.stats.drops  # the backlog FFmpeg buffered while probing, if any
        frames += [cam.read(3) for _ in range(7)]
        drops = cam.stats.drops - drops_at_first
        force = cam.settings_in_force()
    img = frames[0].payload
    assert isinstance(img, np.ndarray) and img.shape == (240, 320, 3) and img.dtype == np.uint8
    indices = [index(f) for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == 8
    assert indices[-1] - indices[0] - 7 == drops  # frames the reader missed are all counted
    assert [f.seq for f in frames] == list(range(8))
    assert all(f.device_time is None for f in frames)  # MJPEG over HTTP carries no timestamps
    assert force["backend"] == "FFMPEG" and force["transport"] == "http"
    assert (force["width"], force["height"]) == (320, 240)


def test_mjpeg_drain_keeps_the_newest_frame_and_counts_skipped(
    mjpeg_server: Callable[..., MjpegServer],
) -> None:
    server = mjpeg_server(320, 240, 20)
    with camera(server.url) as cam:
        first = cam.read(3)
        before = cam.stats.drops
        time.sleep(1.0)
        late = cam.read(3)
        age_ms = (time.monotonic_ns() - late.t_mono_ns) / 1e6
        counted = cam.stats.drops - before
        following = cam.read(3)
    assert age_ms < 250  # the newest frame, not one queued a second ago
    skipped = index(late) - index(first) - 1
    assert skipped >= 12  # ~20 frames arrived while nobody read
    assert counted == skipped  # every frame the drain overwrote is counted, exactly
    assert index(following) == index(late) + 1  # nothing older was left queued
    assert following.seq == late.seq + 1 == 2


def test_mjpeg_stalled_server_times_out_then_reconnects(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server(320, 240, 10)
    cam = camera(server.url)
    try:
        before = index(cam.read(3))
        server.pause()  # SIGSTOP: the TCP connection stays up, no more bytes
        with pytest.raises(DriverTimeout):
            for _ in range(20):  # a frame already in the socket buffers may still arrive
                t0 = time.monotonic()
                cam.read(1.0)
        assert time.monotonic() - t0 < 1.5  # the read timeout holds while the stream is silent
        time.sleep(2.5)  # past stall_timeout_s: FFmpeg gives up, the capture is released
        with contextlib.suppress(DriverTimeout):
            cam.read(0.5)
        assert cam.stats.errors >= 1
        assert "stream ended or stalled" in (cam.stats.last_error or "") or "reopen" in (cam.stats.last_error or "")
        server.resume()
        deadline = time.monotonic() + 30
        while cam.stats.reconnects == 0 and time.monotonic() < deadline:
            with contextlib.suppress(DriverTimeout):
                cam.read(1)
        assert cam.stats.reconnects >= 1
        after = index(cam.read(5))
        assert after > before + 20  # a live frame from after the stall (>= 3 s at 10 fps)
    finally:
        cam.close()


def test_mjpeg_killed_server_reconnects_when_restarted(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server(320, 240, 10)
    cam = camera(server.url)
    try:
        first = cam.read(3)
        assert (time.monotonic_ns() - first.t_mono_ns) / 1e6 < 250  # live, not the open backlog
        server.kill()
        with pytest.raises(DriverTimeout):
            for _ in range(10):
                cam.read(1)
        assert cam.stats.errors >= 1
        server.start()  # same port, a new process: its frame index starts again
        deadline = time.monotonic() + 30
        got: Sample | None = None
        while got is None and time.monotonic() < deadline:
            with contextlib.suppress(DriverTimeout):
                got = cam.read(1)
        assert got is not None and cam.stats.reconnects >= 1
        assert got.payload.shape == (240, 320, 3)  # type: ignore[union-attr]
        assert index(got) < index(first) + 100  # from the restarted server
    finally:
        cam.close()
