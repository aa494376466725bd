"""The booth end to end, driven like an operator through a pseudo-terminal.

Audio is real: ``espeak-ng`` speech (and, for one take, loud white noise from ``sox`` mixed in by
PulseAudio) is played into a private PulseAudio null sink, whose monitor the ``microphone``
driver records through PortAudio -> ALSA -> PulseAudio as a two-channel near + mid pair. The
booth syncs through a throwaway Mosquitto to an ingester process and a central SQLite store.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from agent.catalog.db import Catalog
from central.broker import LocalBroker
from central.store import open_store
from sync.files import sha256_file

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

DRIVER_PEERS = Path(__file__).resolve().parents[1] / "drivers" / "conftest.py"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\x1b\][^\x07]*\x07")
RAW_48K_STEREO = "-r 48000 -c 2 -b 16 -e signed-integer -t raw"
SUBJECT = "SUBJ-RAW-0042"
DEVICE = "booth-pty"
SCRIPT = [
    ("w1", "seven", "word", ""),
    ("p1", "The quick brown fox jumps over the lazy dog.", "sentence", "read it at your normal pace"),
    ("s1", "good morning", "phrase", ""),
]


def _driver_peers() -> Any:
    """The PulseAudio helper of the driver tests (tests are not a package)."""
    spec = importlib.util.spec_from_file_location("fieldcap_test_driver_peers", DRIVER_PEERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pulse() -> Iterator[Any]:
    peers = _driver_peers()
    for tool in ("espeak-ng", "sox"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            pytest.fail(f"{tool} is not installed: run `./dev test`, which installs it (apt install {tool})")
    try:
        with peers.private_pulseaudio() as pa:
            yield pa
    except peers.PeerUnavailable as exc:
        pytest.fail(f"the PulseAudio peer cannot run here: {exc}")


def _speech(tmp: Path, name: str, text: str) -> bytes:
    """espeak-ng speech as 48 kHz s16le: near channel, and the mid channel 6 dB lower."""
    wav, raw = tmp / f"{name}.wav", tmp / f"{name}.raw"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(wav), *RAW_48K_STEREO.split(), str(raw), "remix", "1", "1v0.5"], check=True, capture_output=True
    )
    return raw.read_bytes()


def _noise(tmp: Path, seconds: float) -> bytes:
    raw = tmp / "noise.raw"
    subprocess.run(
        ["sox", "-n", *RAW_48K_STEREO.split(), str(raw), "synth", str(seconds), "whitenoise", "vol", "0.3"],
        check=True,
        capture_output=True,
    )
    return raw.read_bytes()


class Screen:
    """What the booth draws, ANSI codes removed; waits for text to appear after a mark."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.text = ""
        self.mark = 0

    def pump(self, timeout: float = 0.1) -> None:
        with contextlib.suppress(pexpect.TIMEOUT):
            self.text += ANSI.sub("", self.child.read_nonblocking(1 << 16, timeout))

    def wait(self, pattern: str, timeout: float = 90.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.text, self.mark)
            if found:
                self.mark = found.end()
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} on the booth's screen within {timeout:g} s; it shows:\n{self.tail()}")
            try:
                self.pump(0.2)
            except pexpect.EOF:
                found = regex.search(self.text, self.mark)
                if found:
                    return found
                pytest.fail(f"the booth exited before showing {pattern!r}:\n{self.tail()}")

    def send(self, key: str) -> None:
        self.pump(0.05)
        self.mark = len(self.text)
        self.child.send(key)

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(0.1)

    def tail(self, n: int = 4000) -> str:
        return self.text[-n:]

    def finish(self, timeout: float = 240.0) -> int:
        """Read to the end (the booth drains QC and sync after the UI) and return the exit status."""
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            try:
                self.pump(0.5)
            except pexpect.EOF:
                break
        self.child.close()
        status = self.child.exitstatus
        assert status is not None, f"the booth did not exit within {timeout:g} s:\n{self.tail()}"
        return int(status)


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A throwaway Mosquitto and an ingester process writing to a central SQLite store."""
    root = tmp_path_factory.mktemp("central")
    url = f"sqlite:///{root / 'central.db'}"
    with LocalBroker(root / "broker") as broker:
        log = (root / "ingest.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "ingest",
                "--broker",
                broker.url,
                "--store",
                url,
                "--blobs",
                str(root / "blobs"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield {"broker": broker.url, "store": url, "blobs": root / "blobs"}
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()


@pytest.fixture
def booth_env(tmp_path: Path, central: dict[str, Any], model_dir: Path, pulse: Any) -> dict[str, Any]:
    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))  # random bytes, as the docs say (`head -c 32 /dev/urandom`)
    config = tmp_path / "booth.toml"
    config.write_text(
        f"""
[agent]
device_id = "{DEVICE}"
site = "lab"
station = "booth-1"
data_dir = "{tmp_path / "data"}"

[[devices]]
name = "mics"
type = "microphone"
device = "fieldcap_pulse"
channels = 2
channel_names = ["near", "mid"]

[capture.mics]
policy = "take"
pre_s = 0.3
post_s = 0.3

[session]
subject_key_file = "{key}"
operator = "op-7"

[qc]
model_dir = "{model_dir}"

[sync]
broker = "{central["broker"]}"
receipt_timeout_s = 5.0
"""
    )
    script = tmp_path / "prompts.tsv"
    script.write_text(
        "id\ttext\ttype\tinstructions\n" + "".join(f"{i}\t{t}\t{k}\t{n}\n" for i, t, k, n in SCRIPT),
        encoding="utf-8",
    )
    audio = {item: _speech(tmp_path, item, text) for item, text, _, _ in SCRIPT}
    return {
        "config": config,
        "script": script,
        "data": tmp_path / "data",
        "audio": audio,
        "noise": _noise(tmp_path, 12.0),
        "central": central,
        "pulse": pulse,
    }


def _spawn(args: list[str]) -> Screen:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140", "LINES": "44", "PYTHONUNBUFFERED": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agent", *args],
        env=env,
        dimensions=(44, 140),
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
    )
    return Screen(child)


def _record(screen: Screen, pulse: Any, raw: bytes, *, key: str = " ", noise: bytes | None = None) -> re.Match[str]:
    """Press ``key`` (record, or retake), speak (with noise throughout when given), stop; return the QC line."""
    noise_player = None
    if noise is not None:
        pulse.play(noise)
        noise_player = pulse.players[-1]
        time.sleep(0.5)  # the noise runs before the take starts, so the pre-roll has it too
    screen.send(key)
    screen.wait(r"● REC")
    screen.idle(0.3)  # the subject starts reading a moment after the red light
    pulse.play(raw)
    player = pulse.players[-1]
    while player.poll() is None:
        screen.pump(0.1)
    screen.idle(1.0)  # and the operator stops a moment after the last word (the monitor path lags)
    screen.send(" ")
    qc = screen.wait(r"QC (instant|full): (PASS|FAIL|REVIEW)[^\n]*shown (\d+\.\d+) s after stop")
    if noise_player is not None:
        noise_player.kill()
        noise_player.wait(5)
    return qc


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False, **kw)


def test_booth_session_with_noise_retake_crash_resume_rerecord_and_sync(booth_env: dict[str, Any]) -> None:
    env = booth_env
    pulse, audio = env["pulse"], env["audio"]
    common = ["--config", str(env["config"]), "--countdown", "1", "--sync-wait", "90"]
    booth_args = ["booth", "--script", str(env["script"]), "--subject", SUBJECT, "--round", "1", *common]
    latencies: list[float] = []

    # --- first sitting: mic test, a clean take, a noisy take flagged and retaken --------------
    screen = _spawn(booth_args)
    screen.wait(r"MIC TEST")
    pulse.play(audio["p1"])
    screen.wait(r"mics:near[^\n]*\bok\b")
    screen.wait(r"mics:mid[^\n]*\bok\b")
    pulse.players[-1].wait(30)  # the subject finishes the test sentence
    screen.send("\r")
    screen.wait(r"READY")
    screen.wait(r"w1 · word")
    screen.wait(r"item 1 of 3")

    qc = _record(screen, pulse, audio["w1"])
    assert qc.group(2) == "PASS", screen.tail()
    latencies.append(float(qc.group(3)))
    screen.send("a")
    screen.wait(r"p1 · sentence")
    screen.wait(r"read it at your normal pace")

    qc = _record(screen, pulse, audio["p1"], noise=env["noise"])
    assert qc.group(2) == "FAIL", screen.tail()
    screen.wait(r"mics(:near)?: snr -?\d+(\.\d+)? dB < 20 dB: too much background noise")
    latencies.append(float(qc.group(3)))
    screen.send("a")  # accepting a failed take needs a second press: the operator retakes instead
    screen.wait(r"QC failed: press \[a\] again to accept anyway")
    qc = _record(screen, pulse, audio["p1"], key="t")  # retake: a new take that supersedes the noisy one
    assert qc.group(2) == "PASS", screen.tail()
    screen.wait(r"supersedes take 1")
    screen.send("a")
    screen.wait(r"s1 · phrase")
    screen.wait(r"2 of 3 items accepted")

    # --- crash while recording s1 ------------------------------------------------------------
    screen.send(" ")
    screen.wait(r"● REC")
    pulse.play(audio["s1"])
    screen.idle(0.8)
    screen.child.kill(signal.SIGKILL)
    screen.child.close(force=True)

    # --- second sitting: resume from the catalog, finish the script ----------------------------
    screen = _spawn([*booth_args, "--no-mic-test"])
    screen.wait(r"Resume session \S+ started \S+ \(2 of 3 items accepted\)\?")
    screen.child.sendline("y")
    screen.wait(r"s1 · phrase")
    screen.wait(r"take 1 recorded before: failed")  # the crash left take 1 failed, not lost
    qc = _record(screen, pulse, audio["s1"])
    assert qc.group(2) == "PASS", screen.tail()
    latencies.append(float(qc.group(3)))
    screen.send("a")
    screen.wait(r"Every item has an accepted take")
    screen.send("q")
    assert screen.finish() == 0, screen.tail()
    screen.wait(r"3 of 3 items accepted - complete")
    screen.wait(r"everything recorded is confirmed by the central store")

    # --- later: re-record w1; the accepted take is kept, superseded ------------------------------
    screen = _spawn(["rerecord", "latest", "w1", "--yes", "--no-mic-test", *common])
    screen.wait(r"RE-RECORD")
    screen.wait(r"w1 · word")
    qc = _record(screen, pulse, audio["w1"])
    assert qc.group(2) == "PASS", screen.tail()
    screen.wait(r"supersedes take 1")
    screen.send("a")
    screen.wait(r"Every item has an accepted take")
    screen.send("q")
    assert screen.finish() == 0, screen.tail()

    # --- what the catalog, the CLI and the central store say --------------------------------------
    data = env["data"]
    cov = _run(["coverage", "--config", str(env["config"]), "--json"])
    assert cov.returncode == 0, cov.stdout + cov.stderr
    (session,) = json.loads(cov.stdout)["sessions"]
    assert session["complete"] and session["cells"] == 6 and session["microphones"] == ["mics:near", "mics:mid"]

    review = _run(["review", "--data-dir", str(data), "--failed", "--json"])
    failed = [json.loads(line) for line in review.stdout.splitlines()]
    noisy = [r for r in failed if r["item_id"] == "p1" and r["take"] == 1]
    assert {r["mic"] for r in noisy} == {"mics:near", "mics:mid"}, failed  # the noise reached both microphones
    for row in noisy:  # each microphone judged on its own, with its own reason
        assert row["verdict"] == "fail" and row["scope"] == "microphone" and not row["current"], row
        assert any(r.startswith("snr ") and "background noise" in r for r in row["reasons"]), row

    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        # three booth runs (sitting, resume after the crash, rerecord): one session, nothing beside it
        assert [r[0] for r in cat.conn.execute("SELECT kind FROM sessions")] == ["booth"]
        takes = {(r["item_id"], r["take_no"]): dict(r) for r in cat.conn.execute("SELECT * FROM takes")}
        assert sorted(takes) == [("p1", 1), ("p1", 2), ("s1", 1), ("s1", 2), ("w1", 1), ("w1", 2)]
        assert takes[("s1", 1)]["status"] == "failed"  # interrupted by the crash
        for item, n in takes:
            if n > 1:
                assert takes[(item, n)]["supersedes"] == takes[(item, n - 1)]["take_id"]
        captures = {r["record_id"]: dict(r) for r in cat.conn.execute("SELECT * FROM captures WHERE kind = 'take'")}
        for take in takes.values():
            for ids in json.loads(take["captures_json"]).values():
                cap = captures[ids[0]]  # every version is still there, with its media
                assert sha256_file(data / cap["path"])[0] == cap["sha256"]
        verdicts = {r[0]: r[1] for r in cat.conn.execute("SELECT capture_id, verdict FROM verdicts")}
        noisy_capture = json.loads(takes[("p1", 1)]["captures_json"])["mics"][0]
        assert verdicts[noisy_capture] == "fail"
        decisions = [
            json.loads(r[0])
            for r in cat.conn.execute("SELECT detail_json FROM events WHERE kind = 'booth_decision' ORDER BY t_utc_ns")
        ]
        assert [(d["item_id"], d["take_no"]) for d in decisions] == [("w1", 1), ("p1", 2), ("s1", 2), ("w1", 2)]
        assert cat.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'booth_mic_test'").fetchone()[0] == 1
        unconfirmed = cat.conn.execute(
            "SELECT COUNT(*) FROM captures WHERE kind = 'take' AND state != 'confirmed'"
        ).fetchone()[0]
        per_mic, per_mic_confirmed = cat.conn.execute(
            "SELECT COUNT(*), SUM(record_state = 'confirmed') FROM outbox WHERE kind = 'channel_verdict'"
        ).fetchone()
    # every take with media was screened per microphone (the crashed sitting's by the next one), and synced
    assert per_mic == sum(1 for c in captures.values() if c["path"]) and per_mic_confirmed == per_mic
    for path in data.glob("catalog.sqlite*"):
        assert SUBJECT.encode() not in path.read_bytes()

    # every take, accepted or superseded, reached the central store with the same bytes
    store = open_store(env["central"]["store"])
    try:
        central = {r["record_id"]: r for r in store.list_records(device=DEVICE)}
    finally:
        store.close()
    assert unconfirmed == 0
    for cap in captures.values():
        row = central[cap["record_id"]]
        assert row["sha256"] == cap["sha256"] and row["blob_stored"]
    assert sum(1 for r in central.values() if r["kind"] == "take") >= len(takes)
    assert sum(1 for r in central.values() if r["kind"] == "channel_verdict") == per_mic
    print(f"instant QC shown after stop (s): {latencies}")
    assert all(t < 15 for t in latencies)  # generous: 2 shared cores; see the report for typical values


def test_a_missing_microphone_is_a_clear_error(booth_env: dict[str, Any]) -> None:
    config = booth_env["config"]
    config.write_text(config.read_text().replace('device = "fieldcap_pulse"', 'device = "USB Booth Interface"'))
    screen = _spawn(["booth", "--script", str(booth_env["script"]), "--subject", SUBJECT, "--config", str(config)])
    assert screen.finish(60) == 1
    screen.wait(r"mics: audio device 'USB Booth Interface' matches no input device\(s\); inputs: .*fieldcap_pulse")
    assert "Traceback" not in screen.text
    with Catalog(booth_env["data"] / "catalog.sqlite", DEVICE) as cat:  # nothing was started
        assert cat.conn.execute("SELECT COUNT(*) FROM sessions WHERE kind = 'booth'").fetchone()[0] == 0


def test_ctrl_c_while_recording_keeps_the_take_and_quits(tmp_path: Path, model_dir: Path) -> None:
    """Over the simulated microphone pair: Ctrl-C aborts the take (kept, marked aborted) and exits cleanly."""
    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))
    config = tmp_path / "sim.toml"
    config.write_text(
        f'[agent]\ndevice_id = "sim-booth"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[devices]]\nname = "mics"\ntype = "sim-microphone"\nchannels = 2\nspeech_like = true\n'
        f'[session]\nsubject_key_file = "{key}"\n[qc]\nmodel_dir = "{model_dir}"\n[sync]\nenabled = false\n'
    )
    script = tmp_path / "s.csv"
    script.write_text("x1,hello there,phrase\n")
    screen = _spawn(["booth", "--script", str(script), "--subject", "S-5", "--config", str(config), "--countdown", "0"])
    screen.wait(r"capture policy 'segment' replaced by 'take'")
    screen.wait(r"MIC TEST")
    screen.idle(1.0)
    screen.send("\r")
    screen.wait(r"hello there")
    screen.send(" ")
    screen.wait(r"● REC")
    screen.idle(1.0)
    screen.send("\x03")
    assert screen.finish(120) == 0, screen.tail()
    screen.wait(r"0 of 1 items accepted")
    with Catalog(tmp_path / "data" / "catalog.sqlite", "sim-booth") as cat:
        (status,) = cat.conn.execute("SELECT status FROM takes").fetchone()
        assert status == "aborted"
        assert cat.conn.execute("SELECT COUNT(*) FROM captures WHERE kind = 'take'").fetchone()[0] == 1


def test_the_subject_id_can_be_typed_at_a_hidden_prompt(tmp_path: Path, model_dir: Path) -> None:
    """``--subject -``: the ID is asked for twice, never echoed, never in the process list; its pseudonym is kept."""
    from agent.sessions.takes import pseudonym

    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))
    config = tmp_path / "sim.toml"
    config.write_text(
        f'[agent]\ndevice_id = "sim-booth"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[devices]]\nname = "mics"\ntype = "sim-microphone"\nchannels = 2\nspeech_like = true\n'
        f'[session]\nsubject_key_file = "{key}"\n[qc]\nmodel_dir = "{model_dir}"\n[sync]\nenabled = false\n'
    )
    script = tmp_path / "s.csv"
    script.write_text("x1,hello there,phrase\n")
    screen = _spawn(["booth", "--script", str(script), "--subject", "-", "--config", str(config), "--countdown", "0"])
    screen.wait(r"subject ID: ")
    assert "SECRET-77" not in Path(f"/proc/{screen.child.pid}/cmdline").read_bytes().decode(errors="replace")
    screen.send("SECRET-77\r")
    screen.wait(r"Repeat for confirmation: ")
    screen.send("SECRET-77\r")
    screen.wait(r"MIC TEST")
    screen.idle(1.0)
    screen.send("\r")
    screen.wait(r"hello there")
    screen.send("q")
    assert screen.finish(120) == 0, screen.tail()
    assert "SECRET-77" not in screen.text  # hidden input: not echoed to the terminal
    with Catalog(tmp_path / "data" / "catalog.sqlite", "sim-booth") as cat:
        (stored,) = cat.conn.execute("SELECT subject_pseudonym FROM sessions WHERE kind = 'booth'").fetchone()
    assert stored == pseudonym("SECRET-77", key.read_bytes())
