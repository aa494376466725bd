"""The whole path against a real Mosquitto: records and media, priorities, limits and the checks."""

from __future__ import annotations

import json
from pathlib import Path

from mqtt_proxy import Proxy, Publish
from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    running_ingester,
    running_publisher,
    settings,
    wait_for,
)

from central.broker import LocalBroker


def test_records_and_media_are_stored_exactly_once(
    mosquitto: LocalBroker, device: Device, any_central: Central
) -> None:
    central = any_central
    device.add(records=300, blob_sizes=(0, 1, 65535, 65536, 65537, 700_000), seed=1)
    with running_ingester(mosquitto.url, central), running_publisher(device, settings(mosquitto.url)) as pub:
        assert pub.wait_idle(60), pub.stats
    assert_exactly_once(device, central)
    assert central.store.count("dead_letters") == 0
    rows = central.store.list_records(device=device.device_id, kind="capture")
    assert len(rows) == 306 and sum(r["blob_stored"] for r in rows) == 6


def _published(device: Device, central: Central, broker: LocalBroker) -> list[Publish]:
    with running_ingester(broker.url, central), Proxy(broker.port) as proxy:
        proxy.record = True
        with running_publisher(device, settings(proxy.url, max_inflight=16)) as pub:
            assert pub.wait_idle(60), pub.stats
    return [p for p in proxy.recorded if "/up/" in p.topic]


def test_records_and_verdicts_go_before_media_and_flagged_items_first(
    mosquitto: LocalBroker, device: Device, central: Central
) -> None:
    media = device.add(records=0, blob_sizes=(50_000, 50_000, 50_000, 50_000), seed=70, stream="cam")
    device.add(records=100, seed=71)
    with device.catalog() as cat:
        event = cat.add_event("note", "operator note")  # an event (priority 0) goes before every capture
        assert cat.outbox.prioritize([media[-1]]) == 1  # the operator flags the last photo
        flagged = cat.conn.execute("SELECT blob_sha256 FROM outbox WHERE record_id = ?", (media[-1],)).fetchone()[0]
    published = _published(device, central, mosquitto)
    assert_exactly_once(device, central)
    records = [i for i, p in enumerate(published) if "/up/rec/" in p.topic]
    blobs = [i for i, p in enumerate(published) if "/up/blob/" in p.topic]
    assert len(records) >= 105 and max(records) < min(blobs), "media went before records"
    assert f"/blob/{flagged}/" in published[min(blobs)].topic, "the flagged item's media did not go first"
    first_two = [json.loads(published[i].payload)["record_id"] for i in records[:2]]
    assert first_two == [media[-1], event]  # flagged (-1), then the event (0), then the rest


def test_oversized_records_are_refused_locally_and_chunks_fit_the_broker(
    tmp_path: Path, device: Device, central: Central
) -> None:
    small_broker = "max_packet_size 20000\nmax_inflight_messages 5\n"
    device.add(records=20, blob_sizes=(150_000,), seed=72)
    with device.catalog() as cat:
        big = cat.add_event("note", "big", detail={"text": "x" * 30_000})  # a record the broker could never take
    with LocalBroker(tmp_path / "broker", extra_config=small_broker) as broker:
        sync = settings(broker.url, chunk_size=65536)
        with running_ingester(broker.url, central), running_publisher(device, sync) as pub:
            wait_for(lambda: pub.stats.connected, 20, "a connection")
            assert pub._window_max == 5  # CONNACK's receive maximum
            wait_for(lambda: device.states()[big][0] == "rejected", 30, "the oversized record to be refused")
            others = {rid: s for rid, s in device.states().items() if rid != big}
            wait_for(lambda: device.confirmed() == len(others), 60, "everything else to be confirmed")
            assert pub.stats.connects == 1  # no reconnect loop
            assert pub.stats.chunks_sent >= 150_000 // 20_000  # chunks were cut below the packet limit
    (event,) = [e for e in device.events("rejected") if big in e["message"]]
    assert "exceeds" in event["message"]
    assert central.store.count("dead_letters") == 0
