"""A serial sensor whose pty goes away is restarted with backoff, then given up; the camera never notices."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import tty
from pathlib import Path
from typing import Any

from waits import wait_until

from agent.config import Config, parse_config
from agent.daemon import Agent


def make_config(data: Path, port: str) -> Config:
    return parse_config(
        {
            "agent": {"device_id": "restart-01", "data_dir": str(data)},
            "devices": [
                {"name": "cam", "type": "sim-camera", "width": 64, "height": 48, "fps": 10},
                {
                    "name": "line",
                    "type": "serial-lines",
                    "port": port,
                    "format": "jsonl",
                    "exclusive": False,
                    "fields": [{"name": "temperature_c"}],
                    "max_reconnects": 0,
                    "read_timeout_s": 3,
                    "open_timeout_s": 1,
                },
            ],
            "capture": {"cam": {"policy": "interval", "interval_s": 0.3}, "line": {"policy": "readings", "batch_s": 1}},
            "sync": {"enabled": False},
            "daemon": {"restart_initial_s": 0.2, "restart_max_s": 1.0, "max_restarts": 4},
        }
    )


def events(agent: Agent, stream: str) -> list[dict[str, Any]]:
    with agent.catalog() as cat:
        rows = cat.conn.execute("SELECT * FROM events WHERE stream = ? ORDER BY t_mono_ns", (stream,)).fetchall()
    return [{**dict(r), "detail": json.loads(r["detail_json"])} for r in rows]


def test_a_failing_driver_is_restarted_with_backoff_and_a_limit_while_others_run(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    stop_feed = threading.Event()

    def feed() -> None:  # the sensor: one JSON line every 50 ms
        i = 0
        while not stop_feed.wait(0.05):
            with contextlib.suppress(OSError):
                os.write(master, json.dumps({"temperature_c": 20 + i % 5}).encode() + b"\n")
            i += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    agent = Agent(make_config(tmp_path / "data", os.ttyname(slave)))
    agent.start()
    try:
        cam, line = agent.streams["cam"], agent.streams["line"]
        wait_until("readings from the pty", lambda: line.samples >= 5 and line.state == "running")

        # The device goes away: both ends of the pty close, so the node vanishes and reopening fails.
        stop_feed.set()
        feeder.join(2)
        os.close(master)
        os.close(slave)
        cam_at_loss = cam.samples
        wait_until("the stream to be given up", lambda: line.state == "failed", timeout=60)
        assert line.restarts == 4
        failed_at = time.monotonic()

        # The camera kept capturing throughout, and keeps capturing, without a restart.
        assert cam.samples > cam_at_loss
        wait_until("more camera frames", lambda: cam.samples > cam_at_loss + 10)
        assert cam.state == "running" and cam.restarts == 0
        # (a loaded machine may make the camera twin skip frames: those are drop events, not failures)
        assert not [e for e in events(agent, "cam") if e["kind"] not in ("drop", "gap")]

        evs = events(agent, "line")
        restarts = [e for e in evs if e["detail"].get("attempt")]
        assert [e["detail"]["attempt"] for e in restarts] == [1, 2, 3, 4]
        assert {e["kind"] for e in restarts} <= {"driver_error", "driver_stall"}
        for e in restarts:  # doubling from 0.2 s, capped at 1 s, jittered into [base/2, base]
            base = min(1.0, 0.2 * 2 ** (e["detail"]["attempt"] - 1))
            assert base / 2 <= e["detail"]["backoff_s"] <= base
            assert "restart" in e["message"]
        for before, after in itertools.pairwise(restarts):  # the wait really happened
            assert after["t_mono_ns"] - before["t_mono_ns"] >= before["detail"]["backoff_s"] * 1e9
        assert "I/O failure on serial port" in restarts[0]["message"]  # the read failed first
        assert "cannot open serial port" in restarts[-1]["message"]  # then the pty node was gone
        assert evs[-1]["kind"] == "stream_failed"
        assert "given up after 4 restart(s)" in evs[-1]["message"]
        assert "reload" in evs[-1]["message"]
        snap = agent.snapshot()
        assert snap["streams"]["line"]["state"] == "failed"
        assert snap["streams"]["line"]["restarts"] == 4

        # Given up means given up: no further attempts...
        time.sleep(1.5)
        assert len(events(agent, "line")) == len(evs)
        # ...until a reload re-arms it (the device is still missing, so it fails again).
        assert agent.apply(agent.config) == ["stream line restarted"]
        wait_until("a new attempt", lambda: len(events(agent, "line")) > len(evs))
        assert cam.restarts == 0 and time.monotonic() > failed_at
    finally:
        agent.stop(20)
    with agent.catalog() as cat:
        late = cat.conn.execute(
            "SELECT COUNT(*) FROM captures WHERE stream = 'cam' AND t_start_mono_ns > ?",
            (max(e["t_mono_ns"] for e in evs),),
        ).fetchone()[0]
    assert late > 0  # camera frames were committed after the serial stream was given up
