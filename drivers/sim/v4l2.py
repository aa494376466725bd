"""A simulated V4L2 device behind OpenCV's ``VideoCapture`` interface.

No V4L2 camera exists on CI machines, so the V4L2 and UVC-thermal drivers' setting and read-back
logic is exercised against this model of what OpenCV's V4L2 backend does with a real UVC camera:
size and rate are negotiated against the *current* pixel format (hence FOURCC first), unsupported
requests snap to the nearest mode, controls clamp to their range, ``CONVERT_RGB`` off returns a
Y16 buffer as raw bytes, ``unplug()`` makes reads fail while ``isOpened()`` stays true, and
``hang()`` makes opening block like a wedged USB device.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import cv2
import numpy as np

from drivers.pacing import Pacer
from drivers.sim.camera import render_frame

__all__ = ["DEFAULT_MODES", "SimV4l2Capture"]

Mode = tuple[int, int, float]
DEFAULT_MODES: dict[str, list[Mode]] = {
    "YUYV": [(640, 480, 30.0), (1280, 720, 10.0)],
    "MJPG": [(640, 480, 30.0), (1280, 720, 30.0), (1920, 1080, 30.0)],
    "Y16 ": [(160, 120, 9.0)],
}


def _fourcc(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))


class SimV4l2Capture:
    """Implements the ``VideoCaptureLike`` protocol like a UVC camera on ``CAP_V4L2`` would."""

    unplugged: ClassVar[set[str]] = set()  # device paths whose "camera" is gone
    hanging: ClassVar[dict[str, float]] = {}  # device path -> seconds an open blocks
    last_opened: ClassVar[dict[str, SimV4l2Capture]] = {}  # device path -> newest capture

    def __init__(self, device: str, modes: dict[str, list[Mode]] | None = None) -> None:
        delay = self.hanging.get(device, 0.0)
        if delay:
            time.sleep(delay)  # blocks the caller, as open(2) on a wedged device does
        self.last_opened[device] = self
        self.released = False
        self.device = device
        self.modes = modes or DEFAULT_MODES
        self.fourcc = next(iter(self.modes))
        self.width, self.height, self.fps = self.modes[self.fourcc][0]
        self.props: dict[int, float] = {
            cv2.CAP_PROP_BUFFERSIZE: 4,
            cv2.CAP_PROP_AUTO_EXPOSURE: 3,
            cv2.CAP_PROP_EXPOSURE: 156,
            cv2.CAP_PROP_GAIN: 0,
            cv2.CAP_PROP_CONVERT_RGB: 1,
        }
        self.set_log: list[tuple[str, float]] = []
        self._opened = device not in self.unplugged
        self._pacer: Pacer | None = None
        self._index = 0
        self._frame: Any = None

    @classmethod
    def unplug(cls, device: str) -> None:
        """Make reads of ``device`` fail (and later opens too) until ``replug``."""
        cls.unplugged.add(device)

    @classmethod
    def replug(cls, device: str) -> None:
        """Undo ``unplug``."""
        cls.unplugged.discard(device)

    @classmethod
    def hang(cls, device: str, seconds: float) -> None:
        """Make every open of ``device`` block for ``seconds`` (0: open at once again)."""
        if seconds:
            cls.hanging[device] = seconds
        else:
            cls.hanging.pop(device, None)

    def _snap(self, width: float, height: float) -> None:
        modes = self.modes[self.fourcc]
        w, h, fps = min(modes, key=lambda m: abs(m[0] - width) + abs(m[1] - height))
        self.width, self.height = w, h
        self.fps = min(self.fps, fps) if self.fps > 0 else fps

    def _mode_fps(self) -> float:
        for w, h, fps in self.modes[self.fourcc]:
            if (w, h) == (self.width, self.height):
                return fps
        return self.fps

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        """True from open to release, even after the device vanished (as OpenCV does)."""
        return self._opened

    def getBackendName(self) -> str:  # noqa: N802 - OpenCV's name
        """The backend name."""
        return "V4L2"

    def set(self, prop: int, value: float) -> bool:
        """Set a property the way the V4L2 backend negotiates it with the driver."""
        self.set_log.append((str(prop), value))
        self._pacer = None
        if prop == cv2.CAP_PROP_FOURCC:
            code = _fourcc(value)
            if code not in self.modes:
                return False
            self.fourcc = code
            self._snap(self.width, self.height)
            self.fps = self._mode_fps()
            return True
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            self._snap(value, self.height)
            return True
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            self._snap(self.width, value)
            return True
        if prop == cv2.CAP_PROP_FPS:
            self.fps = min(max(1.0, value), self._mode_fps())
            return True
        limits = {
            cv2.CAP_PROP_BUFFERSIZE: (1, 32),
            cv2.CAP_PROP_AUTO_EXPOSURE: (1, 3),
            cv2.CAP_PROP_EXPOSURE: (1, 5000),
            cv2.CAP_PROP_GAIN: (0, 100),
            cv2.CAP_PROP_CONVERT_RGB: (0, 1),
        }
        if prop not in limits:
            return False
        low, high = limits[prop]
        self.props[prop] = min(max(value, low), high)
        return True

    def get(self, prop: int) -> float:
        """Read a property back."""
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter.fourcc(*self.fourcc))
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.width)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.height)
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self._index * 1000 / self.fps
        return self.props.get(prop, -1.0)

    def grab(self) -> bool:
        """Wait for the next frame period; False once unplugged."""
        if not self._opened or self.device in self.unplugged:
            time.sleep(0.01)
            return False
        if self._pacer is None:
            self._pacer = Pacer(self.fps)
            self._index = 0
        self._pacer.wait(self._index, 10.0)
        t_truth = self._pacer.due_ns(self._index)
        if self.fourcc == "Y16 ":
            ramp = np.arange(self.width, dtype=np.uint16)[None, :] + 29515 + self._index % 100
            y16 = np.repeat(ramp, self.height, axis=0)
            if self.props[cv2.CAP_PROP_CONVERT_RGB]:
                gray = (y16 >> 8).astype(np.uint8)
                self._frame = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
            else:
                self._frame = y16.astype("<u2").view(np.uint8).reshape(1, -1)
        else:
            self._frame = render_frame(self.width, self.height, self._index, t_truth)
        self._index += 1
        return True

    def retrieve(self) -> tuple[bool, Any]:
        """The frame of the last grab."""
        return self._frame is not None, self._frame

    def read(self) -> tuple[bool, Any]:
        """grab() + retrieve()."""
        if not self.grab():
            return False, None
        return self.retrieve()

    def release(self) -> None:
        """Close the device."""
        self._opened = False
        self.released = True
