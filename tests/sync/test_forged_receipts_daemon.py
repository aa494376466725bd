"""A real `fieldcap run` on an anonymous broker, a forger answering "stored" to everything it sends.

The device's data directory is a small tmpfs the test fills, so retention wants to evict: while
only the forger answers, nothing is confirmed and no media is deleted (media pauses instead), and
the forgery is an events row. Then the real ingester (`fieldcap ingest --receipt-key`) answers,
captures are confirmed, and only media the central store really holds is evicted.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sync_harness import REPO, sqlite_central, wait_for

from agent.ops.disk import disk_usage
from central.broker import LocalBroker
from sync import topics

DEVICE = "forge-01"

CONFIG = """
[agent]
device_id = "{device}"
data_dir = "{data}"

[[devices]]
name = "cam"
type = "sim-camera"
width = 320
height = 240
fps = 4

[capture.cam]
policy = "every"

[storage]
high_watermark_pct = 60
low_watermark_pct = 40
check_interval_s = 0.3

[sync]
broker = "{broker}"
receipt_timeout_s = 2.0
reconnect_max_s = 1.0
receipt_public_key = "{public}"

[metrics]
enabled = false
"""


@pytest.fixture
def small_fs(tmpfs: Callable[[int], Path]) -> Path:
    """A 16 MiB filesystem the test can fill."""
    return tmpfs(16)


class Forger:
    """Answers every record, blob init and blob fin of the device with an unsigned "stored" receipt."""

    def __init__(self, port: int) -> None:
        self.sent = 0
        self.stopped = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"fieldcap/v1/{DEVICE}/up/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")  # fieldcap/v1/<device>/up/<rec|blob|sync>/...
        receipt: dict[str, Any]
        if parts[4] == "rec":
            receipt = {"type": "record", "id": json.loads(msg.payload)["record_id"], "status": "stored"}
        elif parts[4] == "blob" and parts[-1] in ("init", "fin"):
            blob = json.loads(msg.payload)
            receipt = {"type": "blob", "id": blob["sha256"], "status": "stored", "size": blob["size"]}
            receipt["sha256"] = blob["sha256"]
        else:
            return  # media chunks and queries
        self.client.publish(topics.receipts(DEVICE), json.dumps({"receipts": [receipt]}).encode(), qos=1)
        self.sent += 1

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.client.loop_stop()
        self.client.disconnect()


def query(data: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(data / "catalog.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def fieldcap(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_forged_receipts_delete_nothing_and_the_signed_ingester_confirms(
    mosquitto: LocalBroker, small_fs: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keygen = [sys.executable, "-m", "agent", "central", "keygen", "--out", str(keys)]
    made = subprocess.run(keygen, capture_output=True, text=True, cwd=REPO, check=False)
    assert made.returncode == 0, made.stderr
    assert "receipt-key.pub" in made.stdout
    data = small_fs / "agent"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(CONFIG.format(device=DEVICE, data=data, broker=mosquitto.url, public=keys / "receipt-key.pub"))
    forger = Forger(mosquitto.port)
    agent = fieldcap("run", "--config", str(cfg), log=tmp_path / "agent.log")
    central = sqlite_central(tmp_path / "central")
    ingest: subprocess.Popen[bytes] | None = None
    try:
        wait_for((data / "catalog.sqlite").exists, 60, "the agent's catalog")
        wait_for(lambda: forger.sent >= 20, 120, "the forger to answer 20 messages")
        wait_for(lambda: bool(query(data, "SELECT 1 FROM events WHERE kind = 'forged_receipt'")), 60, "forged_receipt")
        # Fill the disk past the high watermark: retention would now evict anything confirmed.
        (small_fs / "ballast").write_bytes(b"\0" * int(disk_usage(small_fs).total_bytes * 0.62))
        wait_for(lambda: bool(query(data, "SELECT 1 FROM events WHERE kind = 'media_paused'")), 60, "media to pause")
        assert forger.sent >= 20
        assert not query(data, "SELECT 1 FROM outbox WHERE confirmed_utc IS NOT NULL OR record_state = 'confirmed'")
        assert not query(data, "SELECT 1 FROM captures WHERE media_deleted_utc IS NOT NULL OR state = 'confirmed'")
        assert not query(data, "SELECT 1 FROM events WHERE kind = 'eviction'")
        files = query(data, "SELECT path FROM captures WHERE path IS NOT NULL")
        assert files and all((data / r["path"]).exists() for r in files)
        (forged,) = query(data, "SELECT message, detail_json FROM events WHERE kind = 'forged_receipt'")
        assert json.loads(forged["detail_json"])["reason"] == "unsigned"
        forger.stop()

        # The real ingester, with the signing key: receipts confirm, and eviction frees space.
        ingest = fieldcap(
            "ingest",
            "--broker",
            mosquitto.url,
            "--store",
            central.url,
            "--blobs",
            str(central.tree.root),
            "--receipt-key",
            str(keys / "receipt-key"),
            log=tmp_path / "ingest.log",
        )
        wait_for(lambda: bool(query(data, "SELECT 1 FROM events WHERE kind = 'eviction'")), 120, "an eviction")
    finally:
        stop(agent)
        if ingest is not None:
            stop(ingest)
        forger.stop()
    stored = {r["record_id"]: r for r in central.store.list_records(device=DEVICE)}
    evicted = query(data, "SELECT record_id, sha256, path FROM captures WHERE media_deleted_utc IS NOT NULL")
    assert evicted
    for row in evicted:  # only what the central side really holds, with the same bytes
        assert row["record_id"] in stored and stored[row["record_id"]]["sha256"] == row["sha256"]
        assert central.tree.exists(row["sha256"], stored[row["record_id"]]["size"] or 0)
        assert not (data / row["path"]).exists()
    # Only the one event for the forgery: the flood was counted, the honest receipts all verified.
    assert len(query(data, "SELECT 1 FROM events WHERE kind = 'forged_receipt'")) == 1
    central.store.close()
