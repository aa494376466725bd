"""sd_notify against a real unix datagram socket: the library, a real `fieldcap run`, and a stalled loop."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.ops.notify import Notifier, one_line
from agent.ops.supervisor import Supervisor

FIELDCAP = str(Path(sys.executable).with_name("fieldcap"))


class NotifySocket:
    """What systemd listens on: a bound AF_UNIX datagram socket; ``messages`` collects what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: str, timeout: float, *, after: float = 0.0) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, msg in self.snapshot():
                if t >= after and predicate in msg.split("\n"):
                    return t, msg
            time.sleep(0.05)
        raise AssertionError(f"no {predicate!r} within {timeout} s; got {self.snapshot()[-10:]}")

    def count(self, line: str, since: float, until: float | None = None) -> int:
        return sum(
            1 for t, m in self.snapshot() if t >= since and (until is None or t <= until) and line in m.split("\n")
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


# ---------------------------------------------------------------------------- the protocol


def test_notifier_sends_each_message_as_one_datagram(notify_socket: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    assert n.enabled
    assert n.ready("2/2 streams up\nsecond line")
    assert n.status("disk 91% full")
    assert n.watchdog()
    assert n.reloading()
    assert n.stopping("bye")
    deadline = time.monotonic() + 5
    while len(notify_socket.snapshot()) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    msgs = [m for _, m in notify_socket.snapshot()]
    assert msgs[0] == "READY=1\nSTATUS=2/2 streams up second line"  # STATUS= must stay on one line
    assert msgs[1] == "STATUS=disk 91% full"
    assert msgs[2] == "WATCHDOG=1"
    assert msgs[3].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert msgs[4] == "STOPPING=1\nSTATUS=bye"
    n.close()


def test_abstract_socket_address() -> None:
    name = f"fieldcap-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
    finally:
        server.close()


def test_without_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x")
    assert n.watchdog_s is None
    # A socket that went away: the send fails quietly (a lost notification must not crash the agent).
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not gone.watchdog()


def test_watchdog_settings_are_read_for_this_process_only() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_s == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None  # a parent's
    assert Notifier({"WATCHDOG_USEC": "zero"}).watchdog_s is None
    assert one_line("a\n b\tc") == "a b c"


# ---------------------------------------------------------------------------- a real `fieldcap run`


def _config_text(data_dir: Path, *, fps: float = 5.0, open_timeout_s: float = 10.0) -> str:
    return f"""
[agent]
device_id = "notify-01"
data_dir = "{data_dir}"

[[devices]]
name = "cam"
type = "sim-camera"
width = 64
height = 48
fps = {fps}
open_timeout_s = {open_timeout_s}

[[devices]]
name = "env"
type = "sim-serial"
rate_hz = 5

[capture.cam]
policy = "interval"
interval_s = 1.0

[capture.env]
policy = "readings"
batch_s = 2

[sync]
enabled = false

[metrics]
enabled = false

[daemon]
status_interval_s = 0.5
"""


def test_fieldcap_run_reports_ready_status_and_watchdog(tmp_path: Path, notify_socket: NotifySocket) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(_config_text(tmp_path / "data"))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen([FIELDCAP, "run", "--config", str(cfg)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        t_ready, ready = notify_socket.wait_for("READY=1", 60)
        # READY comes once the devices are open, with a one-line health summary.
        assert "STATUS=running: 2/2 streams up" in ready, ready
        time.sleep(3.0)
        now = time.monotonic()
        # WatchdogSec=2 s: a ping at least every second while everything progresses.
        assert notify_socket.count("WATCHDOG=1", t_ready, now) >= 4
        pings = [t for t, m in notify_socket.snapshot() if m == "WATCHDOG=1" and t > t_ready]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
        assert any(m.startswith("STATUS=") and t > t_ready for t, m in notify_socket.snapshot())
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", 10, after=now)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert "ready: running" in stderr


# ---------------------------------------------------------------------------- a stalled capture loop


def test_no_watchdog_while_a_capture_loop_is_stalled(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """A driver wedged inside a call (here: its I/O lock held) stops the pings; they resume after."""
    import tomllib

    config = parse_config(tomllib.loads(_config_text(tmp_path / "data", fps=10, open_timeout_s=1.0)))
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"})
    sup = Supervisor(tmp_path / "agent.toml", config, notifier=notifier)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        notify_socket.wait_for("READY=1", 60)
        notify_socket.wait_for("WATCHDOG=1", 10, after=time.monotonic())
        assert sup.agent is not None
        state = sup.agent.streams["cam"]
        deadline = time.monotonic() + 10
        while state.driver is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver = state.driver
        assert driver is not None
        with driver._io_lock:  # the capture thread's next read() blocks here, like a hung device call
            t_hold = time.monotonic()
            # Limit = WatchdogSec/2 = 0.5 s, plus what the loop announced for a read (open_timeout_s + 1 s).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                snap = sup.snapshot()
                if snap["loops"].get("capture:cam", {}).get("stalled"):
                    break
                time.sleep(0.1)
            assert sup.snapshot()["loops"]["capture:cam"]["stalled"], sup.snapshot()["loops"]
            t_stalled = time.monotonic()
            assert t_stalled >= t_hold + 0.5  # not before the limit
            time.sleep(2.0)
            # No ping at all while stalled (1 s of grace for one already in flight).
            assert notify_socket.count("WATCHDOG=1", t_stalled + 0.3) == 0, notify_socket.snapshot()[-5:]
            status = [m for t, m in notify_socket.snapshot() if t >= t_stalled and m.startswith("STATUS=")]
            assert any("loop capture:cam stalled" in m for m in status), status
            # The other stream kept capturing meanwhile.
            env_before = sup.agent.streams["env"].samples
            time.sleep(0.6)
            assert sup.agent.streams["env"].samples > env_before
        t_release = time.monotonic()
        notify_socket.wait_for("WATCHDOG=1", 10, after=t_release)
        assert not sup.snapshot()["loops"]["capture:cam"]["stalled"]
    finally:
        sup.request_stop()
        runner.join(60)
    assert not runner.is_alive()
    events = _events(tmp_path / "data" / "catalog.sqlite", "loop_stalled")
    assert events and "capture:cam" in events[0]["message"]
    assert "withholding the systemd watchdog" in events[0]["message"]


def _events(catalog: Path, kind: str) -> list[dict[str, object]]:
    import sqlite3

    conn = sqlite3.connect(catalog)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM events WHERE kind = ? ORDER BY t_utc_ns", (kind,)).fetchall()
    finally:
        conn.close()
    return [{**dict(r), "detail": json.loads(r["detail_json"])} for r in rows]


def test_a_broker_that_is_down_is_not_a_stall(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """The sync loop keeps beating while it waits to reconnect: systemd must not restart a healthy agent."""
    import tomllib

    from central.broker import free_port

    text = _config_text(tmp_path / "data").replace(
        "[sync]\nenabled = false", f'[sync]\nbroker = "mqtt://127.0.0.1:{free_port()}"'
    )
    config = parse_config(tomllib.loads(text))
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "2000000"})
    sup = Supervisor(tmp_path / "agent.toml", config, notifier=notifier)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        t_ready, _ = notify_socket.wait_for("READY=1", 60)
        time.sleep(4.0)
        snap = sup.snapshot()
        assert snap["broker_connected"] is False
        assert "sync" in snap["loops"] and not snap["loops"]["sync"]["stalled"]
        assert "not connected to the broker" in snap["warnings"]
        pings = [t for t, m in notify_socket.snapshot() if m == "WATCHDOG=1" and t > t_ready]
        assert len(pings) >= 6 and max(b - a for a, b in itertools.pairwise(pings)) < 1.0
    finally:
        sup.request_stop()
        runner.join(60)
