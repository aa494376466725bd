"""Thermal IR cameras; radiometric frames stay raw ``uint16`` from capture to disk.

- ``thermal-uvc``: UVC cameras with Y16 output (FLIR Lepton on a PureThermal board): the FOURCC
  ``Y16 `` is set, then ``CONVERT_RGB`` is switched off, otherwise OpenCV hands out an 8-bit
  false-colour image and the temperatures are gone.
- ``thermal-rtsp``: network thermal cameras. 16-bit streams stay 16-bit; an 8-bit stream is kept
  as its luma widened to uint16 and flagged ``radiometric: False`` (it holds no temperatures).
- ``thermal-png``: replay of 16-bit PNG sequences (OpenCV's image-sequence backend).

The metadata every thermal stream records: units, radiometric or not, emissivity, reflected and
ambient temperature, distance (from settings, where the camera does not report them).
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from drivers.camera import ReplayDriver, apply_v4l2_settings, open_v4l2
from drivers.errors import DriverOpenError
from drivers.opencv_capture import CaptureDriver, VideoCaptureLike, open_ffmpeg_stream, redact
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


class UvcThermalCamera(CaptureDriver[ThermalUvcSettings]):
    """A Y16 UVC thermal camera; frames are HxW uint16 in ``settings.units``."""

    modality = "thermal"
    capture_factory: ClassVar[Any] = staticmethod(open_v4l2)

    def __init__(self, settings: ThermalUvcSettings) -> None:
        super().__init__(settings)
        self._readback: dict[str, Any] = {}

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
        return cap

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        s = self.settings
        return as_y16(frame, s.width, s.height), {"units": s.units}

    def _settings_in_force(self) -> dict[str, Any]:
        return {**self._readback, **thermal_meta(self.settings, True)}


class RtspThermalCamera(CaptureDriver[ThermalRtspSettings]):
    """A network thermal camera through FFmpeg with ``CONVERT_RGB`` off."""

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
            "transport": self.settings.transport,
            **thermal_meta(self.settings, radiometric),
        }


class PngThermalSequence(ReplayDriver[ThermalPngSettings]):
    """Replays 16-bit PNG frames as HxW uint16 (8-bit files are refused: they hold no data)."""

    modality = "thermal"
    default_image_fps = 9.0

    def describe(self) -> str:
        return f"16-bit PNG sequence {self.settings.path}"

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        arr = np.asarray(frame)
        if arr.dtype != np.uint16:
            raise DriverOpenError(
                f"{self.name}: {self.settings.path} holds {arr.dtype} images, not 16-bit; "
                "thermal frames must be saved as 16-bit PNG"
            )
        if arr.ndim == 3:
            arr = arr[..., 0]
        return arr, {"units": self.settings.units}

    def _settings_in_force(self) -> dict[str, Any]:
        return {**super()._settings_in_force(), **thermal_meta(self.settings, True)}
