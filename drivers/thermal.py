"""Thermal IR cameras; radiometric frames stay raw ``uint16`` from capture to disk.

- ``thermal-uvc``: UVC cameras with Y16 output (FLIR Lepton on a PureThermal board): the FOURCC
  ``Y16 `` is set, then ``CONVERT_RGB`` is switched off, otherwise OpenCV hands out an 8-bit
  false-colour image and the temperatures are gone.
- ``thermal-rtsp``: network thermal cameras. 16-bit streams stay 16-bit; an 8-bit stream is kept
  as its luma widened to uint16 and flagged ``radiometric: False`` (it holds no temperatures).
- ``thermal-png``: replay of 16-bit PNG sequences (OpenCV's image-sequence backend).

The metadata every thermal stream records: units, radiometric or not, emissivity, reflected and
ambient temperature, distance (from settings, where the camera does not report them). UVC and PNG
frames with FLIR Lepton telemetry rows have them stripped and parsed into each frame's metadata:
FFC state, time since the last FFC, FPA and housing temperature (``drivers.lepton``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from drivers.camera import ReplayDriver, apply_v4l2_settings, open_v4l2
from drivers.errors import DriverOpenError
from drivers.lepton import TelemetryLocation, parse_line_a, split_telemetry, telemetry_location, telemetry_rows
from drivers.opencv_capture import CaptureDriver, VideoCaptureLike, open_ffmpeg_stream, redact, stream_transport
from drivers.settings.thermal import (
    ThermalPngSettings,
    ThermalRtspSettings,
    ThermalUvcSettings,
)

__all__ = ["PngThermalSequence", "RtspThermalCamera", "UvcThermalCamera", "as_y16"]

_Y16 = "Y16 "


def as_y16(frame: Any, width: int, height: int) -> np.ndarray[Any, np.dtype[np.uint16]]:
    """A HxW uint16 view of a retrieved Y16 frame.

    With ``CONVERT_RGB`` off, backends return either a HxW uint16 image or the raw buffer as a
    1xN uint8 row; both mean the same little-endian samples.
    """
    arr = np.asarray(frame)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        return arr
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype == np.uint8 and flat.size >= width * height * 2:
        return flat[: width * height * 2].view("<u2").reshape(height, width).copy()
    raise ValueError(f"frame {arr.shape} {arr.dtype} is not Y16 {width}x{height}")


def thermal_meta(settings: Any, radiometric: bool) -> dict[str, Any]:
    """The radiometric description recorded with a thermal stream."""
    return {
        "units": settings.units if radiometric else "raw",
        "radiometric": radiometric,
        "emissivity": settings.emissivity,
        "reflected_temp_c": settings.reflected_temp_c,
        "ambient_temp_c": settings.ambient_temp_c,
        "distance_m": settings.distance_m,
        "pixel_format": "Y16",
    }


def lepton_location(name: str, setting: str, width: int, height: int) -> TelemetryLocation | None:
    """``telemetry_location`` with its error turned into a ``DriverOpenError`` naming the stream."""
    try:
        return telemetry_location(setting, width, height)
    except ValueError as exc:
        raise DriverOpenError(f"{name}: {exc}; set lepton_telemetry='off' or fix width/height") from exc


def strip_lepton(
    frame: np.ndarray[Any, np.dtype[np.uint16]], location: TelemetryLocation | None
) -> tuple[np.ndarray[Any, np.dtype[np.uint16]], dict[str, Any]]:
    """The image without telemetry rows, and the telemetry as frame metadata."""
    if location is None:
        return frame, {}
    image, line_a = split_telemetry(frame, location)
    return image, parse_line_a(line_a)


class UvcThermalCamera(CaptureDriver[ThermalUvcSettings]):
    """A Y16 UVC thermal camera; frames are HxW uint16 in ``settings.units``.

    Opening runs in a worker bounded by ``open_timeout_s`` (V4L2 has no open timeout).
    """

    modality = "thermal"
    open_in_worker = True
    capture_factory: ClassVar[Any] = staticmethod(open_v4l2)

    def __init__(self, settings: ThermalUvcSettings) -> None:
        super().__init__(settings)
        self._readback: dict[str, Any] = {}
        self._telemetry: TelemetryLocation | None = None

    def describe(self) -> str:
        return f"UVC thermal camera {self.settings.device}"

    def _make_capture(self) -> VideoCaptureLike:
        s = self.settings
        cap: VideoCaptureLike = type(self).capture_factory(s.device)
        if not cap.isOpened():
            cap.release()
            raise DriverOpenError(
                f"{s.name}: cannot open UVC thermal camera {s.device} (check the cable, the "
                "'video' group, and that no other program uses it)"
            )
        self._readback = apply_v4l2_settings(cap, s, _Y16)
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # after the format: some backends reset it
        self._readback["convert_rgb"] = cap.get(cv2.CAP_PROP_CONVERT_RGB)
        if self._readback["fourcc"] not in ("", _Y16):
            cap.release()
            raise DriverOpenError(
                f"{s.name}: {s.device} refused Y16 (got {self._readback['fourcc']!r}); it is not "
                "a radiometric UVC camera or needs its vendor's mode switch"
            )
        try:
            self._telemetry = lepton_location(s.name, s.lepton_telemetry, s.width, s.height)
        except DriverOpenError:
            cap.release()
            raise
        return cap

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        s = self.settings
        image, meta = strip_lepton(as_y16(frame, s.width, s.height), self._telemetry)
        return image, {"units": s.units, **meta}

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        rows = telemetry_rows(s.width) if self._telemetry else 0
        return {
            **self._readback,
            **thermal_meta(s, True),
            "lepton_telemetry": self._telemetry or "off",
            "image_height": int(self._readback.get("height", s.height)) - rows,
        }


class RtspThermalCamera(CaptureDriver[ThermalRtspSettings]):
    """A network thermal camera through FFmpeg with ``CONVERT_RGB`` off.

    OpenCV's FFmpeg backend hands out a decoded frame in its own format when ``CONVERT_RGB`` is
    off: GRAY16LE arrives as HxW uint16, so a stream whose codec decodes to 16-bit grey stays
    radiometric. Many IP thermal cameras stream only 8-bit H.264/MJPEG pictures (temperatures
    come through their SDKs). Open reads one frame to tell which: an 8-bit stream is refused
    unless ``units = "raw"`` says that the 8-bit picture is wanted (it is then recorded widened to
    uint16 and flagged ``radiometric: False``), so nobody records pictures believing they are
    temperatures.

    Tested against gst-rtsp-server: JPEG 2000 (16-bit lossless) in MPEG-TS over RTP arrives
    bit-exact as uint16, but FFmpeg (OpenCV 5.0's bundled build) cannot frame GStreamer's JPEG
    2000 transport stream: each frame only comes out when the read timeout interrupts the read,
    so that stream delivers one frame per ``stall_timeout_s`` (and opening takes the whole
    ``open_timeout_s``). GStreamer's RTP raw-video payloader (RFC 4175) has no 16-bit grey format,
    and FFmpeg decodes H.265 to 12 bits at most.
    """

    modality = "thermal"

    def __init__(self, settings: ThermalRtspSettings) -> None:
        super().__init__(settings)
        self._join_s = settings.stall_timeout_s + 5
        self._radiometric: bool | None = None

    def describe(self) -> str:
        return f"thermal stream {redact(self.settings.url)}"

    def _make_capture(self) -> VideoCaptureLike:
        cap: VideoCaptureLike = open_ffmpeg_stream(self.settings, [int(cv2.CAP_PROP_CONVERT_RGB), 0])
        # One frame tells whether the stream carries 16-bit data, so that settings_in_force()
        # says "radiometric" truthfully from the start.
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise DriverOpenError(f"{self.name}: {self.describe()} opened but sent no frame")
        self._convert(frame)
        if not self._radiometric and self.settings.units != "raw":
            arr = np.asarray(frame)
            cap.release()
            raise DriverOpenError(
                f"{self.name}: {self.describe()} delivers 8-bit video ({arr.dtype} {'x'.join(map(str, arr.shape))}),"
                " not 16-bit radiometric data, so it holds no temperatures. OpenCV passes 16 bits "
                "only for streams whose codec decodes to 16-bit grey; select the camera's "
                "radiometric stream, or set units = 'raw' to record the 8-bit picture as "
                "non-radiometric"
            )
        return cap

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        arr = np.asarray(frame)
        if arr.dtype == np.uint16:
            out = arr if arr.ndim == 2 else arr[..., 0]
            self._radiometric = True
            return np.ascontiguousarray(out), {"units": self.settings.units}
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
        self._radiometric = False
        return arr.astype(np.uint16), {"units": "raw", "radiometric": False, "source_bits": 8}

    def _settings_in_force(self) -> dict[str, Any]:
        radiometric = True if self._radiometric is None else self._radiometric
        return {
            **self._capture_readback(),
            "url": redact(self.settings.url),
            "transport": stream_transport(self.settings),
            **thermal_meta(self.settings, radiometric),
        }


class PngThermalSequence(ReplayDriver[ThermalPngSettings]):
    """Replays 16-bit PNG frames as HxW uint16 (8-bit files are refused: they hold no data)."""

    modality = "thermal"
    default_image_fps = 9.0

    def __init__(self, settings: ThermalPngSettings) -> None:
        super().__init__(settings)
        self._telemetry: TelemetryLocation | None = None

    def describe(self) -> str:
        return f"16-bit PNG sequence {self.settings.path}"

    def _open(self) -> None:
        super()._open()
        cap = self._cap
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._telemetry = lepton_location(self.name, self.settings.lepton_telemetry, width, height)

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        arr = np.asarray(frame)
        if arr.dtype != np.uint16:
            raise DriverOpenError(
                f"{self.name}: {self.settings.path} holds {arr.dtype} images, not 16-bit; "
                "thermal frames must be saved as 16-bit PNG"
            )
        if arr.ndim == 3:
            arr = arr[..., 0]
        image, meta = strip_lepton(arr, self._telemetry)
        return image, {"units": self.settings.units, **meta}

    def _settings_in_force(self) -> dict[str, Any]:
        force = {**super()._settings_in_force(), **thermal_meta(self.settings, True)}
        force["lepton_telemetry"] = self._telemetry or "off"
        if "height" in force:
            force["image_height"] = force["height"] - (telemetry_rows(force["width"]) if self._telemetry else 0)
        return force
