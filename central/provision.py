"""Provisioning devices and ingesters on a Mosquitto broker with the dynamic-security plugin.

Everything goes through the plugin's control topic (``$CONTROL/dynamic-security/v1``) as its
admin client, so no broker file is edited and no restart is needed. Each device gets a client
(username = device id) and a role of its own that lets it publish only under its own
``fieldcap/v1/<id>/up/#`` and ``status``, and subscribe to and receive only its own
``fieldcap/v1/<id>/down/#``. Ingesters share a role per shared-subscription group. The broker
configuration (``examples/broker/mosquitto-dynsec.conf``) sets ``use_username_as_clientid``, so
a device cannot take over another device's client id, and the default ACL access denies receiving
anything not explicitly allowed.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sync import topics
from sync.errors import SyncError
from sync.mqtt import BrokerAddress, Credentials

CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = CONTROL + "/response"
TIMEOUT_S = 15.0


class ProvisionError(SyncError):
    """The broker refused a provisioning step, or could not be reached as its admin."""


def device_role(device: str) -> str:
    return f"fieldcap-device-{device}"


def ingest_role(group: str) -> str:
    return f"fieldcap-ingest-{group}"


def _acl(acltype: str, topic: str, priority: int = 0, *, allow: bool = True) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": priority, "allow": allow}


def device_acls(device: str) -> list[dict[str, Any]]:
    """Only its own topics: publish under up/# and status, subscribe to and receive down/#."""
    root = f"{topics.ROOT}/{device}"
    return [
        _acl("publishClientSend", f"{root}/up/#"),
        _acl("publishClientSend", topics.status(device)),
        _acl("subscribePattern", f"{root}/down/#"),
        _acl("publishClientReceive", f"{root}/down/#"),
    ]


def ingest_acls(group: str) -> list[dict[str, Any]]:
    """Read every device's uploads through the group's shared subscription; write every receipt."""
    return [
        _acl("subscribeLiteral", topics.ingest_subscription(group)),
        _acl("publishClientReceive", f"{topics.ROOT}/+/up/#"),
        _acl("publishClientSend", f"{topics.ROOT}/+/down/#"),
    ]


# Whatever no role allows is denied, receiving included (the plugin's default would allow it).
DEFAULTS = {
    "command": "setDefaultACLAccess",
    "acls": [
        {"acltype": "publishClientSend", "allow": False},
        {"acltype": "publishClientReceive", "allow": False},
        {"acltype": "subscribe", "allow": False},
        {"acltype": "unsubscribe", "allow": True},
    ],
}


@dataclass
class Admin:
    """An admin connection to the broker's dynamic-security plugin."""

    client: mqtt.Client
    got: threading.Event = field(default_factory=threading.Event)
    response: dict[str, Any] | None = None

    @classmethod
    def connect(cls, broker: str, username: str, password: str, creds: Credentials) -> Admin:
        address = BrokerAddress.parse(broker)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )  # the broker may force the id to the username anyway
        client.username_pw_set(username, password)
        if creds.tls is not None:
            client.tls_set_context(creds.tls)
        elif address.tls:
            import ssl

            client.tls_set_context(ssl.create_default_context())
        ready = threading.Event()
        failure: list[str] = []
        admin = cls(client)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            if rc.is_failure:
                failure.append(f"the broker refused the admin login {username!r}: {rc}")
                ready.set()
                return
            c.subscribe(RESPONSE, qos=1)

        def on_subscribe(_c: mqtt.Client, _u: Any, _m: int, rcs: list[ReasonCode], _p: Any) -> None:
            if any(rc.is_failure for rc in rcs):
                failure.append(f"{username!r} may not use the dynamic-security control topic: {rcs[0]}")
            ready.set()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                admin.response = json.loads(msg.payload)
            except ValueError:
                admin.response = {"responses": [{"error": "the broker's answer is not JSON"}]}
            admin.got.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(address.host, address.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"cannot reach broker {address.host}:{address.port}: {exc}") from None
        client.loop_start()
        if not ready.wait(TIMEOUT_S) or failure:
            admin.close()
            raise ProvisionError(
                failure[0]
                if failure
                else f"no answer from {broker} within {TIMEOUT_S:g} s (is it a Mosquitto with the dynamic-security "
                "plugin, and are the admin credentials right?)"
            )
        return admin

    def run(self, commands: list[dict[str, Any]], ok_errors: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send commands in one request; ProvisionError on the first error not in ``ok_errors``."""
        self.got.clear()
        self.response = None
        tag = uuid.uuid4().hex
        for cmd in commands:
            cmd.setdefault("correlationData", tag)
        self.client.publish(CONTROL, json.dumps({"commands": commands}).encode(), qos=1)
        if not self.got.wait(TIMEOUT_S) or self.response is None:
            raise ProvisionError(f"the broker did not answer the dynamic-security request within {TIMEOUT_S:g} s")
        responses = list(self.response.get("responses") or [])
        for r in responses:
            error = r.get("error")
            if error and not any(e in str(error) for e in ok_errors):
                hint = " (use --replace to provision it anew)" if "already exists" in str(error) else ""
                raise ProvisionError(f"the broker refused {r.get('command', 'a command')}: {error}{hint}")
        return responses

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def provision_device(admin: Admin, device: str, password: str, *, replace: bool = False) -> None:
    """A client ``device`` with its own role; ``replace`` first removes an existing one."""
    topics.status(device)  # a device id that can be a topic level, or TopicError
    role = device_role(device)
    if replace:
        admin.run(
            [{"command": "deleteClient", "username": device}, {"command": "deleteRole", "rolename": role}],
            ok_errors=("not found",),
        )
    admin.run([dict(DEFAULTS)])
    admin.run([{"command": "createRole", "rolename": role, "acls": device_acls(device)}])
    admin.run([{"command": "createClient", "username": device, "password": password, "roles": [{"rolename": role}]}])


def provision_ingester(admin: Admin, name: str, password: str, *, group: str = "ingest", replace: bool = False) -> None:
    """A client ``name`` with the role of its shared-subscription group (made when missing)."""
    topics.ingest_subscription(group)  # validates the group name
    topics.status(name)  # the same alphabet as a device id
    role = ingest_role(group)
    if replace:
        admin.run([{"command": "deleteClient", "username": name}], ok_errors=("not found",))
    admin.run([dict(DEFAULTS)])
    admin.run([{"command": "createRole", "rolename": role, "acls": ingest_acls(group)}], ok_errors=("already exists",))
    admin.run([{"command": "createClient", "username": name, "password": password, "roles": [{"rolename": role}]}])
