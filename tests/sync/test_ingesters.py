"""The central side under faults: shared subscriptions, ingesters killed at the worst moments, no
ingester at all, and a device whose broker session expired while it was offline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sync_harness import (
    PEERS,
    REPO,
    Central,
    Device,
    assert_exactly_once,
    ingest_process,
    kill9,
    running_ingester,
    running_publisher,
    settings,
    stop,
    wait_for,
)

from central.broker import LocalBroker


def test_two_ingesters_share_the_load_and_one_dies_mid_blob(
    mosquitto: LocalBroker, device: Device, pg_central: Central, tmp_path: Path
) -> None:
    device.add(records=600, blob_sizes=(2_000_000, 500_000, 65536, 3), seed=51)
    central = pg_central
    a = ingest_process(mosquitto.url, central, tmp_path / "a.log", "--group", "g1", ready=False)
    b = ingest_process(mosquitto.url, central, tmp_path / "b.log", "--group", "g1", ready=False)
    try:
        for log in ("a.log", "b.log"):
            wait_for(lambda log=log: b"ingesting from" in (tmp_path / log).read_bytes(), 60, f"{log} to subscribe")
        with running_publisher(device, settings(mosquitto.url, bandwidth_bps=800_000)) as pub:
            wait_for(lambda: central.store.count("chunks") > 0, 60, "a blob to be half uploaded")
            kill9(a)  # mid-blob: whatever it had in hand is gone
            assert central.store.count("chunks") > 0 and central.store.count("blobs") < 4
            assert pub.wait_idle(90), pub.stats
    finally:
        stop(a)
        stop(b)
    assert_exactly_once(device, central)
    for log in ("a.log", "b.log"):
        assert "Traceback" not in (tmp_path / log).read_text()
    assert b"ingesting from" in (tmp_path / "a.log").read_bytes()  # both really took part


def test_ingester_killed_after_commit_before_its_receipt(
    mosquitto: LocalBroker, device: Device, central: Central, tmp_path: Path
) -> None:
    device.add(records=300, blob_sizes=(200_000,), seed=52)
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, str(PEERS / "ingester_child.py"), mosquitto.url, central.url, str(central.tree.root)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        ready = lambda: b"ingesting from" in log.read_bytes() or child.poll() is not None  # noqa: E731
        wait_for(ready, 60, "the child to subscribe")
        with running_publisher(device, settings(mosquitto.url)) as pub:
            assert child.wait(60) == -9, log.read_text()
            stored = central.store.count("records")
            assert stored > 0 and device.confirmed() == 0  # stored, but the device heard nothing
            with running_ingester(mosquitto.url, central):
                assert pub.wait_idle(60), pub.stats
            assert pub.stats.queries > 0  # it found out by asking
    finally:
        stop(child)
    assert "KILLED after committing" in log.read_text()
    assert_exactly_once(device, central)


def test_no_ingester_running(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=200, blob_sizes=(100_000,), seed=53)
    sync = settings(mosquitto.url, receipt_timeout_s=1.0)
    with running_publisher(device, sync) as pub:
        # The broker accepts everything (PUBACK) and drops it: nobody subscribes.
        wait_for(lambda: all(s[0] == "sent" for s in device.states().values()), 30, "every record to be sent")
        time.sleep(2.5)  # beyond the receipt timeout: the device asks, and nobody answers
        assert pub.stats.queries > 0
        assert pub.stats.unrouted > 0  # the broker said so in its PUBACKs
        assert device.confirmed() == 0
        assert_exactly_once(device, central, all_confirmed=False)  # nothing was deleted either
        with running_ingester(mosquitto.url, central):
            assert pub.wait_idle(60), pub.stats
    assert_exactly_once(device, central)


def test_device_session_expired_while_it_was_offline(device: Device, central: Central) -> None:
    device.add(records=200, blob_sizes=(70_000, 150_000), seed=54)
    with LocalBroker() as broker:
        queued = {"client_id": "central-1", "session_expiry_s": 600}
        with running_ingester(broker.url, central, **queued):
            pass  # the broker now keeps a session (and a queue) for this ingester while it is away
        sync = settings(broker.url, session_expiry_s=1)
        with running_publisher(device, sync) as pub:
            wait_for(lambda: all(s[0] == "sent" for s in device.states().values()), 30, "every record to be sent")
        # The device is offline; its session expires, and with it the receipts addressed to it.
        time.sleep(1.5)
        with running_ingester(broker.url, central, **queued) as ing:
            wait_for(lambda: ing.stats.records_stored >= 200, 30, "the queued records to be stored")
            assert device.confirmed() == 0
            with running_publisher(device, sync) as pub:
                assert pub.wait_idle(60), pub.stats
    assert_exactly_once(device, central)
