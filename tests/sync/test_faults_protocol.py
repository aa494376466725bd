"""Message-level faults on the way from the device to a real Mosquitto: duplicated and replayed
messages, repeated ``fin``, out-of-order, missing and corrupted chunks.

The proxy between the device and the broker parses each PUBLISH and duplicates, holds back, drops
(answering the PUBACK itself, like a broker that accepts and loses) or corrupts it.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import paho.mqtt.client as mqtt
from mqtt_proxy import Action, Proxy
from paho.mqtt.enums import CallbackAPIVersion
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
from central.ingester import IngestStats
from sync import topics

BLOBS = (300_000, 65536 * 3 + 7, 1)


def _run(broker: LocalBroker, device: Device, central: Central, rule: object) -> tuple[Proxy, IngestStats]:
    device.add(records=150, blob_sizes=BLOBS, seed=31)
    with running_ingester(broker.url, central) as ing, Proxy(broker.port) as proxy:
        proxy.on_publish = rule  # type: ignore[assignment]
        proxy.record = True
        with running_publisher(device, settings(proxy.url)) as pub:
            assert pub.wait_idle(60), pub.stats
    assert_exactly_once(device, central)
    return proxy, ing.stats


def test_every_message_duplicated(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    _proxy, stats = _run(mosquitto, device, central, lambda _topic, _payload: "duplicate")
    assert stats.duplicates >= 150  # every record arrived twice and was stored once
    assert central.store.count("dead_letters") == 0


def test_repeated_fin(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    seen: Counter[str] = Counter()

    def rule(topic: str, payload: bytes) -> Action:
        if topic.endswith("/fin"):
            seen[topic] += 1
            return "duplicate"
        return "forward"

    _run(mosquitto, device, central, rule)
    assert len(seen) == len(BLOBS)
    assert central.store.count("dead_letters") == 0


def test_out_of_order_chunks(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    held = Counter[str]()

    def rule(topic: str, payload: bytes) -> Action:
        if "/c/" in topic and int(topic.rsplit("/", 1)[1]) % (3 * 65536) == 0:
            held[topic] += 1
            return ("hold", 2)  # goes out after the next two publishes
        return "forward"

    _run(mosquitto, device, central, rule)
    assert held, "nothing was reordered"
    assert central.store.count("dead_letters") == 0


def test_missing_chunks_are_asked_for_again(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    dropped: set[str] = set()

    def rule(topic: str, payload: bytes) -> Action:
        if "/c/" in topic and topic.endswith("/c/65536") and topic not in dropped:
            dropped.add(topic)  # the broker "accepts" it and it vanishes, once
            return "drop"
        return "forward"

    proxy, _stats = _run(mosquitto, device, central, rule)
    assert dropped
    sent = Counter(p.topic for p in proxy.recorded)
    assert all(sent[t] >= 2 for t in dropped)  # each lost chunk was sent again after fin said partial


def test_corrupted_chunk_is_rejected_then_sent_again(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    corrupted: set[str] = set()

    def rule(topic: str, payload: bytes) -> Action:
        if topic.endswith("/c/0") and len(payload) > 1000 and topic not in corrupted:
            corrupted.add(topic)
            return "corrupt"
        return "forward"

    _run(mosquitto, device, central, rule)
    assert corrupted
    reasons = [d["reason"] for d in central.store.dead_letters()]
    assert len(reasons) == len(corrupted) and all("sha256 mismatch" in r for r in reasons), reasons
    assert not device.events("loss")  # the local file was intact, so it was simply sent again


def test_replayed_messages_change_nothing(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    proxy, _stats = _run(mosquitto, device, central, lambda _topic, _payload: "forward")
    before = (central.store.list_records(), central.store.list_blobs())
    states = device.states()
    # Someone replays every message the device ever published (same topics, another connection).
    with running_ingester(mosquitto.url, central) as ing, running_publisher(device, settings(mosquitto.url)) as pub:
        replayer = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        replayer.connect("127.0.0.1", mosquitto.port)
        replayer.loop_start()
        infos = [replayer.publish(p.topic, p.payload, qos=1) for p in proxy.recorded]
        for info in infos:
            info.wait_for_publish(30)
        replayer.loop_stop()
        replayer.disconnect()
        expected = len([p for p in proxy.recorded if "/up/" in p.topic])
        wait_for(lambda: ing.stats.messages >= expected, 30, "the ingester to see every replayed message")
        assert pub.wait_idle(30)
        assert ing.stats.duplicates >= 150
    assert (central.store.list_records(), central.store.list_blobs()) == before
    assert device.states() == states
    assert central.store.count("dead_letters") == 0
    assert_exactly_once(device, central)


def test_same_content_from_two_records_is_one_blob(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=3, blob_sizes=(70_000,), seed=40)
    device.add(records=3, blob_sizes=(70_000,), seed=40, stream="copy")  # the same bytes again
    with running_ingester(mosquitto.url, central), running_publisher(device, settings(mosquitto.url)) as pub:
        assert pub.wait_idle(30), pub.stats
    assert_exactly_once(device, central)
    (blob,) = central.store.list_blobs()
    assert blob["sha256"] == hashlib.sha256(central.tree.path_for(blob["sha256"]).read_bytes()).hexdigest()
    assert topics.SHA256_RE.fullmatch(blob["sha256"])
