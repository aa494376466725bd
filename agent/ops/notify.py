"""systemd's notify protocol (sd_notify) over ``$NOTIFY_SOCKET``, without libsystemd.

The protocol is one datagram of ``KEY=value`` lines to a unix socket whose path systemd passes in
the environment (a leading ``@`` means the abstract namespace). A ``Type=notify`` unit is "started"
only after ``READY=1``; ``STATUS=`` is shown by ``systemctl status``; ``WATCHDOG=1`` must arrive at
least every ``WatchdogSec`` (passed as ``$WATCHDOG_USEC``) or systemd kills and restarts the service.
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so ``fieldcap run`` behaves the
same in a terminal. A send never raises: a lost notification must not take the agent down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("fieldcap.notify")

MAX_STATUS = 480  # systemctl shows one line; keep the datagram small


def _address(value: str) -> str | bytes:
    return b"\0" + value[1:].encode() if value.startswith("@") else value


def one_line(text: str, limit: int = MAX_STATUS) -> str:
    """``text`` squeezed onto one line (STATUS= must not contain a newline)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Notifier:
    """Sends notifications to systemd; a no-op when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = _watchdog_seconds(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when it could not be sent."""
        if self.socket_path is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, socket.MSG_DONTWAIT, _address(self.socket_path))
        except OSError as exc:
            if not self._warned:  # once: a broken socket would otherwise log every second
                log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
                self._warned = True
            return False
        self._warned = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={one_line(status)}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={one_line(status)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 match the reload to this message; older ones ignore it.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={one_line(status)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """``$WATCHDOG_USEC`` in seconds when it is meant for this process (``$WATCHDOG_PID``), else None."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return value / 1e6 if value > 0 else None
