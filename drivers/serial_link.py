"""Serial port plumbing shared by the serial drivers: opening with explicit timeouts, reading
against a deadline, and splitting lines without letting garbage grow a buffer without bound.

Every pyserial call here runs with a timeout: a silent or unplugged sensor must surface as a
timeout or a reconnect, never as a thread stuck in ``read()``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import serial

from drivers.base import Driver
from drivers.errors import DriverIOError, DriverOpenError

if TYPE_CHECKING:
    from drivers.settings.common import SerialPortSettings

__all__ = ["SerialDriver", "open_serial_port"]

P = TypeVar("P", bound="SerialPortSettings")

_CHUNK = 4096
_POLL_S = 0.05  # longest single blocking read, so deadlines are kept closely


def open_serial_port(settings: SerialPortSettings) -> serial.SerialBase:
    """Open ``settings.port`` with the configured line parameters; ``DriverOpenError`` on failure."""
    try:
        port = serial.serial_for_url(settings.port, do_not_open=True)
        port.baudrate = settings.baudrate
        port.bytesize = settings.bytesize
        port.parity = settings.parity
        port.stopbits = settings.stopbits
        port.timeout = _POLL_S
        port.write_timeout = settings.write_timeout_s
        if settings.exclusive and isinstance(port, serial.Serial) and hasattr(port, "exclusive"):
            port.exclusive = True
        port.open()
    except (serial.SerialException, ValueError, OSError) as exc:
        hint = ""
        text = str(exc).lower()
        if "permission" in text:
            hint = " (add the user to the 'dialout' group or fix the udev rule)"
        elif "no such file" in text or "could not open" in text:
            hint = " (is the adapter plugged in? list ports with 'fieldcap devices probe')"
        elif "lock" in text or "busy" in text:
            hint = " (another process holds the port)"
        raise DriverOpenError(
            f"{settings.name}: cannot open serial port {settings.port!r} at {settings.baudrate} baud: {exc}{hint}"
        ) from exc
    return port


class SerialDriver(Driver[P]):
    """A driver on a serial port: owns the port, a receive buffer and line splitting.

    Subclasses call ``_read_chunk(deadline)`` for binary protocols or ``_next_line(deadline)`` for
    text protocols. A line longer than ``max_line_bytes`` (``_max_line``) is counted as a bad frame
    and skipped up to its end, so noise on the line cannot exhaust memory.
    """

    _max_line: int = 1024

    def __init__(self, settings: P) -> None:
        super().__init__(settings)
        self._port: serial.SerialBase | None = None
        self._buf = bytearray()
        self._buf_t_ns = 0  # monotonic time of the read that completed the buffer's first line
        self._discarding = False

    def describe(self) -> str:
        return f"serial port {self.settings.port} ({self.settings.type})"

    def _open(self) -> None:
        self._buf.clear()
        self._discarding = False
        self._port = open_serial_port(self.settings)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def _settings_in_force(self) -> dict[str, Any]:
        port = self._port
        if port is None:
            return {}
        return {
            "port": port.port,
            "baudrate": port.baudrate,
            "bytesize": port.bytesize,
            "parity": port.parity,
            "stopbits": port.stopbits,
        }

    def _read_chunk(self, deadline: float) -> tuple[bytes, int] | None:
        """Bytes read before ``deadline`` with the monotonic time they arrived; None if none."""
        port = self._port
        if port is None:
            raise DriverIOError("serial port is not open")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            port.timeout = min(_POLL_S, remaining)
            waiting = int(getattr(port, "in_waiting", 0))
            data = port.read(min(_CHUNK, max(1, waiting)))
            if data:
                return bytes(data), time.monotonic_ns()

    def _next_line(self, deadline: float) -> tuple[bytes, int] | None:
        """The next complete line (without CR/LF) and its arrival time; None at the deadline."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl]).rstrip(b"\r")
                del self._buf[: nl + 1]
                if self._discarding:
                    self._discarding = False
                    continue
                if len(line) > self._max_line:
                    self._count("bad_frames", why=f"{self.name}: line over {self._max_line} bytes")
                    continue
                return line, self._buf_t_ns
            if len(self._buf) > self._max_line:
                if not self._discarding:
                    self._count("bad_frames", why=f"{self.name}: line over {self._max_line} bytes")
                self._discarding = True
                self._buf.clear()
            got = self._read_chunk(deadline)
            if got is None:
                return None
            if b"\n" not in self._buf:
                self._buf_t_ns = got[1]
            self._buf += got[0]
