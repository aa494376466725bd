"""The MQTT topic tree, built and parsed in one place for the publisher and the ingester.

::

    fieldcap/v1/{device}/up/rec/{kind}
    fieldcap/v1/{device}/up/blob/{sha256}/init
    fieldcap/v1/{device}/up/blob/{sha256}/c/{offset}
    fieldcap/v1/{device}/up/blob/{sha256}/fin
    fieldcap/v1/{device}/up/sync/query
    fieldcap/v1/{device}/down/rcpt
    fieldcap/v1/{device}/down/cmd/{kind}
    fieldcap/v1/{device}/status
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ROOT = "fieldcap/v1"
# Used with fullmatch only: ``$`` would also accept a trailing newline.
DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
OFFSET_RE = re.compile(r"(0|[1-9][0-9]{0,12})")
MAX_OFFSET = 1 << 40  # 1 TiB: far above any media file, small enough to reject nonsense

INGEST_SHARE = "$share/{group}/" + ROOT + "/+/up/#"

UpKind = Literal["rec", "blob_init", "blob_chunk", "blob_fin", "query"]


class TopicError(ValueError):
    """A topic that is not part of the fieldcap tree."""


@dataclass(frozen=True, slots=True)
class UpTopic:
    """A parsed device-to-central topic."""

    device: str
    kind: UpKind
    record_kind: str | None = None
    sha256: str | None = None
    offset: int | None = None


def _device(device: str) -> str:
    if not DEVICE_RE.fullmatch(device):
        raise TopicError(f"device id {device!r} is not allowed in a topic")
    return device


def record(device: str, kind: str) -> str:
    if not KIND_RE.fullmatch(kind):
        raise TopicError(f"record kind {kind!r} is not allowed in a topic")
    return f"{ROOT}/{_device(device)}/up/rec/{kind}"


def blob_init(device: str, sha256: str) -> str:
    return f"{ROOT}/{_device(device)}/up/blob/{sha256}/init"


def blob_chunk(device: str, sha256: str, offset: int) -> str:
    return f"{ROOT}/{_device(device)}/up/blob/{sha256}/c/{offset}"


def blob_fin(device: str, sha256: str) -> str:
    return f"{ROOT}/{_device(device)}/up/blob/{sha256}/fin"


def query(device: str) -> str:
    return f"{ROOT}/{_device(device)}/up/sync/query"


def receipts(device: str) -> str:
    return f"{ROOT}/{_device(device)}/down/rcpt"


def command(device: str, kind: str) -> str:
    """Where the central side sends a device one signed command (``sync.commands``)."""
    if not KIND_RE.fullmatch(kind):
        raise TopicError(f"command kind {kind!r} is not allowed in a topic")
    return f"{ROOT}/{_device(device)}/down/cmd/{kind}"


def commands(device: str) -> str:
    """The device's subscription to its commands."""
    return f"{ROOT}/{_device(device)}/down/cmd/+"


def status(device: str) -> str:
    return f"{ROOT}/{_device(device)}/status"


def ingest_subscription(group: str) -> str:
    if not DEVICE_RE.fullmatch(group):
        raise TopicError(f"ingest group {group!r} may only hold letters, digits, '_', '.', '-'")
    return INGEST_SHARE.format(group=group)


def parse_up(topic: str) -> UpTopic:
    """Parse a device-to-central topic, rejecting anything outside the tree."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != ROOT or parts[3] != "up":
        raise TopicError(f"not a fieldcap upload topic: {topic[:200]!r}")
    device = _device(parts[2])
    rest = parts[4:]
    if rest[0] == "rec" and len(rest) == 2 and KIND_RE.fullmatch(rest[1]):
        return UpTopic(device, "rec", record_kind=rest[1])
    if rest[0] == "sync" and rest[1:] == ["query"]:
        return UpTopic(device, "query")
    if rest[0] == "blob" and len(rest) >= 3 and SHA256_RE.fullmatch(rest[1]):
        sha = rest[1]
        if rest[2:] == ["init"]:
            return UpTopic(device, "blob_init", sha256=sha)
        if rest[2:] == ["fin"]:
            return UpTopic(device, "blob_fin", sha256=sha)
        if len(rest) == 4 and rest[2] == "c" and OFFSET_RE.fullmatch(rest[3]):
            offset = int(rest[3])
            if offset < MAX_OFFSET:
                return UpTopic(device, "blob_chunk", sha256=sha, offset=offset)
    raise TopicError(f"not a fieldcap upload topic: {topic[:200]!r}")
