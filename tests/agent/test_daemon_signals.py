"""SIGTERM and SIGHUP on a real `fieldcap run` process, checked through its catalog and `fieldcap status`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

FIELDCAP = str(Path(sys.executable).with_name("fieldcap"))

BASE = """
[agent]
device_id = "sig-01"
data_dir = "{data}"

[[devices]]
name = "mic"
type = "sim-microphone"
sample_rate = 16000
channels = 1
blocksize = 800

[[devices]]
name = "env"
type = "sim-serial"
rate_hz = 5

[capture.mic]
policy = "segment"
segment_s = 120

[capture.env]
policy = "readings"
batch_s = 120

[sync]
enabled = false

[metrics]
port = 0

[daemon]
status_interval_s = 0.5
stop_timeout_s = 15
"""

EXTRA_DEVICE = """
[[devices]]
name = "env2"
type = "sim-serial"
rate_hz = 2
"""


def status(data: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((data / "status.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def query(data: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(data / "catalog.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    data = tmp_path / "data"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(BASE.format(data=data))
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen([FIELDCAP, "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until("the agent to run", lambda: status(data).get("state") == "running")
        yield proc, cfg, data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_sigterm_flushes_open_segments_and_exits_in_time(agent: tuple[subprocess.Popen[str], Path, Path]) -> None:
    proc, _cfg, data = agent
    wait_until("audio and readings", lambda: all(s["samples"] > 20 for s in status(data)["streams"].values()))
    assert not query(data, "SELECT * FROM captures")  # 120 s segments and batches: nothing is complete yet
    running = subprocess.run(
        [FIELDCAP, "status", "--data-dir", str(data), "--json"], capture_output=True, text=True, check=False
    )
    assert running.returncode in (0, 2), running.stderr
    assert json.loads(running.stdout)["running"] is True
    # The daemon opts out of transparent huge pages, which would round its RSS up in 2 MB steps.
    proc_status = Path(f"/proc/{proc.pid}/status").read_text()
    if "THP_enabled:" in proc_status:  # Linux >= 5.0 reports it
        assert "THP_enabled:\t0" in proc_status

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    took = time.monotonic() - t0
    assert took < 15, f"stop took {took:.1f} s, over stop_timeout_s"

    # The open audio segment and the open readings batch were flushed, not lost.
    segments = query(data, "SELECT * FROM captures WHERE stream = 'mic'")
    assert len(segments) == 1
    meta = json.loads(segments[0]["meta_json"])
    assert 0 < meta["frames"] < 120 * 16000
    wav = data / segments[0]["path"]
    assert wav.stat().st_size == segments[0]["size"] == 44 + 2 * meta["frames"]
    batches = query(data, "SELECT * FROM captures WHERE stream = 'env'")
    assert len(batches) == 1
    readings = query(data, "SELECT COUNT(*) AS n FROM readings WHERE stream = 'env'")[0]["n"]
    assert readings >= 20 * 3  # three fields per reading
    # Outbox state is the catalog: every committed capture has its outbox row.
    assert query(data, "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'capture'")[0]["n"] == 2
    assert status(data)["state"] == "stopped"

    stopped = subprocess.run([FIELDCAP, "status", "--data-dir", str(data)], capture_output=True, text=True, check=False)
    assert stopped.returncode == 3
    assert "not running (stopped" in stopped.stdout
    # Participants' data is not world-readable even outside systemd (the daemon sets umask 027).
    for path in (data / "catalog.sqlite", data / "status.json", wav, wav.parent):
        assert path.stat().st_mode & 0o007 == 0, f"{path} is world-accessible: {oct(path.stat().st_mode)}"


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise(
    agent: tuple[subprocess.Popen[str], Path, Path],
) -> None:
    proc, cfg, data = agent
    good = cfg.read_text()
    pid = status(data)["pid"]

    # 1. Invalid: a typo. The agent keeps running the old configuration and says why.
    cfg.write_text(good.replace("rate_hz = 5", "rate_hz = 5\nrate_hz_typo = 1"))
    proc.send_signal(signal.SIGHUP)
    rejected = wait_until(
        "a config_rejected event", lambda: query(data, "SELECT * FROM events WHERE kind = ?", "config_rejected")
    )
    assert "devices[1].rate_hz_typo: unknown key" in rejected[0]["message"]
    assert "previous configuration kept" in rejected[0]["message"]
    snap = wait_until("the reload result in the status", lambda: status(data).get("last_reload_error") and status(data))
    assert "rate_hz_typo" in snap["last_reload_error"]
    assert snap["reloads"] == {"ok": 0, "rejected": 1}
    assert proc.poll() is None and snap["pid"] == pid
    samples = snap["streams"]["env"]["samples"]
    wait_until("env to keep capturing", lambda: status(data)["streams"]["env"]["samples"] > samples + 5)

    # 2. Valid but only a restart can apply it (another data directory): refused the same way.
    cfg.write_text(good.replace(f'data_dir = "{data}"', f'data_dir = "{data}-elsewhere"'))
    proc.send_signal(signal.SIGHUP)
    wait_until("a second rejection", lambda: status(data).get("reloads", {}).get("rejected") == 2)
    assert "agent changed; that takes effect only on a restart" in status(data)["last_reload_error"]

    # 3. Valid: a new device. Only that stream starts; the others keep running untouched.
    mic_before = status(data)["streams"]["mic"]
    cfg.write_text(good + EXTRA_DEVICE)
    proc.send_signal(signal.SIGHUP)
    snap = wait_until(
        "env2 running", lambda: (s := status(data)) and s["streams"].get("env2", {}).get("state") == "running" and s
    )
    assert snap["reloads"] == {"ok": 1, "rejected": 2}
    assert snap["last_reload_error"] is None
    reloaded = query(data, "SELECT * FROM events WHERE kind = 'config_reloaded'")
    assert json.loads(reloaded[0]["detail_json"])["changes"] == ["stream env2 added"]
    mic_after = snap["streams"]["mic"]
    assert mic_after["restarts"] == mic_before["restarts"] == 0
    assert mic_after["samples"] > mic_before["samples"]
    assert not query(data, "SELECT * FROM captures WHERE stream = 'mic'")  # the open segment was not cut
    assert proc.poll() is None and status(data)["pid"] == pid
