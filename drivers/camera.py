"""Visible cameras through OpenCV: ``v4l2`` devices, ``rtsp`` (and HTTP) streams, ``video-file``.

Live sources read through a drain thread (``opencv_capture.FrameGrabber``) so ``read()`` returns
the newest frame; replayed files deliver every frame, paced at their frame rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from drivers.base import Driver, RawSample
from drivers.errors import DriverEndOfStream, DriverIOError, DriverOpenError
from drivers.opencv_capture import (
    CaptureDriver,
    VideoCaptureLike,
    cap_prop,
    fourcc_str,
    open_ffmpeg_stream,
    redact,
    stream_transport,
)
from drivers.pacing import Pacer
from drivers.settings.camera import (
    ReplayFields,
    RtspCameraSettings,
    V4l2CameraSettings,
    VideoFileSettings,
)

R = TypeVar("R", bound=ReplayFields)

__all__ = ["ReplayDriver", "RtspCamera", "V4l2Camera", "VideoFileCamera", "apply_v4l2_settings", "open_v4l2"]

# V4L2 exposure menu values OpenCV passes through for the V4L2 backend.
V4L2_EXPOSURE_MANUAL = 1
V4L2_EXPOSURE_APERTURE_PRIORITY = 3


def open_v4l2(device: str) -> VideoCaptureLike:
    """Open a V4L2 device through OpenCV's V4L2 backend (not whatever CAP_ANY picks)."""
    cap: VideoCaptureLike = cv2.VideoCapture(device, cv2.CAP_V4L2)
    return cap


def apply_v4l2_settings(cap: VideoCaptureLike, settings: V4l2CameraSettings | Any, fourcc: str) -> dict[str, Any]:
    """Set format, size, rate, buffering, exposure and gain, then read all of them back.

    The FOURCC goes first: a V4L2 driver validates size and rate against the *current* pixel
    format, so asking for 1920x1080 while still in YUYV gets a smaller mode that stays after the
    switch to MJPG. Returns the settings read back, plus ``differs`` listing what the device
    changed.
    """
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
    cap.set(cv2.CAP_PROP_FPS, settings.fps)
    buffer_frames = getattr(settings, "buffer_frames", None)
    if buffer_frames is not None:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, buffer_frames)
    exposure = getattr(settings, "exposure", "auto")
    if exposure == "auto":
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_APERTURE_PRIORITY)
    else:
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_MANUAL)
        cap.set(cv2.CAP_PROP_EXPOSURE, float(exposure))
    gain = getattr(settings, "gain", None)
    if gain is not None:
        cap.set(cv2.CAP_PROP_GAIN, gain)
    actual: dict[str, Any] = {
        "backend": cap.getBackendName(),
        "fourcc": fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)),
        "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        "fps": cap.get(cv2.CAP_PROP_FPS),
        "buffer_frames": int(cap.get(cv2.CAP_PROP_BUFFERSIZE)),
        "auto_exposure": cap.get(cv2.CAP_PROP_AUTO_EXPOSURE),
        "exposure": cap.get(cv2.CAP_PROP_EXPOSURE),
        "gain": cap.get(cv2.CAP_PROP_GAIN),
    }
    wanted: dict[str, Any] = {
        "fourcc": fourcc,
        "width": settings.width,
        "height": settings.height,
        "fps": settings.fps,
    }
    if exposure != "auto":
        wanted["exposure"] = float(exposure)
    if gain is not None:
        wanted["gain"] = gain
    actual["differs"] = {
        k: {"requested": v, "actual": actual[k]}
        for k, v in wanted.items()
        if (abs(actual[k] - v) > 1e-3 if isinstance(v, float) else actual[k] != v)
    }
    return actual


class V4l2Camera(CaptureDriver[V4l2CameraSettings]):
    """A local V4L2 camera (``CAP_V4L2``), MJPG by default, drained by a thread.

    ``capture_factory`` opens the device; the tests swap in ``drivers.sim.v4l2.SimV4l2Capture``
    because no V4L2 device exists on CI machines. OpenCV's V4L2 backend has no open timeout, so
    opening and configuring run in a worker bounded by ``open_timeout_s``.
    """

    modality = "visible"
    open_in_worker = True
    capture_factory: ClassVar[Callable[[str], VideoCaptureLike]] = staticmethod(open_v4l2)

    def __init__(self, settings: V4l2CameraSettings) -> None:
        super().__init__(settings)
        self._readback: dict[str, Any] = {}

    def describe(self) -> str:
        return f"V4L2 camera {self.settings.device}"

    def _make_capture(self) -> VideoCaptureLike:
        s = self.settings
        cap = type(self).capture_factory(s.device)
        if not cap.isOpened():
            cap.release()
            why = "it does not exist" if not Path(s.device).exists() else "busy or not permitted"
            raise DriverOpenError(
                f"{s.name}: cannot open V4L2 camera {s.device} ({why}; check the cable, the "
                "'video' group, and that no other program uses it)"
            )
        self._readback = apply_v4l2_settings(cap, s, s.fourcc)
        return cap

    def _settings_in_force(self) -> dict[str, Any]:
        return dict(self._readback)


class RtspCamera(CaptureDriver[RtspCameraSettings]):
    """An RTSP/HTTP camera through FFmpeg; ``device_time`` is the stream PTS.

    A stream silent for ``stall_timeout_s`` makes FFmpeg's read fail, which releases the capture
    and reopens it (``isOpened()`` would keep saying True after the camera died). HTTP MJPEG
    (multipart/x-mixed-replace) streams carry no timestamps: their ``device_time`` is None and
    the ``fps`` FFmpeg reports for them is its 25 fps guess, not the camera's rate.
    """

    modality = "visible"

    def __init__(self, settings: RtspCameraSettings) -> None:
        super().__init__(settings)
        self._join_s = settings.stall_timeout_s + 5

    def describe(self) -> str:
        return f"stream {redact(self.settings.url)}"

    def _make_capture(self) -> VideoCaptureLike:
        cap: VideoCaptureLike = open_ffmpeg_stream(self.settings)
        return cap

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self._capture_readback(),
            "url": redact(s.url),
            "transport": stream_transport(s),
            "timeouts_by_name": {
                n: cap_prop(n) is not None for n in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC")
            },
        }


class ReplayDriver(Driver[R]):
    """Replays a video file or image sequence, every frame, at its rate (or as fast as read).

    ``device_time`` is the frame's position in ms; the end raises ``DriverEndOfStream`` unless
    ``loop`` is set.
    """

    default_image_fps: ClassVar[float] = 5.0

    def __init__(self, settings: R) -> None:
        super().__init__(settings)
        self._cap: Any = None
        self._pacer: Pacer | None = None
        self._index = 0  # frames delivered, across loops
        self._fps = settings.fps or self.default_image_fps
        self._is_images = "%" in settings.path

    def describe(self) -> str:
        return f"{'image sequence' if self._is_images else 'video file'} {self.settings.path}"

    def _open(self) -> None:
        path = self.settings.path
        if not self._is_images and not Path(path).is_file():
            raise DriverOpenError(f"{self.settings.name}: video file {path!r} does not exist")
        api = cv2.CAP_IMAGES if self._is_images else cv2.CAP_ANY
        cap = cv2.VideoCapture(path, api)
        if not cap.isOpened():
            cap.release()
            raise DriverOpenError(
                f"{self.settings.name}: cannot open {self.describe()} (no such files, or a "
                "format this OpenCV build cannot decode)"
            )
        self._cap = cap
        file_fps = cap.get(cv2.CAP_PROP_FPS)
        if self.settings.fps is None and file_fps > 0:
            self._fps = file_fps
        self._pacer = Pacer(self._fps)
        self._index = 0

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        return frame, {}

    def _read_raw(self, timeout: float) -> RawSample | None:
        cap, pacer = self._cap, self._pacer
        if cap is None or pacer is None:
            raise DriverIOError("file is not open")
        if self.settings.pace == "realtime" and not pacer.wait(self._index, timeout):
            return None
        pos = cap.get(cv2.CAP_PROP_POS_FRAMES)
        ok, frame = cap.read()
        if not ok and self.settings.loop and pos > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            pos = 0
            ok, frame = cap.read()
        if not ok:
            raise DriverEndOfStream(f"{self.name}: end of {self.describe()}")
        t_mono = time.monotonic_ns()
        payload, meta = self._convert(frame)
        meta.update({"file_frame": int(pos), "frame_index": self._index})
        device_time = round(pos * 1000 / self._fps, 3)
        self._index += 1
        return RawSample(payload=payload, t_mono_ns=t_mono, device_time=device_time, meta=meta)

    def _settings_in_force(self) -> dict[str, Any]:
        cap = self._cap
        if cap is None:
            return {}
        return {
            "pixel_format": "BGR24",
            "backend": cap.getBackendName(),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": self._fps,
            "frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            "fourcc": fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)),
        }


class VideoFileCamera(ReplayDriver[VideoFileSettings]):
    """Replays a video file or an image sequence as visible frames (HxWx3 uint8 BGR)."""

    modality = "visible"
