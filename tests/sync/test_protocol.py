"""Topics, wire messages and the ingester's validation, without a broker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from central.blobs import BlobTree
from central.ingester import Ingester
from central.store import SqliteStore, missing_ranges
from sync import topics
from sync.wire import BlobInit, encode


def test_topics_round_trip() -> None:
    sha = "a" * 64
    assert topics.parse_up(topics.record("dev-1", "capture")).record_kind == "capture"
    assert topics.parse_up(topics.blob_chunk("dev-1", sha, 65536)).offset == 65536
    assert topics.parse_up(topics.blob_fin("dev-1", sha)).kind == "blob_fin"
    assert topics.parse_up(topics.query("dev-1")).kind == "query"
    for bad in (
        "fieldcap/v1/dev/up/blob/../../etc/c/0",
        "fieldcap/v1/+/up/rec/x",
        "other/v1/d/up/rec/x",
        f"fieldcap/v1/d/up/blob/{sha}/c/-1",
        f"fieldcap/v1/d/up/blob/{sha}/c/99999999999999",
    ):
        with pytest.raises(topics.TopicError):
            topics.parse_up(bad)
    with pytest.raises(topics.TopicError):
        topics.record("a/b", "capture")


def test_missing_ranges_with_overlaps() -> None:
    assert missing_ranges(10, []) == [(0, 10)]
    assert missing_ranges(10, [(0, 4), (6, 4)]) == [(4, 6)]
    assert missing_ranges(10, [(0, 6), (4, 6)]) == []
    assert missing_ranges(10, [(2, 3)]) == [(0, 2), (5, 10)]


@pytest.fixture
def ingester(tmp_path: Path) -> Ingester:
    return Ingester(broker="mqtt://127.0.0.1:1", store=SqliteStore(tmp_path / "c.db"), blobs=BlobTree(tmp_path / "b"))


def receipts(ingester: Ingester, device: str = "d1") -> list:
    return [r for d, r in ingester.pending_receipts if d == device]


def envelope(device: str = "d1", rid: str = "0123456789ab-1", **extra: object) -> bytes:
    env = {
        "schema_version": 1,
        "record_id": rid,
        "device": device,
        "kind": "capture",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "body": {
            "record_id": rid,
            "stream": "cam0",
            "kind": "frame",
            "modality": "visible",
            "t_start_mono_ns": 1,
            "t_end_mono_ns": 2,
            "t_start_utc_ns": 3,
            "seq_first": 0,
            "seq_last": 0,
            "created_utc": "2026-01-01T00:00:00+00:00",
            "meta": {},
        },
        **extra,
    }
    return json.dumps(env).encode()


def test_record_stored_once(ingester: Ingester) -> None:
    ingester.handle(topics.record("d1", "capture"), envelope())
    ingester.handle(topics.record("d1", "capture"), envelope())
    assert ingester.store.count("records") == 1
    statuses = [r.status for r in receipts(ingester)]
    assert statuses == ["stored", "duplicate"]


def test_record_naming_another_device_is_rejected(ingester: Ingester) -> None:
    ingester.handle(topics.record("d1", "capture"), envelope(device="d2"))
    assert ingester.store.count("records") == 0
    (dl,) = ingester.store.dead_letters()
    assert "names device 'd2' but was published by 'd1'" in dl["reason"]
    assert receipts(ingester)[0].status == "rejected"


def test_blob_assembled_from_out_of_order_chunks_and_verified(ingester: Ingester) -> None:
    data = bytes(range(256)) * 1000
    sha = hashlib.sha256(data).hexdigest()
    ingester.handle(
        topics.blob_init("d1", sha),
        encode(BlobInit(sha256=sha, size=len(data), chunk_size=65536, media_type="image/png")),
    )
    offsets = list(range(0, len(data), 65536))
    for off in reversed(offsets[1:]):
        ingester.handle(topics.blob_chunk("d1", sha, off), data[off : off + 65536])
    ingester.handle(topics.blob_fin("d1", sha), json.dumps({"sha256": sha, "size": len(data)}).encode())
    partial = receipts(ingester)[-1]
    assert partial.status == "partial" and partial.missing == [(0, 65536)]
    ingester.handle(topics.blob_chunk("d1", sha, 0), data[:65536])
    ingester.handle(topics.blob_fin("d1", sha), json.dumps({"sha256": sha, "size": len(data)}).encode())
    assert receipts(ingester)[-1].status == "stored"
    assert ingester.blobs.path_for(sha).read_bytes() == data
    assert ingester.store.count("chunks") == 0


def test_corrupted_blob_is_rejected_not_stored(ingester: Ingester) -> None:
    data = b"hello world" * 100
    sha = hashlib.sha256(data).hexdigest()
    ingester.handle(
        topics.blob_init("d1", sha),
        encode(BlobInit(sha256=sha, size=len(data), chunk_size=65536, media_type="image/png")),
    )
    ingester.handle(topics.blob_chunk("d1", sha, 0), b"X" + data[1:])
    ingester.handle(topics.blob_fin("d1", sha), json.dumps({"sha256": sha, "size": len(data)}).encode())
    assert receipts(ingester)[-1].status == "rejected"
    assert not ingester.blobs.path_for(sha).exists()
    assert ingester.store.blob_state("d1", sha).status == "missing"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("fieldcap/v1/d1/up/rec/capture", b"\xff\xfe", "not JSON"),
        ("fieldcap/v1/d1/up/rec/capture", b"[]", "not a JSON object"),
        ("fieldcap/v1/d1/up/rec/capture", b'{"schema_version": 2}', "schema_version"),
        ("fieldcap/v1/d1/up/blob/" + "0" * 64 + "/c/0", b"x", "never announced"),
        ("fieldcap/v1/d1/up/blob/zz/init", b"{}", "not a fieldcap upload topic"),
        ("fieldcap/v1/d1/down/rcpt", b"{}", "not a fieldcap upload topic"),
    ],
)
def test_hostile_messages_are_dead_lettered(ingester: Ingester, topic: str, payload: bytes, reason: str) -> None:
    ingester.handle(topic, payload)
    (dl,) = ingester.store.dead_letters()
    assert reason in dl["reason"]
