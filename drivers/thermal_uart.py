"""``thermal-uart``: MLX90640-style 32x24 thermal arrays that stream frames over a UART.

Frame layout (as sent by GY-MCU90640-type boards), all little-endian::

    offset  size  field
    0       2     header 0x5A 0x5A
    2       2     length of what follows up to the checksum = 1538
    4       1536  768 x int16 pixel temperatures, degC x 100, row-major, 32 columns x 24 rows
    1540    2     int16 ambient (die) temperature, degC x 100
    1542    2     checksum: sum of the 771 preceding 16-bit words, modulo 65536

Pixels are converted losslessly to uint16 centi-kelvin (``degC x 100 + 27315``) so every thermal
driver hands out the same unit. A frame with a wrong length or checksum is a bad frame; the parser
then resynchronises on the next header, so a truncated frame costs exactly one frame.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from drivers.base import RawSample
from drivers.serial_link import SerialDriver
from drivers.settings.thermal import ThermalUartSettings

__all__ = ["FRAME_BYTES", "FrameParser", "UartThermalArray", "encode_frame"]

HEADER = b"\x5a\x5a"
WIDTH, HEIGHT = 32, 24
_DATA_LEN = WIDTH * HEIGHT * 2 + 2
FRAME_BYTES = 4 + _DATA_LEN + 2
_KELVIN_CC = 27315


def _checksum(body: bytes) -> int:
    return int(np.frombuffer(body, dtype="<u2").sum(dtype=np.uint64) % 65536)


def encode_frame(pixels_cc: np.ndarray[Any, Any], ambient_cc: int) -> bytes:
    """Build one frame from 24x32 temperatures in degC x 100 (for tests and simulators)."""
    pix = np.asarray(pixels_cc, dtype="<i2").reshape(HEIGHT, WIDTH)
    body = HEADER + _DATA_LEN.to_bytes(2, "little") + pix.tobytes() + int(ambient_cc).to_bytes(2, "little", signed=True)
    return body + _checksum(body).to_bytes(2, "little")


class FrameParser:
    """Incremental parser: feed bytes, take complete frames; counts what it had to skip."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad: list[str] = []  # one reason per rejected frame; the caller empties it
        self._resyncing = False  # bytes skipped after a rejected frame belong to that frame

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def _reject(self, why: str) -> None:
        self.bad.append(why)
        self._resyncing = True
        del self._buf[:1]

    def _skip(self, n: int, why: str) -> None:
        if not self._resyncing:
            self.bad.append(why)
            self._resyncing = True
        del self._buf[:n]

    def next_frame(self) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int] | None:
        """The next valid frame as (24x32 int16 degC x 100, ambient) or None if incomplete."""
        buf = self._buf
        while True:
            start = buf.find(HEADER)
            if start < 0:
                if len(buf) > FRAME_BYTES:  # keep the tail: it may hold half a header
                    self._skip(len(buf) - 1, "bytes without a frame header")
                return None
            if start > 0:
                self._skip(start, f"{start} stray byte(s) before a header")
            if len(buf) < FRAME_BYTES:
                return None
            frame = bytes(buf[:FRAME_BYTES])
            length = int.from_bytes(frame[2:4], "little")
            if length != _DATA_LEN:
                self._reject(f"length field {length} != {_DATA_LEN}")
                continue
            if _checksum(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._reject("checksum mismatch (corrupt or truncated frame)")
                continue
            del buf[:FRAME_BYTES]
            self._resyncing = False
            pixels = np.frombuffer(frame, dtype="<i2", count=WIDTH * HEIGHT, offset=4)
            ambient = int.from_bytes(frame[-4:-2], "little", signed=True)
            return pixels.reshape(HEIGHT, WIDTH).astype(np.int16), ambient


class UartThermalArray(SerialDriver[ThermalUartSettings]):
    """32x24 uint16 centi-kelvin frames; ``meta`` has the ambient temperature in degC."""

    modality = "thermal"

    def __init__(self, settings: ThermalUartSettings) -> None:
        super().__init__(settings)
        self._parser = FrameParser()
        self._frames = 0
        self._t_chunk = 0  # arrival of the chunk that completed the newest frame

    def _open(self) -> None:
        super()._open()
        self._parser = FrameParser()

    def _read_raw(self, timeout: float) -> RawSample | None:
        deadline = time.monotonic() + timeout
        while True:
            got = self._parser.next_frame()
            for why in self._parser.bad:
                self._count("bad_frames", why=f"{self.name}: {why}")
            self._parser.bad.clear()
            if got is not None:
                pixels, ambient = got
                kelvin = np.clip(pixels.astype(np.int32) + _KELVIN_CC, 0, 65535).astype(np.uint16)
                self._frames += 1
                return RawSample(
                    payload=kelvin,
                    t_mono_ns=self._t_chunk,
                    device_time=self._frames - 1,
                    meta={"units": "centikelvin", "ambient_c": ambient / 100},
                )
            chunk = self._read_chunk(deadline)
            if chunk is None:
                return None
            self._parser.feed(chunk[0])
            self._t_chunk = chunk[1]

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {
            **super()._settings_in_force(),
            "width": WIDTH,
            "height": HEIGHT,
            "pixel_format": "Y16",
            "units": "centikelvin",
            "radiometric": True,
            "emissivity": s.emissivity,
            "reflected_temp_c": s.reflected_temp_c,
            "ambient_temp_c": s.ambient_temp_c,
            "distance_m": s.distance_m,
        }
