"""Real peers for the driver tests: pty pairs, socat, RTSP and HTTP MJPEG servers, PulseAudio,
Modbus slave.

Every peer is private to the test run (temporary directories, free ports, its own
``XDG_RUNTIME_DIR``) and is stopped by its fixture, so tests never touch the machine's setup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import pytest

PEERS = Path(__file__).parent / "peers"
# ALSA's 8-channel order: with the same map on sink, player and recorder nothing is remixed.
MAP8 = "front-left,front-right,rear-left,rear-right,front-center,lfe,side-left,side-right"
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nmea(body: str) -> bytes:
    """An NMEA sentence with its checksum and CRLF."""
    checksum = reduce(lambda a, b: a ^ b, body.encode(), 0)
    return f"${body}*{checksum:02X}\r\n".encode()


@dataclass
class Pty:
    """A pty pair: tests write device output to ``master``; drivers open ``path``."""

    master: int
    slave: int
    path: str

    def write(self, data: bytes) -> None:
        """Send bytes as the device would."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def read(self, n: int = 4096, timeout: float = 1.0) -> bytes:
        """Read what the driver sent (empty on timeout)."""
        import select

        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, n) if ready else b""


@pytest.fixture
def pty() -> Iterator[Pty]:
    """A raw pty pair (``os.openpty``); raw at once so CR/LF arrive untranslated."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    yield Pty(master, slave, os.ttyname(slave))
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys made by socat, both reachable by path (for peers that open a port)."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt install socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not create the pty pair")
        time.sleep(0.02)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def modbus_slave(socat_pair: tuple[str, str]) -> Iterator[str]:
    """pymodbus's RTU server (unit 1) on one end of a socat pair; yields the other end."""
    bus, device_end = socat_pair
    proc = subprocess.Popen(
        [sys.executable, str(PEERS / "modbus_server.py"), device_end, "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(0.5)  # the server opens the port right after printing
    yield bus
    proc.terminate()
    proc.wait(5)


@dataclass
class RtspServer:
    """A gst-rtsp-server process serving ``url``."""

    port: int
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    stopped: bool = field(default=False)
    python: str = SYSTEM_PYTHON
    script: str = "rtsp_server.py"

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.python, str(PEERS / self.script), str(self.port), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"RTSP server did not start: {line!r}")

    def kill(self) -> None:
        if self.proc is not None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
            self.stopped = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False


@dataclass
class MjpegServer(RtspServer):
    """An HTTP MJPEG camera (``peers/mjpeg_server.py``, run by this venv's Python for cv2)."""

    python: str = sys.executable
    script: str = "mjpeg_server.py"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"


@pytest.fixture
def mjpeg_server() -> Iterator[Callable[..., MjpegServer]]:
    """Factory: ``mjpeg_server(width, height, fps)`` starts an HTTP MJPEG camera on a free port."""
    servers: list[MjpegServer] = []

    def start(width: int = 320, height: int = 240, fps: int = 10) -> MjpegServer:
        server = MjpegServer(free_port(), [str(width), str(height), str(fps)])
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def _has_rtsp_server() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return "no system python3"
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    if subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, check=False).returncode:
        return "gst-rtsp-server missing (apt install python3-gi gir1.2-gst-rtsp-server-1.0)"
    return None


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory: ``rtsp_server(width, height, fps, kind)`` starts a server on a free port."""
    reason = _has_rtsp_server()
    if reason:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def start(width: int = 320, height: int = 240, fps: int = 10, kind: str = "jpeg") -> RtspServer:
        server = RtspServer(free_port(), [str(width), str(height), str(fps), kind])
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@dataclass
class PulseAudio:
    """A private PulseAudio daemon with a null sink; ``play()`` feeds it through pacat."""

    root: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    device: str = "fieldcap_pulse"
    players: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def play(
        self, raw_s16le: bytes, rate: int = 48000, channels: int = 2, sink: str = "fcnull", latency_ms: int = 20
    ) -> None:
        """Play interleaved s16le audio into a null sink (paced by the sink's clock).

        ``fcnull`` (stereo) is recorded by the ALSA PCM ``fieldcap_pulse``, ``fcnull8`` (8 channels)
        by ``fieldcap_pulse8``; at the sink's own rate and channel count the capture is bit-exact.
        A player that underruns (a busy machine, short ``latency_ms``) leaves stretches of zeros.
        """
        path = self.root / f"play{len(self.players)}.raw"
        path.write_bytes(raw_s16le)
        self.players.append(
            subprocess.Popen(
                [
                    "pacat",
                    "--playback",
                    "--raw",
                    "--format=s16le",
                    f"--rate={rate}",
                    f"--channels={channels}",
                    f"--device={sink}",
                    *([f"--channel-map={MAP8}"] if channels == 8 else []),
                    f"--latency-msec={latency_ms}",
                    str(path),
                ],
                env=self.env,
            )
        )


def reinit_portaudio() -> None:
    """Make PortAudio rescan devices (it enumerates only when initialised)."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine (the message says what to install)."""


@contextmanager
def private_pulseaudio() -> Iterator[PulseAudio]:
    """A private PulseAudio server; ALSA's ``fieldcap_pulse`` PCM records its null sink and
    ``fieldcap_file`` plays ``<root>/infile.raw`` as exact, unpaced capture.

    Points PortAudio (via ``PULSE_SERVER``/``ALSA_CONFIG_PATH``) at it for the block's duration.
    """
    for tool in ("pulseaudio", "pacat"):
        if shutil.which(tool) is None:
            raise PeerUnavailable(f"{tool} is not installed (apt install pulseaudio pulseaudio-utils)")
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        raise PeerUnavailable(f"PortAudio missing: {exc} (apt install libportaudio2)") from exc
    root = Path(tempfile.mkdtemp(prefix="fieldcap-pa-"))
    run, home = root / "run", root / "home"
    run.mkdir(mode=0o700)
    home.mkdir()
    socket_path = run / "native"
    (root / "pa.pa").write_text(
        f"load-module module-native-protocol-unix socket={socket_path} auth-anonymous=1\n"
        "load-module module-null-sink sink_name=fcnull rate=48000 channels=2\n"
        f"load-module module-null-sink sink_name=fcnull8 format=s16le rate=48000 channels=8 channel_map={MAP8}\n"
        "set-default-sink fcnull\nset-default-source fcnull.monitor\n"
    )
    (root / "asoundrc").write_text(
        "pcm.fieldcap_pulse { type pulse }\nctl.fieldcap_pulse { type pulse }\n"
        "pcm.fieldcap_pulse8 { type pulse device fcnull8.monitor }\n"
        'pcm.fieldcap_file { type file slave.pcm "null" file "/dev/null" '
        f'infile "{root / "infile.raw"}" format "raw" }}\n'
    )
    # PortAudio lists a PCM only if it can open it at start-up: the infile must exist by then.
    (root / "infile.raw").write_bytes(bytes(48000 * 4))
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "-n",
            "-F",
            str(root / "pa.pa"),
            "--use-pid-file=no",
            "--disallow-exit=yes",
            "--disable-shm=yes",
            "--log-target=stderr",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise PeerUnavailable("PulseAudio did not start in this environment")
        time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "ALSA_CONFIG_PATH")}
    os.environ["PULSE_SERVER"] = f"unix:{socket_path}"
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{root / 'asoundrc'}"
    reinit_portaudio()
    pa = PulseAudio(root, proc, {**env, "PULSE_SERVER": os.environ["PULSE_SERVER"]})
    try:
        yield pa
    finally:
        for player in pa.players:
            player.kill()
            player.wait(5)
        proc.terminate()
        proc.wait(5)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseAudio]:
    """A private PulseAudio for the session (skips, saying what to install, if impossible)."""
    try:
        with private_pulseaudio() as pa:
            yield pa
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
