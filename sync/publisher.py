"""The device-side publisher: outbox → MQTT, until a central receipt confirms each item.

One thread owns the paho client, the outbox connection and every publish, and drives the network
with ``client.loop()``; callbacks therefore run on this thread and need no locks. A fresh paho
client is made for each connection, so paho never retransmits on its own from a memory queue: the
SQLite outbox is the only source of what still has to go, and anything that was in flight when a
connection died is simply sent again (the ingester deduplicates). A broker PUBACK only moves an
item to ``sent``; ``confirmed`` needs the ingester's receipt with the matching size and sha256.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from sync import topics
from sync.mqtt import BrokerAddress, Credentials, backoff, connect_properties, new_client
from sync.outbox import BlobRef, OutboxStore
from sync.settings import SyncSettings
from sync.wire import BlobFin, BlobInit, Receipt, ReceiptBatch, SyncQuery, WireError, encode, parse

log = logging.getLogger("fieldcap.sync")

TOPIC_OVERHEAD = 200  # bytes of a chunk PUBLISH packet besides its payload (topic, properties)
SMALL_BLOB_CHUNKS = 4  # blobs up to this many chunks are sent without waiting for the init receipt
MAX_UPLOADS = 4
QUERY_PAGE = 500


class Closable(OutboxStore, Protocol):
    """An outbox this publisher owns and closes when it stops."""

    def close(self) -> None: ...


@dataclass
class PublisherStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    records_sent: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    receipts: int = 0
    queries: int = 0
    last_receipt_mono: float | None = None
    last_error: str | None = None
    idle: bool = False


@dataclass
class _Upload:
    ref: BlobRef
    fd: int
    chunk: int
    ranges: deque[tuple[int, int]] = field(default_factory=deque)
    phase: Literal["init", "sending", "fin", "awaiting"] = "init"
    chunks_in_flight: int = 0
    since: float = field(default_factory=time.monotonic)


class _Bucket:
    """Token bucket for the upload bandwidth cap (bytes per second)."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.tokens = float(rate or 0)
        self.t = time.monotonic()

    def allow(self, n: int) -> bool:
        if self.rate is None:
            return True
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens <= 0:
            return False
        self.tokens -= n
        return True


class Publisher:
    """Publishes a device's outbox and applies the receipts that come back."""

    def __init__(
        self,
        *,
        device_id: str,
        settings: SyncSettings,
        credentials: Credentials,
        open_store: Callable[[], Closable],
    ) -> None:
        self.device = device_id
        self.settings = settings
        self.credentials = credentials
        self.address = BrokerAddress.parse(settings.broker)
        self._open_store = open_store
        self.stats = PublisherStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._alive = False
        self._idle_checked = 0.0
        self._pending_local_errors: list[tuple[BlobRef, str]] = []
        self._reset_connection_state()

    def _reset_connection_state(self) -> None:
        self._inflight: dict[int, tuple[str, str]] = {}  # mid -> (what, id)
        self._acked_records: list[str] = []
        self._receipts: list[Receipt] = []
        self._awaiting_records: dict[str, float] = {}
        self._awaiting_blobs: dict[str, float] = {}
        self._uploads: dict[str, _Upload] = {}
        self._refs: dict[str, BlobRef] = {}
        self._max_payload = self.settings.chunk_size
        self._resync = True
        self._last_query = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fieldcap-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything in the outbox is confirmed (or rejected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.idle:
                return True
            time.sleep(0.1)
        return self.stats.idle

    def _run(self) -> None:
        store = self._open_store()
        self._bucket = _Bucket(self.settings.bandwidth_bps)
        attempt = 0
        try:
            while not self._stop.is_set():
                if not self._connect():
                    attempt += 1
                    self._stop.wait(backoff(attempt))
                    continue
                ok = self._session(store)
                attempt = 0 if ok else attempt + 1
                if not self._stop.is_set():
                    self._stop.wait(backoff(attempt))
        finally:
            self._close_uploads()
            store.close()

    def _connect(self) -> bool:
        client = new_client(
            f"fieldcap-{self.device}",
            self.credentials,
            max_inflight=self.settings.max_inflight,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.will_set(topics.status(self.device), b"offline", qos=1, retain=True)
        self._reset_connection_state()
        try:
            client.connect(
                self.address.host,
                self.address.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,
                properties=connect_properties(self.settings.session_expiry_s),
            )
        except (OSError, ValueError) as exc:
            self.stats.last_error = f"cannot reach broker {self.address.host}:{self.address.port}: {exc}"
            log.warning("%s", self.stats.last_error)
            return False
        self._client = client
        self._alive = True
        return True

    def _session(self, store: Closable) -> bool:
        """Run one connection until it drops or we stop; True if it was ever established."""
        client = self._client
        assert client is not None
        established = False
        deadline = time.monotonic() + 10.0
        while self._alive and not self._stop.is_set():
            busy = False
            if self.stats.connected:
                established = True
                busy = self._pump(store)
            elif time.monotonic() > deadline:
                self.stats.last_error = "no CONNACK from broker within 10 s"
                break
            rc = client.loop(timeout=0.0 if busy else 0.05)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                break
        if self._stop.is_set() and self.stats.connected:
            client.publish(topics.status(self.device), b"offline", qos=1, retain=True)
            client.loop(timeout=0.1)
            client.disconnect()
            client.loop(timeout=0.1)
        with_socket = client.socket()
        if with_socket is not None:
            client.disconnect()
        self.stats.connected = False
        self._alive = False
        self._close_uploads()
        return established

    def _close_uploads(self) -> None:
        for up in self._uploads.values():
            os.close(up.fd)
        self._uploads.clear()

    # ------------------------------------------------------------------ paho callbacks (same thread)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            self.stats.last_error = f"broker refused the connection: {rc}"
            log.error("%s (check the device id, credentials and ACL)", self.stats.last_error)
            self._alive = False
            return
        self.stats.connected = True
        self.stats.connects += 1
        max_packet = getattr(props, "MaximumPacketSize", None)
        if max_packet:
            self._max_payload = max(1024, min(self.settings.chunk_size, int(max_packet) - TOPIC_OVERHEAD))
        client.subscribe(topics.receipts(self.device), qos=1)
        client.publish(topics.status(self.device), b"online", qos=1, retain=True)
        log.info("connected to %s:%d", self.address.host, self.address.port)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            if self._stop.is_set():
                log.info("disconnected from broker on stop")
            else:
                log.warning("disconnected from broker: %s", rc)
        self.stats.connected = False
        self._alive = False

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        what = self._inflight.pop(mid, None)
        if what is None:
            return
        kind, ident = what
        if rc.is_failure:
            # An error PUBACK still counts as "published" in paho: the broker did not take it.
            self.stats.last_error = f"broker rejected a publish ({kind} {ident}): {rc}"
            log.error("%s", self.stats.last_error)
            if kind in ("chunk", "fin", "init") and ident in self._uploads:
                self._abort_upload(ident)
            return
        if kind == "rec":
            self._acked_records.append(ident)
            self._awaiting_records[ident] = time.monotonic()
        elif kind == "chunk":
            up = self._uploads.get(ident)
            if up is not None:
                up.chunks_in_flight -= 1
        elif kind == "fin":
            up = self._uploads.get(ident)
            if up is not None:
                up.phase = "awaiting"
                up.since = time.monotonic()
            self._awaiting_blobs[ident] = time.monotonic()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            batch = parse(ReceiptBatch, bytes(msg.payload))
        except WireError as exc:
            log.error("ignoring a malformed receipt on %s: %s", msg.topic, exc)
            return
        self._receipts.extend(batch.receipts)

    # ------------------------------------------------------------------ the pump

    def _publish(self, topic: str, payload: bytes, what: tuple[str, str]) -> bool:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._alive = False
            return False
        self._inflight[info.mid] = what
        self.stats.bytes_sent += len(payload)
        return True

    def _window(self) -> int:
        return self.settings.max_inflight - len(self._inflight)

    def _pump(self, store: Closable) -> bool:
        """Do one round of work; True if anything happened (so the loop should not sleep)."""
        busy = False
        if self._acked_records:
            store.mark_records(self._acked_records, "sent")
            self._acked_records = []
            busy = True
        for up in list(self._uploads.values()):
            if up.phase == "fin" and up.chunks_in_flight == 0 and not up.ranges:
                self._send_fin(up)
        if self._receipts:
            self._apply_receipts(store)
            busy = True
        busy |= self._query(store)
        if self._window() > 0:
            records = store.records_to_send(self._window(), skip=set())
            sent_ids = {ident for kind, ident in self._inflight.values() if kind == "rec"}
            for item in records:
                if item.record_id in sent_ids:
                    continue
                if not self._bucket.allow(len(item.body_json)):
                    break
                if not self._publish(
                    topics.record(self.device, item.kind), item.body_json.encode(), ("rec", item.record_id)
                ):
                    return busy
                self.stats.records_sent += 1
                busy = True
        if self._window() > 0 and len(self._uploads) < MAX_UPLOADS:
            for ref in store.blobs_to_send(MAX_UPLOADS - len(self._uploads), skip=set(self._uploads)):
                self._start_upload(store, ref)
                busy = True
        for up in list(self._uploads.values()):
            busy |= self._send_chunks(up)
        if not busy and not self._inflight and not self._uploads:
            self._check_idle(store)
        else:
            self.stats.idle = False
        return busy

    def _check_idle(self, store: Closable) -> None:
        now = time.monotonic()
        if now - self._idle_checked < 0.25:
            return
        self._idle_checked = now
        recs, blobs = store.unconfirmed(1)
        self.stats.idle = not (
            recs or blobs or store.records_to_send(1, set()) or store.blobs_to_send(1, set()) or self._awaiting_records
        )

    # ------------------------------------------------------------------ blobs

    def _start_upload(self, store: Closable, ref: BlobRef) -> None:
        try:
            fd = os.open(ref.path, os.O_RDONLY)
        except OSError as exc:
            store.mark_blob(ref.sha256, "rejected", f"local media unreadable: {exc}")
            store.record_event(
                "loss",
                f"media file {ref.path} cannot be read ({exc.strerror}); it cannot be synced",
                {"sha256": ref.sha256, "path": str(ref.path)},
            )
            return
        chunk = self._max_payload
        up = _Upload(ref, fd, chunk)
        self._uploads[ref.sha256] = up
        self._refs[ref.sha256] = ref
        init = BlobInit(sha256=ref.sha256, size=ref.size, chunk_size=chunk, media_type=ref.media_type)
        self._publish(topics.blob_init(self.device, ref.sha256), encode(init), ("init", ref.sha256))
        if ref.size <= chunk * SMALL_BLOB_CHUNKS:
            up.ranges.append((0, ref.size))
            up.phase = "sending"
        # Larger blobs wait for the init receipt, which says which ranges the central side lacks.

    def _send_chunks(self, up: _Upload) -> bool:
        if up.phase == "init" and time.monotonic() - up.since > self.settings.receipt_timeout_s:
            up.ranges.append((0, up.ref.size))  # no answer to init: send everything
            up.phase = "sending"
        if up.phase != "sending":
            return False
        sent = False
        while up.ranges and self._window() > 0:
            start, end = up.ranges[0]
            n = min(up.chunk, end - start)
            if not self._bucket.allow(n):
                break
            data = os.pread(up.fd, n, start)
            if len(data) != n:
                self._local_mismatch(up, f"file is shorter than the catalog says ({start + len(data)} < {up.ref.size})")
                return True
            if not self._publish(topics.blob_chunk(self.device, up.ref.sha256, start), data, ("chunk", up.ref.sha256)):
                return sent
            up.chunks_in_flight += 1
            self.stats.chunks_sent += 1
            sent = True
            if start + n >= end:
                up.ranges.popleft()
            else:
                up.ranges[0] = (start + n, end)
        if not up.ranges:
            up.phase = "fin"
        return sent

    def _send_fin(self, up: _Upload) -> None:
        fin = BlobFin(sha256=up.ref.sha256, size=up.ref.size)
        if self._publish(topics.blob_fin(self.device, up.ref.sha256), encode(fin), ("fin", up.ref.sha256)):
            up.phase = "awaiting"
            up.since = time.monotonic()

    def _abort_upload(self, sha: str) -> None:
        up = self._uploads.pop(sha, None)
        if up is not None:
            os.close(up.fd)

    def _local_mismatch(self, up: _Upload, why: str) -> None:
        self._abort_upload(up.ref.sha256)
        self._pending_local_errors.append((up.ref, why))

    # ------------------------------------------------------------------ receipts and queries

    def _apply_receipts(self, store: Closable) -> None:
        receipts, self._receipts = self._receipts, []
        confirmed: list[str] = []
        resend: list[str] = []
        self.stats.receipts += len(receipts)
        self.stats.last_receipt_mono = time.monotonic()
        for r in receipts:
            if r.type == "record":
                self._awaiting_records.pop(r.id, None)
                if r.status in ("stored", "duplicate"):
                    confirmed.append(r.id)
                elif r.status == "missing":
                    resend.append(r.id)
                elif r.status == "rejected":
                    store.mark_records([r.id], "rejected", r.reason)
                    store.record_event(
                        "rejected", f"central side rejected record {r.id}: {r.reason}", {"record_id": r.id}
                    )
            else:
                self._blob_receipt(store, r)
        store.mark_records(confirmed, "confirmed")
        store.mark_records(resend, "pending")
        for ref, why in self._pending_local_errors:
            store.mark_blob(ref.sha256, "rejected", why)
            store.record_event("loss", f"media {ref.path} cannot be synced: {why}", {"sha256": ref.sha256})
        self._pending_local_errors.clear()
        store.note_receipt()

    def _blob_receipt(self, store: Closable, r: Receipt) -> None:
        sha = r.id
        up = self._uploads.get(sha)
        ref = up.ref if up else self._refs.get(sha)
        if r.status in ("stored", "duplicate"):
            if ref is not None and (r.size != ref.size or r.sha256 != ref.sha256):
                log.error("receipt for blob %s does not match (size %s, sha %s); sending again", sha, r.size, r.sha256)
                self._abort_upload(sha)
                store.mark_blob(sha, "pending", "receipt did not match size/sha256")
                return
            self._abort_upload(sha)
            self._awaiting_blobs.pop(sha, None)
            self._refs.pop(sha, None)
            store.mark_blob(sha, "confirmed")
        elif r.status == "partial" and r.missing:
            if up is None and ref is not None:
                try:
                    fd = os.open(ref.path, os.O_RDONLY)
                except OSError:
                    store.mark_blob(sha, "pending")
                    return
                up = _Upload(ref, fd, self._max_payload)
                self._uploads[sha] = up
            if up is None:
                store.mark_blob(sha, "pending")
                return
            if up.phase in ("init", "awaiting"):
                up.ranges = deque((max(0, a), min(b, up.ref.size)) for a, b in r.missing if a < b)
                up.phase = "sending" if up.ranges else "fin"
                self._awaiting_blobs.pop(sha, None)
        elif r.status == "missing":
            if up is not None and up.phase == "init":
                up.ranges = deque([(0, up.ref.size)])
                up.phase = "sending"
            elif up is None or up.phase == "awaiting":
                self._abort_upload(sha)
                self._awaiting_blobs.pop(sha, None)
                store.mark_blob(sha, "pending")
        elif r.status == "rejected":
            self._abort_upload(sha)
            self._awaiting_blobs.pop(sha, None)
            if ref is not None and r.reason and "sha256" in r.reason:
                self._recheck_local(store, ref, r.reason)
            else:
                store.mark_blob(sha, "rejected", r.reason)
                store.record_event("rejected", f"central side rejected blob {sha}: {r.reason}", {"sha256": sha})

    def _recheck_local(self, store: Closable, ref: BlobRef, reason: str) -> None:
        """A hash mismatch centrally: resend if our file is intact, else record the local damage."""
        from sync.durable import sha256_file

        try:
            sha, size = sha256_file(ref.path)
        except OSError as exc:
            sha, size = f"unreadable: {exc.strerror}", -1
        if sha == ref.sha256 and size == ref.size:
            store.mark_blob(ref.sha256, "pending", reason)
        else:
            store.mark_blob(ref.sha256, "rejected", f"local file changed: {sha}")
            store.record_event(
                "loss",
                f"media {ref.path} no longer matches its catalog sha256; it cannot be synced",
                {"sha256": ref.sha256, "found": sha, "size": size},
            )

    def _query(self, store: Closable) -> bool:
        now = time.monotonic()
        if self._resync:
            self._resync = False
            recs, blobs = store.unconfirmed(100_000)
            for rid in recs:
                self._awaiting_records.setdefault(rid, 0.0)
            for ref in blobs:
                self._refs[ref.sha256] = ref
                self._awaiting_blobs.setdefault(ref.sha256, 0.0)
        if now - self._last_query < min(1.0, self.settings.receipt_timeout_s / 4):
            return False
        self._last_query = now
        cutoff = now - self.settings.receipt_timeout_s
        rec_ids = [rid for rid, t in self._awaiting_records.items() if t <= cutoff][:QUERY_PAGE]
        blob_ids = [sha for sha, t in self._awaiting_blobs.items() if t <= cutoff][:QUERY_PAGE]
        if not rec_ids and not blob_ids:
            return False
        for rid in rec_ids:
            self._awaiting_records[rid] = now
        for sha in blob_ids:
            self._awaiting_blobs[sha] = now
        q = SyncQuery(record_ids=rec_ids, blobs=blob_ids)
        self._publish(topics.query(self.device), encode(q), ("query", ""))
        self.stats.queries += 1
        return True
