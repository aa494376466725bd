"""The central ingestion subscriber.

Stateless: everything it knows is in the central store, so several ingesters can share one
subscription (``$share/GROUP/...``) and any of them can finish a blob another one started. Every
message is untrusted: it is validated (topic, schema, sizes, the device in the body equals the
device in the topic), and whatever is rejected goes to the dead-letter table with its reason.
Messages are acknowledged to the broker only after the store has committed them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from sync import topics
from sync.blobs import BlobMismatch, BlobTree
from sync.mqtt import BrokerAddress, Credentials, backoff, connect_properties, new_client
from sync.store import CentralStore
from sync.wire import (
    BlobFin,
    BlobInit,
    Receipt,
    ReceiptBatch,
    RecordEnvelope,
    SyncQuery,
    WireError,
    encode,
    parse,
)

log = logging.getLogger("fieldcap.ingest")

RECEIPT_BATCH = 200


@dataclass
class IngestStats:
    messages: int = 0
    records_stored: int = 0
    duplicates: int = 0
    blobs_stored: int = 0
    rejected: int = 0
    connected: bool = False


class Ingester:
    """Validates, stores and answers everything devices publish under ``fieldcap/v1/+/up/#``."""

    def __init__(
        self,
        *,
        broker: str,
        store: CentralStore,
        blobs: BlobTree,
        group: str = "ingest",
        client_id: str | None = None,
        credentials: Credentials | None = None,
        max_chunk: int = 16 * 1024 * 1024,
    ) -> None:
        self.address = BrokerAddress.parse(broker)
        self.store = store
        self.blobs = blobs
        self.group = group
        self.client_id = client_id or f"fieldcap-ingest-{group}-{threading.get_native_id()}-{time.time_ns() % 10**6}"
        self.credentials = credentials or Credentials()
        self.max_chunk = max_chunk
        self.stats = IngestStats()
        self._stop = threading.Event()
        self._pending: dict[str, list[Receipt]] = defaultdict(list)
        self._client: mqtt.Client | None = None

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Serve until ``stop()``; reconnects with jittered backoff."""
        attempt = 0
        while not self._stop.is_set():
            client = new_client(self.client_id, self.credentials, max_inflight=1000, manual_ack=True)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            try:
                client.connect(
                    self.address.host,
                    self.address.port,
                    keepalive=30,
                    clean_start=False,
                    properties=connect_properties(3600),
                )
            except OSError as exc:
                attempt += 1
                log.warning("cannot reach broker %s:%d: %s", self.address.host, self.address.port, exc)
                self._stop.wait(backoff(attempt))
                continue
            self._client = client
            attempt = 0
            while not self._stop.is_set():
                rc = client.loop(timeout=0.05)
                self._flush_receipts()
                if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                    break
            if self._stop.is_set():
                client.disconnect()
                client.loop(timeout=0.1)
            self.stats.connected = False
            if not self._stop.is_set():
                attempt += 1
                self._stop.wait(backoff(attempt))

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the ingester: %s", rc)
            return
        self.stats.connected = True
        client.subscribe(topics.ingest_subscription(self.group), qos=1)
        log.info("ingesting from %s:%d as group %r", self.address.host, self.address.port, self.group)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.stats.connected = False
        log.warning("ingester disconnected: %s", rc)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.stats.messages += 1
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception:  # the daemon must survive anything a message does
            log.exception("unexpected error handling %s", msg.topic[:200])
            self._dead(msg.topic, None, "internal error while handling the message", bytes(msg.payload))
        if msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _flush_receipts(self) -> None:
        if not self._pending or self._client is None:
            return
        pending, self._pending = self._pending, defaultdict(list)
        for device, receipts in pending.items():
            for i in range(0, len(receipts), RECEIPT_BATCH):
                batch = ReceiptBatch(receipts=receipts[i : i + RECEIPT_BATCH])
                self._client.publish(topics.receipts(device), encode(batch), qos=1)

    # ------------------------------------------------------------------ handling (also used directly by tests)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            up = topics.parse_up(topic)
        except topics.TopicError as exc:
            self._dead(topic, None, str(exc), payload)
            return
        try:
            if up.kind == "rec":
                self._record(up, payload)
            elif up.kind == "blob_init":
                self._blob_init(up, payload)
            elif up.kind == "blob_chunk":
                self._chunk(up, payload)
            elif up.kind == "blob_fin":
                self._blob_fin(up, payload)
            else:
                self._query(up, payload)
        except WireError as exc:
            self._dead(topic, up.device, str(exc), payload)
            if up.kind == "rec":
                rid = _peek_record_id(payload)
                if rid:
                    self._receipt(
                        up.device,
                        Receipt(type="record", id=rid, status="rejected", reason=str(exc)[:500], reply_to="rec"),
                    )

    def _dead(self, topic: str, device: str | None, reason: str, payload: bytes) -> None:
        self.stats.rejected += 1
        log.warning("dead-lettered %s: %s", topic[:200], reason)
        self.store.dead_letter(topic, device, reason, payload)

    def _receipt(self, device: str, receipt: Receipt) -> None:
        self._pending[device].append(receipt)

    def _record(self, up: topics.UpTopic, payload: bytes) -> None:
        env = parse(RecordEnvelope, payload)
        if env.device != up.device:
            raise WireError(f"record names device {env.device!r} but was published by {up.device!r}")
        if env.kind != up.record_kind:
            raise WireError(f"record kind {env.kind!r} does not match topic kind {up.record_kind!r}")
        status = self.store.put_record(
            up.device,
            env.record_id,
            env.kind,
            env.created_utc,
            env.blob.sha256 if env.blob else None,
            env.blob.size if env.blob else None,
            payload.decode(),
        )
        if status == "stored":
            self.stats.records_stored += 1
        else:
            self.stats.duplicates += 1
        self._receipt(up.device, Receipt(type="record", id=env.record_id, status=status, reply_to="rec"))

    def _blob_init(self, up: topics.UpTopic, payload: bytes) -> None:
        init = parse(BlobInit, payload)
        if init.sha256 != up.sha256:
            raise WireError("init sha256 does not match the topic")
        size = self.store.blob_size(init.sha256)
        if size is not None:
            self._receipt(
                up.device,
                Receipt(
                    type="blob", id=init.sha256, status="duplicate", size=size, sha256=init.sha256, reply_to="init"
                ),
            )
            return
        info = self.store.staging_info(init.sha256)
        if info is not None and info[0] != init.size:
            raise WireError(f"blob {init.sha256} announced with size {init.size} but staged with {info[0]}")
        self.store.start_staging(init.sha256, init.size, init.media_type, up.device)
        state = self.store.blob_state(init.sha256)
        status = "missing" if state.status == "partial" and state.missing == ((0, init.size),) else state.status
        self._receipt(
            up.device,
            Receipt(
                type="blob",
                id=init.sha256,
                status=status,
                size=init.size,
                missing=list(state.missing) or None,
                reply_to="init",
            ),
        )

    def _chunk(self, up: topics.UpTopic, payload: bytes) -> None:
        assert up.sha256 is not None and up.offset is not None
        if len(payload) > self.max_chunk:
            raise WireError(f"chunk of {len(payload)} bytes exceeds {self.max_chunk}")
        if self.store.blob_size(up.sha256) is not None:
            return  # already complete; a late duplicate chunk
        info = self.store.staging_info(up.sha256)
        if info is None:
            raise WireError("chunk for a blob that was never announced with init")
        if up.offset + len(payload) > info[0] or (not payload and info[0] > 0):
            raise WireError(f"chunk [{up.offset}, {up.offset + len(payload)}) lies outside the blob's {info[0]} bytes")
        self.store.put_chunk(up.sha256, up.offset, payload)

    def _blob_fin(self, up: topics.UpTopic, payload: bytes) -> None:
        fin = parse(BlobFin, payload)
        sha = fin.sha256
        if sha != up.sha256:
            raise WireError("fin sha256 does not match the topic")
        size = self.store.blob_size(sha)
        if size is not None:
            self._receipt(
                up.device, Receipt(type="blob", id=sha, status="duplicate", size=size, sha256=sha, reply_to="fin")
            )
            return
        info = self.store.staging_info(sha)
        if info is None:
            self._receipt(up.device, Receipt(type="blob", id=sha, status="missing", reply_to="fin"))
            return
        staged_size, media_type, _dev = info
        if staged_size != fin.size:
            raise WireError(f"fin size {fin.size} differs from init size {staged_size}")
        state = self.store.blob_state(sha)
        if state.missing:
            self._receipt(
                up.device,
                Receipt(
                    type="blob", id=sha, status="partial", size=fin.size, missing=list(state.missing), reply_to="fin"
                ),
            )
            return
        try:
            self.blobs.assemble(sha, fin.size, self.store.iter_chunks(sha))
        except BlobMismatch as exc:
            self.store.drop_staging(sha)
            reason = f"blob {sha}: {exc}"
            self._dead(up_topic(up), up.device, reason, b"")
            self._receipt(
                up.device, Receipt(type="blob", id=sha, status="rejected", reason=reason[:500], reply_to="fin")
            )
            return
        status = self.store.finish_blob(sha, fin.size, media_type, up.device)
        self.stats.blobs_stored += status == "stored"
        self._receipt(up.device, Receipt(type="blob", id=sha, status=status, size=fin.size, sha256=sha, reply_to="fin"))

    def _query(self, up: topics.UpTopic, payload: bytes) -> None:
        q = parse(SyncQuery, payload)
        known = self.store.known_records(up.device, q.record_ids)
        for rid in q.record_ids:
            self._receipt(
                up.device,
                Receipt(type="record", id=rid, status="stored" if rid in known else "missing", reply_to="query"),
            )
        for sha in q.blobs:
            state = self.store.blob_state(sha)
            if state.status == "stored":
                self._receipt(
                    up.device,
                    Receipt(type="blob", id=sha, status="stored", size=state.size, sha256=sha, reply_to="query"),
                )
            elif state.status == "partial":
                self._receipt(
                    up.device,
                    Receipt(
                        type="blob",
                        id=sha,
                        status="partial",
                        size=state.size,
                        missing=list(state.missing),
                        reply_to="query",
                    ),
                )
            else:
                self._receipt(up.device, Receipt(type="blob", id=sha, status="missing", reply_to="query"))


def up_topic(up: topics.UpTopic) -> str:
    return topics.blob_fin(up.device, up.sha256 or "")


def _peek_record_id(payload: bytes) -> str | None:
    """The record id of a record we reject, so the device learns why (if it is well-formed)."""
    import json

    try:
        data = json.loads(payload[: 1 << 20])
    except (ValueError, UnicodeDecodeError):
        return None
    rid = data.get("record_id") if isinstance(data, dict) else None
    if (
        isinstance(rid, str)
        and topics.KIND_RE.pattern
        and len(rid) <= 64
        and all(c in "0123456789abcdef-" for c in rid)
    ):
        return rid
    return None
