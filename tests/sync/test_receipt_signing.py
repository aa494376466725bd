"""Signed receipts: only the ingesters' key confirms anything; forgeries are refused and recorded.

Real Mosquitto (anonymous, no ACL: anyone may publish on a device's receipt topic), real publisher,
real ingester, real Ed25519 keys. A forger client publishes "stored" receipts for exactly the
records and blobs the device is waiting for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sync_harness import Central, Device, assert_exactly_once, running_ingester, running_publisher, settings, wait_for

from central.broker import LocalBroker
from sync import topics
from sync.signing import SIG_PROPERTY, KeyFileError, ReceiptSigner, ReceiptVerifier, generate


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReceiptSigner, ReceiptVerifier]:
    private, public, _ = generate(tmp_path_factory.mktemp("keys"))
    return ReceiptSigner.load(private), ReceiptVerifier.load(public)


@pytest.fixture(scope="module")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> ReceiptSigner:
    private, _, _ = generate(tmp_path_factory.mktemp("other-keys"))
    return ReceiptSigner.load(private)


@contextmanager
def client(port: int, name: str) -> Iterator[mqtt.Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        yield c
    finally:
        c.loop_stop()
        c.disconnect()


def stored_receipts(device: Device) -> bytes:
    """A receipt batch saying "stored" for every record and blob of the device, sizes and hashes right."""
    with device._ro() as conn:
        rows = list(conn.execute("SELECT record_id, blob_sha256, blob_size FROM outbox"))
    receipts: list[dict[str, object]] = [{"type": "record", "id": r[0], "status": "stored"} for r in rows]
    receipts += [
        {"type": "blob", "id": r[1], "status": "stored", "size": r[2], "sha256": r[1]} for r in rows if r[1] is not None
    ]
    return json.dumps({"receipts": receipts}).encode()


def sig_props(value: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = (SIG_PROPERTY, value)
    return props


def test_a_signature_covers_the_topic_and_the_exact_payload(keys: tuple[ReceiptSigner, ReceiptVerifier]) -> None:
    signer, verifier = keys
    payload = b'{"receipts":[{"type":"record","id":"0123456789ab","status":"stored"}]}'
    sig = signer.sign(topics.receipts("dev-a"), payload)
    assert verifier.check(topics.receipts("dev-a"), payload, sig) is None
    assert verifier.check(topics.receipts("dev-b"), payload, sig) == "bad signature"  # no replay to another device
    assert verifier.check(topics.receipts("dev-a"), payload + b" ", sig) == "bad signature"
    assert verifier.check(topics.receipts("dev-a"), payload, None) == "unsigned"
    assert verifier.check(topics.receipts("dev-a"), payload, "ed25519:%%%") == "signature is not base64"
    assert verifier.check(topics.receipts("dev-a"), payload, "rsa:AAAA") == "unknown signature scheme"


def test_key_files_that_cannot_be_used_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"not found.*fieldcap central keygen"):
        ReceiptVerifier.load(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        ReceiptVerifier.load(tmp_path / "junk.pub")
    private, public, _ = generate(tmp_path / "k")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        ReceiptVerifier.load(private)  # the private key where the public one belongs
    with pytest.raises(KeyFileError, match="already exists"):
        generate(tmp_path / "k")  # never overwrites a key pair
    assert private.stat().st_mode & 0o777 == 0o600
    assert ReceiptVerifier.load(public).key_id == ReceiptSigner.load(private).key_id


def test_forged_receipts_confirm_nothing_and_signed_ones_confirm_everything(
    mosquitto: LocalBroker,
    tmp_path: Path,
    central: Central,
    keys: tuple[ReceiptSigner, ReceiptVerifier],
    other_signer: ReceiptSigner,
) -> None:
    signer, verifier = keys
    device = Device(tmp_path / "dev", "sig-1")
    device.add(records=30, blob_sizes=(150_000, 20_000), seed=71)
    sync = settings(mosquitto.url, receipt_timeout_s=30.0)
    with (
        running_publisher(device, sync, verifier=verifier) as pub,
        client(mosquitto.port, "forger") as forger,
    ):
        wait_for(lambda: all(r == "sent" for r, _ in device.states().values()), 60, "every record to be sent")
        forged = stored_receipts(device)
        topic = topics.receipts(device.device_id)
        for i in range(60):
            if i % 3 == 0:
                props = None  # unsigned
            elif i % 3 == 1:
                props = sig_props(other_signer.sign(topic, forged))  # signed, with the wrong key
            else:
                props = sig_props(signer.sign(topics.receipts("sig-2"), forged))  # the right key, another device
            forger.publish(topic, forged, qos=1, properties=props).wait_for_publish(10)
        wait_for(lambda: pub.stats.forged_receipts == 60, 60, "the device to refuse 60 forged receipt messages")
        wait_for(lambda: bool(device.events("forged_receipt")), 30, "the forged_receipt event")
        assert device.confirmed() == 0
        assert pub.stats.records_confirmed == 0 and pub.stats.blobs_confirmed == 0
        (event,) = device.events("forged_receipt")  # one row for the flood, not one per message
        assert "not signed by the central side" in event["message"]
        assert json.loads(event["detail_json"])["reason"] == "unsigned"

        with running_ingester(mosquitto.url, central, signer=signer):
            assert pub.wait_idle(90), pub.stats
    assert pub.stats.forged_receipts == 60  # every honest receipt verified
    assert_exactly_once(device, central)


def test_without_a_receipt_key_a_forgery_would_confirm(mosquitto: LocalBroker, tmp_path: Path) -> None:
    """The control: the same forgery against a device without the key confirms everything.

    Such a device never evicts media on a receipt (tests/agent/test_retention.py shows it).
    """
    device = Device(tmp_path / "dev", "sig-3")
    device.add(records=10, blob_sizes=(40_000,), seed=72)
    with (
        running_publisher(device, settings(mosquitto.url, receipt_timeout_s=30.0)) as pub,
        client(mosquitto.port, "forger-3") as forger,
    ):
        wait_for(lambda: all(r == "sent" for r, _ in device.states().values()), 60, "every record to be sent")
        forger.publish(topics.receipts("sig-3"), stored_receipts(device), qos=1).wait_for_publish(10)
        wait_for(lambda: device.confirmed() == device.total(), 30, "the forgery to confirm everything")
        assert pub.stats.forged_receipts == 0


def test_a_signed_receipt_replayed_to_another_device_is_refused(
    mosquitto: LocalBroker, tmp_path: Path, central: Central, keys: tuple[ReceiptSigner, ReceiptVerifier]
) -> None:
    signer, verifier = keys
    dev_a, dev_b = Device(tmp_path / "a", "sig-a"), Device(tmp_path / "b", "sig-b")
    dev_a.add(records=20, seed=73)
    captured: list[tuple[bytes, Properties]] = []
    online: list[bytes] = []

    def seen(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        if m.topic == topics.status("sig-b"):
            online.append(bytes(m.payload))
        else:
            captured.append((bytes(m.payload), m.properties))

    with client(mosquitto.port, "spy") as spy:
        spy.on_message = seen
        spy.subscribe([(topics.receipts("sig-a"), 1), (topics.status("sig-b"), 1)])
        with (
            running_ingester(mosquitto.url, central, signer=signer),
            running_publisher(dev_a, settings(mosquitto.url), verifier=verifier) as pub_a,
        ):
            assert pub_a.wait_idle(60), pub_a.stats
        wait_for(lambda: bool(captured), 10, "a signed receipt message to be seen")
        assert pub_a.stats.forged_receipts == 0
        with running_publisher(dev_b, settings(mosquitto.url), verifier=verifier) as pub_b:
            # dev-b subscribes to its receipts before it publishes "online": once that is seen, it listens
            wait_for(lambda: b"online" in online, 30, "dev-b to come online")
            for payload, props in captured:
                spy.publish(topics.receipts("sig-b"), payload, qos=1, properties=props).wait_for_publish(10)
            wait_for(lambda: pub_b.stats.forged_receipts == len(captured), 30, "dev-b to refuse the replays")
    (event,) = dev_b.events("forged_receipt")
    assert json.loads(event["detail_json"])["reason"] == "bad signature"
    assert_exactly_once(dev_a, central)
