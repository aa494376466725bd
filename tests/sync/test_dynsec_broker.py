"""The dynamic-security broker of examples/broker/, for real: what a provisioned device can and cannot do.

The module makes a CA and broker certificate with ``examples/broker/make-certs.sh``, initialises the
plugin's file with ``mosquitto_ctrl dynsec init``, and runs Mosquitto with
``examples/broker/mosquitto-dynsec.conf`` (ports and paths changed). Devices and the ingester are
provisioned with ``fieldcap central provision-device`` / ``provision-ingester``, passwords on stdin.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sync_harness import REPO, Central, Device, assert_exactly_once, running_ingester, running_publisher, settings
from sync_harness import wait_for as wait

from central.broker import LocalBroker, free_port
from sync import topics
from sync.mqtt import Credentials, tls_context

EXAMPLE = REPO / "examples" / "broker"
PASSWORDS = {"dyn-1": "pw-dyn-1", "dyn-2": "pw-dyn-2", "ingest-1": "pw-ingest-1"}


@dataclass
class DynBroker:
    broker: LocalBroker
    certs: Path
    port: int
    admin_password_file: Path

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def creds(self, user: str, password: str | None = None) -> Credentials:
        return Credentials(user, password or PASSWORDS[user], tls_context(str(self.certs / "ca.crt"), None, None))

    def provision(self, kind: str, name: str, password: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [
            sys.executable,
            "-m",
            "agent",
            "central",
            f"provision-{kind}",
            name,
            "--broker",
            self.url,
            "--ca-file",
            str(self.certs / "ca.crt"),
            "--admin-user",
            "admin",
            "--admin-password-file",
            str(self.admin_password_file),
            "--password-file",
            "-",
            *extra,
        ]
        return subprocess.run(args, input=password + "\n", capture_output=True, text=True, cwd=REPO, check=False)


@pytest.fixture(scope="module")
def dyn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynBroker]:
    root = tmp_path_factory.mktemp("dynsec-broker")
    certs = root / "fieldcap"
    subprocess.run([str(EXAMPLE / "make-certs.sh"), str(certs), "127.0.0.1"], check=True, capture_output=True)
    admin_pw = root / "admin-password"
    admin_pw.write_text("admin-secret\n")
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(root / "dynamic-security.json"), "admin", "admin-secret"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = (
        (EXAMPLE / "mosquitto-dynsec.conf")
        .read_text()
        .replace("/etc/mosquitto/fieldcap", str(certs))
        .replace("/var/lib/mosquitto/", f"{root}/")
        .replace("listener 8883", f"listener {port} 127.0.0.1")
    )
    with LocalBroker(root / "broker", port=port, config=conf) as broker:
        b = DynBroker(broker, certs, port, admin_pw)
        for kind, name in (("device", "dyn-1"), ("device", "dyn-2"), ("ingester", "ingest-1")):
            done = b.provision(kind, name, PASSWORDS[name])
            assert done.returncode == 0, done.stderr
        yield b


class Probe:
    """A raw MQTT client with one identity, recording what it receives and how its requests end."""

    def __init__(self, dyn: DynBroker, user: str, *, client_id: str | None = None) -> None:
        self.received: list[str] = []
        self.subacks: list[list[ReasonCode]] = []
        self.disconnects = 0
        self.pubacks: dict[int, ReasonCode] = {}
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{user}", protocol=mqtt.MQTTv5
        )
        creds = dyn.creds(user)
        assert creds.tls is not None
        self.client.tls_set_context(creds.tls)
        self.client.username_pw_set(creds.username, creds.password)
        self.client.on_message = lambda _c, _u, m: self.received.append(m.topic)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.append(list(rcs))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", dyn.port)
        self.client.loop_start()
        wait(self.connected.is_set, 20, f"{user} to connect")

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, *_a: Any) -> None:
        self.disconnects += 1

    def subscribe(self, topic: str) -> ReasonCode:
        n = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait(lambda: len(self.subacks) > n, 20, f"SUBACK for {topic}")
        return self.subacks[n][0]

    def publish(self, topic: str, payload: bytes = b"{}") -> ReasonCode:
        """The broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        wait(lambda: info.mid in self.pubacks, 20, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_provisioned_device_syncs(dyn: DynBroker, tmp_path: Path, central: Central) -> None:
    device = Device(tmp_path / "d1", "dyn-1")
    device.add(records=40, blob_sizes=(120_000,), seed=81)
    sync = settings(dyn.url, tls={"ca_file": str(dyn.certs / "ca.crt")})
    with (
        running_ingester(dyn.url, central, credentials=dyn.creds("ingest-1")),
        running_publisher(device, sync, dyn.creds("dyn-1")) as pub,
    ):
        assert pub.wait_idle(60), pub.stats
        assert pub.stats.refused_publishes == 0
    assert_exactly_once(device, central)


def test_a_device_cannot_read_the_ingesters_share_or_other_devices_topics(dyn: DynBroker) -> None:
    spy = Probe(dyn, "dyn-1")
    victim = Probe(dyn, "dyn-2")
    ingest = Probe(dyn, "ingest-1")
    try:
        for topic in (
            topics.ingest_subscription("ingest"),
            "$share/ingest/fieldcap/v1/dyn-2/up/#",
            "fieldcap/v1/+/up/#",
            "fieldcap/v1/dyn-2/down/#",
            "#",
        ):
            assert spy.subscribe(topic).is_failure, topic
        assert not spy.subscribe("fieldcap/v1/dyn-1/down/#").is_failure  # the control: its own receipts
        assert not ingest.subscribe(topics.ingest_subscription("ingest")).is_failure
        victim.publish(topics.record("dyn-2", "capture"))
        ingest.publish(topics.receipts("dyn-2"))
        ingest.publish(topics.receipts("dyn-1"))  # published last: once the spy has it, it had the rest first
        wait(lambda: topics.receipts("dyn-1") in spy.received, 20, "the spy's own receipt")
        wait(lambda: topics.record("dyn-2", "capture") in ingest.received, 20, "the ingester to get dyn-2's record")
        assert spy.received == [topics.receipts("dyn-1")]
    finally:
        for p in (spy, victim, ingest):
            p.close()


def test_a_device_cannot_publish_into_another_devices_topics(dyn: DynBroker) -> None:
    impostor = Probe(dyn, "dyn-1")
    ingest = Probe(dyn, "ingest-1")
    try:
        assert not ingest.subscribe(topics.ingest_subscription("ingest")).is_failure
        for topic in (
            topics.record("dyn-2", "capture"),
            topics.blob_fin("dyn-2", "0" * 64),
            topics.status("dyn-2"),
            topics.receipts("dyn-2"),  # nor forge receipts, for another device or for itself
            topics.receipts("dyn-1"),
        ):
            rc = impostor.publish(topic)
            assert rc.is_failure and rc.getName() == "Not authorized", (topic, rc)
        assert not impostor.publish(topics.record("dyn-1", "capture")).is_failure  # its own: allowed (the marker)
        wait(lambda: topics.record("dyn-1", "capture") in ingest.received, 20, "dyn-1's own record")
        assert ingest.received == [topics.record("dyn-1", "capture")]
    finally:
        impostor.close()
        ingest.close()


def test_a_device_cannot_kick_another_by_reusing_its_client_id(dyn: DynBroker) -> None:
    victim = Probe(dyn, "dyn-2", client_id="dyn-2")
    ingest = Probe(dyn, "ingest-1")
    try:
        assert not ingest.subscribe(topics.ingest_subscription("ingest")).is_failure
        impostor = Probe(dyn, "dyn-1", client_id="dyn-2")  # connected: the broker made its id "dyn-1"
        impostor_too = Probe(dyn, "dyn-1", client_id="fieldcap-dyn-2")  # the agent's own id pattern
        try:
            # Had the broker let either take over "dyn-2", it would have closed the victim's
            # connection before answering the impostor's CONNECT; the victim still publishes.
            victim.publish(topics.record("dyn-2", "capture"))
            wait(lambda: topics.record("dyn-2", "capture") in ingest.received, 20, "dyn-2's record")
            assert victim.disconnects == 0 and victim.client.is_connected()
        finally:
            impostor.close()
            impostor_too.close()
    finally:
        victim.close()
        ingest.close()


def test_provisioning_errors_are_clear(dyn: DynBroker) -> None:
    again = dyn.provision("device", "dyn-1", "another")
    assert again.returncode != 0
    assert "already exists" in again.stderr and "--replace" in again.stderr and "Traceback" not in again.stderr
    bad = dyn.provision("device", "bad/id", "pw")
    assert bad.returncode != 0 and "not allowed in a topic" in bad.stderr and "Traceback" not in bad.stderr
    empty = dyn.provision("device", "dyn-9", "")
    assert empty.returncode != 0 and "password is empty" in empty.stderr
    wrong_admin = subprocess.run(
        [
            *(sys.executable, "-m", "agent", "central", "provision-device", "dyn-9", "--broker", dyn.url),
            *("--ca-file", str(dyn.certs / "ca.crt"), "--admin-user", "admin", "--admin-password-file", "-"),
            *("--password-file", str(dyn.admin_password_file)),
        ],
        input="wrong\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert wrong_admin.returncode != 0 and "refused the admin login" in wrong_admin.stderr, wrong_admin.stderr
    # --replace gives a device a new password; the old one stops working.
    replaced = dyn.provision("device", "dyn-2", "pw-dyn-2-new", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    fresh = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="y", protocol=mqtt.MQTTv5)
    creds = dyn.creds("dyn-2", "pw-dyn-2")
    assert creds.tls is not None
    fresh.tls_set_context(creds.tls)
    fresh.username_pw_set("dyn-2", "pw-dyn-2")
    result: list[ReasonCode] = []
    fresh.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    fresh.connect("127.0.0.1", dyn.port)
    fresh.loop_start()
    wait(lambda: bool(result), 20, "CONNACK for the old password")
    fresh.loop_stop()
    assert result[0].is_failure
    restored = dyn.provision("device", "dyn-2", PASSWORDS["dyn-2"], "--replace")
    assert restored.returncode == 0, restored.stderr
