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
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class SyncError(Exception):
    """A sync problem the operator must fix (bad broker URL, refused credentials)."""


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


def tls_context(ca_file: str, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def new_client(
    client_id: str,
    creds: Credentials,
    *,
    max_inflight: int,
    manual_ack: bool = False,
) -> mqtt.Client:
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
    return client


def connect_properties(session_expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    return props


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter, so a fleet does not reconnect in step."""
    return random.uniform(base / 2, min(cap, base * (2 ** min(attempt, 16))))
