"""What devices this machine has and what each supports (``fieldcap devices probe``).

Cameras are queried with the V4L2 ioctls directly (capabilities, pixel formats, frame sizes and
rates): opening them through OpenCV would only tell the one mode it happens to pick. Every section
is independent; a missing library or a busy device becomes an ``error`` entry, never a crash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path
from typing import Any

__all__ = ["probe_all", "probe_audio", "probe_cameras", "probe_serial", "query_v4l2"]


def _iowr(nr: int, size: int, direction: int = 3) -> int:
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


_CAP_FMT = "16s32s32sIII12x"
_FMTDESC_FMT = "III32sII12x"
_FRMSIZE_FMT = "III24s8x"
_FRMIVAL_FMT = "IIIII24s8x"
VIDIOC_QUERYCAP = _iowr(0, struct.calcsize(_CAP_FMT), direction=2)
VIDIOC_ENUM_FMT = _iowr(2, struct.calcsize(_FMTDESC_FMT))
VIDIOC_ENUM_FRAMESIZES = _iowr(74, struct.calcsize(_FRMSIZE_FMT))
VIDIOC_ENUM_FRAMEINTERVALS = _iowr(75, struct.calcsize(_FRMIVAL_FMT))
_CAP_VIDEO_CAPTURE = 0x1
_CAP_DEVICE_CAPS = 0x80000000
_BUF_TYPE_VIDEO_CAPTURE = 1
_MAX_ENUM = 64  # bound every enumeration: a buggy driver must not loop the probe forever


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fourcc(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


def _enum(fd: int, request: int, fmt: str, head: tuple[int | bytes, ...]) -> list[tuple[Any, ...]]:
    """Call an ENUM ioctl with index 0, 1, ... until EINVAL."""
    out = []
    for index in range(_MAX_ENUM):
        buf = bytearray(struct.pack(fmt, index, *head))
        try:
            fcntl.ioctl(fd, request, buf)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break
            raise
        out.append(struct.unpack(fmt, buf))
    return out


def _intervals(fd: int, pixfmt: int, width: int, height: int) -> list[float]:
    rates = []
    head = (pixfmt, width, height, 0, b"")
    for item in _enum(fd, VIDIOC_ENUM_FRAMEINTERVALS, _FRMIVAL_FMT, head):
        kind, union = item[4], item[5]
        num, den = struct.unpack("II", union[:8])
        if num:
            rates.append(round(den / num, 3))
        if kind != 1:  # continuous/stepwise: the first entry gives the fastest rate
            break
    return rates


def query_v4l2(path: str) -> dict[str, Any]:
    """Capabilities and modes of one V4L2 node: ``{"driver", "card", "capture", "formats"}``."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        cap = bytearray(struct.calcsize(_CAP_FMT))
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, cap)
        driver, card, bus, _version, caps, device_caps = struct.unpack(_CAP_FMT, cap)
        effective = device_caps if caps & _CAP_DEVICE_CAPS else caps
        info: dict[str, Any] = {
            "path": path,
            "driver": _text(driver),
            "card": _text(card),
            "bus": _text(bus),
            "capture": bool(effective & _CAP_VIDEO_CAPTURE),
            "formats": [],
        }
        if not info["capture"]:
            return info  # metadata nodes (UVC exposes two /dev/video per camera)
        for desc in _enum(fd, VIDIOC_ENUM_FMT, _FMTDESC_FMT, (_BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0)):
            pixfmt = desc[4]
            modes = []
            for size in _enum(fd, VIDIOC_ENUM_FRAMESIZES, _FRMSIZE_FMT, (pixfmt, 0, b"")):
                kind, union = size[2], size[3]
                if kind == 1:
                    w, h = struct.unpack("II", union[:8])
                    modes.append({"width": w, "height": h, "fps": _intervals(fd, pixfmt, w, h)})
                else:
                    min_w, max_w, _, min_h, max_h, _ = struct.unpack("6I", union)
                    modes.append({"width": [min_w, max_w], "height": [min_h, max_h]})
                    break
            info["formats"].append({"fourcc": _fourcc(pixfmt), "description": _text(desc[3]), "modes": modes})
        return info
    finally:
        os.close(fd)


def probe_cameras(nodes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every /dev/video* node (or ``nodes``) with its modes, or the error that stopped the query."""
    out: list[dict[str, Any]] = []
    for path in nodes if nodes is not None else sorted(map(str, Path("/dev").glob("video*"))):
        try:
            out.append(query_v4l2(path))
        except OSError as exc:
            out.append({"path": path, "error": f"{exc.strerror or exc}"})
    return out


def probe_audio() -> list[dict[str, Any]]:
    """Input devices seen by PortAudio (an ``error`` entry if PortAudio is missing)."""
    try:
        from drivers.microphone import list_input_devices
    except (ImportError, OSError) as exc:
        return [{"error": f"cannot load sounddevice/PortAudio: {exc} (apt install libportaudio2)"}]
    try:
        return list_input_devices()
    except Exception as exc:
        return [{"error": f"PortAudio query failed: {exc}"}]


def probe_serial() -> list[dict[str, Any]]:
    """Serial ports with their USB identity (what to put in ``port``: prefer /dev/serial/by-id)."""
    from serial.tools import list_ports

    by_id = {str(p.resolve()): str(p) for p in Path("/dev/serial/by-id").glob("*")}
    out = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        out.append(
            {
                "device": port.device,
                "stable_path": by_id.get(str(Path(port.device).resolve())),
                "description": port.description,
                "hwid": port.hwid,
                "manufacturer": port.manufacturer,
                "serial_number": port.serial_number,
                "vid": port.vid,
                "pid": port.pid,
                "drivers": ["nmea", "modbus-rtu", "serial-lines", "thermal-uart"],
            }
        )
    return out


def probe_all() -> dict[str, list[dict[str, Any]]]:
    """Cameras, audio inputs and serial ports of this machine."""
    return {"cameras": probe_cameras(), "audio": probe_audio(), "serial": probe_serial()}
