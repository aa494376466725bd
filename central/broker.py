"""A throwaway local Mosquitto for the demo and the tests.

Generated config, free port on 127.0.0.1, no persistence unless asked. As root Mosquitto drops
privileges to the ``mosquitto`` user and then cannot read its own files, so ``user root`` is
written when running as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sync.errors import SyncError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class LocalBroker:
    """``with LocalBroker() as b: b.url`` — a Mosquitto that lives as long as the block."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        persistence: bool = False,
        extra_config: str = "",
        config: str | None = None,
    ) -> None:
        """``config`` replaces the generated listener and options (a TLS/ACL setup under test);
        ``port`` is then the listener to wait for. Logging and, as root, ``user root`` are added."""
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
        )
        if exe is None:
            raise SyncError(
                "mosquitto is not installed; install it with `apt-get install mosquitto` "
                "(or run `make setup`, which installs everything)"
            )
        self.exe = exe
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fieldcap-broker-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        common = ["log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            common.append("user root")
        if self.config is not None:
            return self.config + "\n" + "\n".join(common) + "\n" + self.extra_config
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            *common,
        ]
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self) -> LocalBroker:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(conf)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        if not wait_port(self.port, 10.0, self.proc):
            self.stop()
            tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise SyncError(f"mosquitto did not start on port {self.port}:\n{tail}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
