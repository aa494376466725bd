"""``fieldcap central status`` against a real broker, a real ``fieldcap ingest`` and a real device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sync_harness import REPO, Central, Device, ingest_process, kill9, running_publisher, settings, stop, wait_for

from central.broker import LocalBroker


def status(central: Central, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "central", "status", "--store", central.url, "--json", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def test_status_sees_the_ingester_and_the_device_then_degrades_when_it_dies(
    mosquitto: LocalBroker, device: Device, central: Central, tmp_path: Path
) -> None:
    ing = ingest_process(mosquitto.url, central, tmp_path / "ingest.log", "--client-id", "ingest-a")
    try:
        device.add(records=20, blob_sizes=(40_000,), seed=7)
        with running_publisher(device, settings(mosquitto.url)) as pub:
            assert pub.wait_idle(60), pub.stats
        central.store.dead_letter("fieldcap/v1/dev-1/up/junk", "dev-1", "not a topic we know", b"x")
        blobs = str(central.tree.root)
        rc, doc = status(central, "--blobs", blobs)
        assert rc == 0, doc
        assert doc["health"] == "healthy" and doc["problems"] == []
        [seen] = doc["ingesters"]
        assert seen["client_id"] == "ingest-a" and seen["state"] == "alive" and seen["pid"] == ing.pid
        [dev] = doc["devices"]
        assert dev["device"] == "dev-1" and dev["last_seen_utc"] is not None and dev["open_uploads"] == 0
        assert doc["dead_letters"] == [{"device": "dev-1", "reason": "not a topic we know", "count": 1}]
        assert doc["store"]["reachable"] and doc["store"]["schema"] >= 6 and doc["store"]["bytes"] > 0
        assert doc["blobs"]["reachable"]
    finally:
        kill9(ing)  # no goodbye: only the heartbeat's age tells
    assert status(central)[0] == 0  # seen less than 5 minutes ago
    wait_for(lambda: status(central, "--stale", "1")[0] == 4, 30, "status to call the silent ingester gone")
    rc, doc = status(central, "--stale", "1")
    assert doc["health"] == "degraded" and doc["ingesters"][0]["state"] == "stale"
    assert "no ingester has been seen" in doc["problems"][0]


def test_a_stopped_ingester_says_so_and_counts_what_it_did(
    mosquitto: LocalBroker, device: Device, central: Central, tmp_path: Path
) -> None:
    ing = ingest_process(mosquitto.url, central, tmp_path / "ingest.log", "--client-id", "ingest-b")
    device.add(records=5, seed=3)
    with running_publisher(device, settings(mosquitto.url)) as pub:
        assert pub.wait_idle(60), pub.stats
    stop(ing)
    rc, doc = status(central)
    assert rc == 4 and doc["ingesters"][0]["state"] == "stopped"
    assert doc["ingesters"][0]["counters"]["records_stored"] == 5


def test_an_unusable_blob_store_or_store_is_an_error(central: Central, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"not a database " * 100)
    rc, doc = status(central, "--blobs", str(not_a_dir / "blobs"))
    assert rc == 1 and doc["health"] == "error" and not doc["blobs"]["reachable"]
    bad = Central(central.store, central.tree, f"sqlite:///{not_a_dir}")
    rc, doc = status(bad)
    assert rc == 1 and not doc["store"]["reachable"]
