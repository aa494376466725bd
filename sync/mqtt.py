"""Connecting paho-mqtt 2.x clients the way both ends of fieldcap need them.

MQTT 5, a persistent session (``clean_start=False`` + session expiry) so the broker keeps the
receipts addressed to a device while it is offline, TLS or username/password from credential
files. The caller drives the network with ``client.loop()`` from its own thread, so every publish
and every callback happens on that one thread.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.errors import SyncError

# Bytes of a PUBLISH packet besides its payload, beyond the topic itself: fixed header (≤ 5),
# topic length (2), packet id (2), properties length (≤ 4) and slack.
PUBLISH_OVERHEAD = 16
# A safe bound for any fieldcap topic (the longest, a chunk topic, is under 180 bytes).
TOPIC_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SyncError(f"{url!r} is not a broker URL; use mqtt://host:port or mqtts://host:port")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise SyncError(f"{url!r} has a bad port") from None
        return cls(parts.hostname, port, tls)


@dataclass(frozen=True, slots=True)
class ConnackLimits:
    """What the broker told us in CONNACK about the packets it accepts."""

    max_packet: int | None = None
    receive_maximum: int | None = None

    @classmethod
    def from_properties(cls, props: Any) -> ConnackLimits:
        max_packet = getattr(props, "MaximumPacketSize", None)
        receive_max = getattr(props, "ReceiveMaximum", None)
        return cls(int(max_packet) if max_packet else None, int(receive_max) if receive_max else None)

    def payload_limit(self, topic: str) -> int | None:
        """The largest payload that fits one PUBLISH on ``topic``, or None if unlimited."""
        if self.max_packet is None:
            return None
        return self.max_packet - len(topic.encode()) - PUBLISH_OVERHEAD


def tls_context(ca_file: str, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client TLS context; SyncError naming the file if one cannot be used."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SyncError(f"cannot use the CA certificate {ca_file}: {exc}") from None
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SyncError(f"cannot use the client certificate {cert_file} / key {key_file}: {exc}") from None
    return ctx


def new_client(
    client_id: str,
    creds: Credentials,
    *,
    max_inflight: int,
    manual_ack: bool = False,
    tls: bool = False,
) -> mqtt.Client:
    """A paho client; ``tls`` (an mqtts:// URL) uses the system CAs unless credentials bring a context."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    # Set before connecting: paho reads it when it (re)sends queued messages.
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    if creds.username is not None:
        client.username_pw_set(creds.username, creds.password)
    if creds.tls is not None:
        client.tls_set_context(creds.tls)
    elif tls:
        client.tls_set_context(ssl.create_default_context())
    return client


def connect_properties(
    session_expiry_s: int, receive_maximum: int | None = None, maximum_packet: int | None = None
) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:  # how many unacknowledged QoS 1 messages the broker may send us
        props.ReceiveMaximum = receive_maximum
    if maximum_packet is not None:  # the broker drops larger packets for us instead of sending them
        props.MaximumPacketSize = maximum_packet
    return props


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter, so a fleet does not reconnect in step."""
    return random.uniform(base / 2, max(base / 2, min(cap, base * (2 ** min(attempt, 16)))))
