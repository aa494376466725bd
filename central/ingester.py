"""The central ingestion subscriber: MQTT in, one store transaction per batch, receipts out.

Stateless: everything it knows is in the central store and the blob tree, so several ingesters
share one subscription (``$share/GROUP/...``) and any of them can finish a blob another one
started. Messages are read in batches; a batch is handled in one transaction (``central.intake``),
the staged chunk bytes are fdatasynced, the transaction commits, and only then are the messages
acknowledged to the broker and the receipts published. A crash at any point therefore loses
nothing that was acknowledged, and whatever was not acknowledged is either redelivered or asked
for again by the device (its receipt timeout and ``sync/query``).

By default an ingester's broker session ends with its connection (session expiry 0): the broker
then stops routing a dead ingester's share of the messages to it at once and gives them to the
others in the group. A fixed ``client_id`` with a session expiry keeps a single ingester's queue
across a restart instead.

Memory is bounded whatever devices send: the CONNECT asks the broker for packets no larger than
the largest message the protocol allows (``maximum_message``: a chunk plus its topic), so a broker
honouring MQTT 5 never hands the ingester a 100 MB payload; one that does anyway has it dropped and
counted at ``on_message``, before any parsing. A batch holds at most ``BATCH_BYTES`` plus one message.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from central.blobs import BlobBackend
from central.commands import open_commands
from central.heartbeat import HEARTBEAT_EVERY_S, beat
from central.intake import DEFAULT_MAX_CHUNK, Intake, IntakeStats
from central.limits import IntakeLimits
from central.store import CentralStore
from sync import topics
from sync.mqtt import TOPIC_OVERHEAD, BrokerAddress, Credentials, backoff, connect_properties, new_client
from sync.signing import COMMAND_CONTEXT, SIG_PROPERTY, ReceiptSigner
from sync.wire import MAX_RECORD_BYTES, Receipt, ReceiptBatch, encode, utc_now

log = logging.getLogger("fieldcap.ingest")

BATCH_MESSAGES = 500
BATCH_BYTES = 32 * 1024 * 1024
RECEIPT_BYTES = 64 * 1024  # receipts per message, before the broker's own maximum packet size
BATCH_RETRIES = 3
SUMMARY_EVERY_S = 60.0  # the totals log line
GAUGES_EVERY_S = 15.0  # staging gauges
COMMAND_LOOK_S = 2.0  # how often the open commands are read: a new one goes out within this
PACKET_OVERHEAD = 64 * 1024  # topic, properties and headers around a payload, generously
COMMAND_EVERY_S = 30.0  # open central → device commands are published again this often until acknowledged
SIGNATURE_BYTES = 128  # the signature's user property: name, "ed25519:" and 88 base64 characters


def maximum_message(max_chunk: int) -> int:
    """The largest MQTT packet a device may send the ingester: a chunk (records are far smaller)."""
    return max(max_chunk, MAX_RECORD_BYTES) + PACKET_OVERHEAD


class Outage(Exception):
    """The store or the blob disk cannot take data now: stop acknowledging, reconnect later."""


# Upper bounds (seconds) of the latency histograms: message arrival → receipt sent, and one store
# transaction. The last bucket is +Inf.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass
class Histogram:
    """Cumulative-bucket counts and a sum, as Prometheus histograms carry them."""

    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs ending with +Inf."""
        out, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


@dataclasses.dataclass
class IngestStats(IntakeStats):
    batches: int = 0
    connected: bool = False
    outages: int = 0
    #: Message arrival → its receipt published (the device's wait, less the network).
    receipt_latency: Histogram = dataclasses.field(default_factory=Histogram)
    #: One store transaction (a batch of messages).
    store_latency: Histogram = dataclasses.field(default_factory=Histogram)
    #: Unfinished uploads and the bytes they announced (refreshed every GAUGES_EVERY_S).
    open_uploads: int = 0
    staged_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    oversize: int = 0  # the size of a payload dropped at the door (0: the payload is all here)
    arrived: float = dataclasses.field(default_factory=time.monotonic)


class Ingester:
    """Validates, stores and answers everything devices publish under ``fieldcap/v1/+/up/#``."""

    def __init__(
        self,
        *,
        broker: str,
        store: CentralStore,
        blobs: BlobBackend,
        staging_dir: Path | None = None,
        group: str = "ingest",
        client_id: str | None = None,
        session_expiry_s: int = 0,
        credentials: Credentials | None = None,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        reconnect_max_s: float = 30.0,
        limits: IntakeLimits | None = None,
        signer: ReceiptSigner | None = None,
        command_every_s: float = COMMAND_EVERY_S,
        heartbeat_every_s: float = HEARTBEAT_EVERY_S,
    ) -> None:
        """``signer`` signs every receipt message; without it devices that hold the receipt
        public key refuse every receipt, and devices without one cannot tell forged ones."""
        self.address = BrokerAddress.parse(broker)
        topics.ingest_subscription(group)  # validates the group name
        self.store = store
        self.blobs = blobs
        self.group = group
        self.client_id = client_id or f"fieldcap-ingest-{group}-{threading.get_native_id()}-{time.time_ns() % 10**9}"
        self.session_expiry_s = session_expiry_s
        self.credentials = credentials or Credentials()
        self.reconnect_max_s = reconnect_max_s
        self.signer = signer
        self.command_every_s = command_every_s
        self._next_commands = 0.0
        self._command_sent: dict[bytes, float] = {}  # open command (payload digest) -> when published
        self.heartbeat_every_s = heartbeat_every_s
        self._next_heartbeat = 0.0
        self.started_utc = utc_now()
        self.stats = IngestStats()
        self.intake = Intake(store, blobs, self._emit, staging_dir=staging_dir, max_chunk=max_chunk, limits=limits)
        self.intake.stats = self.stats
        self.max_message = maximum_message(max_chunk)
        self._next_sweep = 0.0
        self._next_summary = time.monotonic() + SUMMARY_EVERY_S
        self._next_gauges = 0.0
        self._summarised: dict[str, int] = {}
        #: Called after each committed batch with its size (metrics; tests kill the process here).
        self.on_commit: Callable[[int], None] | None = None
        self._stop = threading.Event()
        self._outgoing: list[tuple[str, Receipt]] = []
        self._inbox: list[Message] = []
        self._max_packet = RECEIPT_BYTES + TOPIC_OVERHEAD
        self._subscribed = threading.Event()

    # ------------------------------------------------------------------ handling without a broker

    def handle(self, topic: str, payload: bytes) -> None:
        """Handle one message in its own transaction (the batch path does the same per batch)."""
        self.handle_batch([Message(topic, payload, 0, 0)])

    @property
    def pending_receipts(self) -> list[tuple[str, Receipt]]:
        """Receipts produced but not yet published."""
        return self._outgoing

    def handle_batch(self, messages: Sequence[Message]) -> None:
        """Handle messages in one transaction; fall back to one at a time if the batch fails.

        Raises Outage if the store or the blob disk cannot take them; nothing is then committed
        for the messages that were not handled.
        """
        for attempt in range(BATCH_RETRIES):
            try:
                self._transaction(messages)
                return
            except Exception as exc:
                if isinstance(exc, OSError):
                    raise Outage(f"blob storage failed: {exc}") from exc
                if self.store.is_transient(exc) and attempt + 1 < BATCH_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if len(messages) == 1:
                    self._internal_error(messages[0], exc)
                    return
                log.warning("a batch of %d failed (%s); handling its messages one by one", len(messages), exc)
                break
        for msg in messages:
            try:
                self._transaction([msg])
            except OSError as exc:
                raise Outage(f"blob storage failed: {exc}") from exc
            except Exception as exc:
                self._internal_error(msg, exc)

    def _transaction(self, messages: Sequence[Message]) -> None:
        mark = len(self._outgoing)
        saved = copy.deepcopy(self.stats)  # the per-kind and per-device counts are dicts
        started = time.monotonic()
        try:
            with self.store.batch():
                self.intake.begin()
                for msg in messages:
                    if msg.oversize:
                        self.intake.dead(
                            msg.topic[:200],
                            _device_of(msg.topic),
                            f"message of {msg.oversize} bytes dropped unread",
                            b"",
                        )
                        continue
                    self.intake.handle(msg.topic, msg.payload)
                self.intake.flush()
                self.intake.staging.sync()  # staged bytes are durable before their rows commit
        except BaseException:
            self.intake.staging.release()
            del self._outgoing[mark:]
            for f in dataclasses.fields(saved):  # the counts as they were before the batch
                setattr(self.stats, f.name, getattr(saved, f.name))
            raise
        self.stats.batches += 1
        self.stats.store_latency.observe(time.monotonic() - started)

    def _internal_error(self, msg: Message, exc: BaseException) -> None:
        """A message that breaks the handler itself: dead-letter it rather than retry forever."""
        log.error("internal error handling %s: %r", msg.topic[:200], exc)
        try:
            with self.store.batch():
                self.intake.dead(msg.topic, None, f"internal error: {type(exc).__name__}: {exc}", msg.payload)
        except Exception as exc2:
            raise Outage(f"the central store cannot take data: {exc2}") from exc2

    def sweep(self) -> None:
        """Expire abandoned uploads and old dead letters, summarise dropped ones (one transaction)."""
        try:
            with self.store.batch():
                self.intake.sweep()
        except Exception as exc:  # housekeeping must never stop ingestion; the next sweep retries
            log.error("sweep failed: %r", exc)
        self._next_sweep = time.monotonic() + self.intake.limits.sweep_interval_s

    def _refresh_gauges(self) -> None:
        """Unfinished uploads and their announced bytes, read from the store (all ingesters' alike)."""
        self._next_gauges = time.monotonic() + GAUGES_EVERY_S
        try:
            self.stats.open_uploads, self.stats.staged_bytes = self.store.staging_totals()
        except Exception as exc:  # a gauge must never stop ingestion
            log.warning("cannot read the staging totals: %r", exc)

    def _log_summary(self) -> None:
        """Once a minute at default verbosity: the same totals the metrics endpoint serves."""
        from central.metrics import summary_line

        now = dataclasses.asdict(self.stats)
        log.info("totals: %s", summary_line(self.stats, self._summarised))
        self._summarised = {k: v for k, v in now.items() if isinstance(v, int)}
        self._next_summary = time.monotonic() + SUMMARY_EVERY_S

    def heartbeat(self, *, stopped: bool = False) -> None:
        """Say in the store that this ingester is alive (or stopped); a failure only logs."""
        try:
            beat(self.store, self.client_id, self.started_utc, self.stats, stopped=stopped)
        except Exception as exc:  # the store may be down: ingestion notices that on its own
            log.warning("heartbeat failed: %r", exc)
        self._next_heartbeat = time.monotonic() + self.heartbeat_every_s

    def _emit(self, device: str, receipt: Receipt) -> None:
        self._outgoing.append((device, receipt))

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        self._stop.set()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def run(self) -> None:
        """Serve until ``stop()``; reconnects with capped, jittered backoff."""
        attempt = 0
        self.heartbeat()
        try:
            self._run(attempt)
        finally:
            self.heartbeat(stopped=True)

    def _run(self, attempt: int) -> None:
        while not self._stop.is_set():
            if time.monotonic() >= self._next_heartbeat:
                self.heartbeat()  # also while the broker is unreachable: alive, but not connected
            client = new_client(
                self.client_id, self.credentials, max_inflight=1000, manual_ack=True, tls=self.address.tls
            )
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            self._inbox.clear()
            self._outgoing.clear()
            try:
                client.connect(
                    self.address.host,
                    self.address.port,
                    keepalive=30,
                    clean_start=self.session_expiry_s == 0,
                    properties=connect_properties(
                        self.session_expiry_s, receive_maximum=BATCH_MESSAGES * 2, maximum_packet=self.max_message
                    ),
                )
            except (OSError, ValueError) as exc:
                attempt += 1
                log.warning("cannot reach broker %s:%d: %s", self.address.host, self.address.port, exc)
                self._stop.wait(backoff(attempt, cap=self.reconnect_max_s))
                continue
            ok = self._serve(client)
            attempt = 0 if ok else attempt + 1
            self.stats.connected = False
            self._subscribed.clear()
            if not self._stop.is_set():
                self._stop.wait(backoff(attempt, cap=self.reconnect_max_s))

    def _serve(self, client: mqtt.Client) -> bool:
        """One connection; False if it ended because of an outage or a refusal."""
        try:
            while not self._stop.is_set():
                rc = client.loop(timeout=0.05)
                if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                    return self.stats.connected
                self._drain(client)
                if self._inbox:
                    self._process(client)
                if time.monotonic() >= self._next_sweep:
                    self.sweep()
                if time.monotonic() >= self._next_commands:
                    self._publish_commands(client)
                if time.monotonic() >= self._next_summary:
                    self._log_summary()
                if time.monotonic() >= self._next_gauges:
                    self._refresh_gauges()
                if time.monotonic() >= self._next_heartbeat:
                    self.heartbeat()
        except Outage as exc:
            self.stats.outages += 1
            log.error("%s; not acknowledging, reconnecting later", exc)
            client.disconnect()
            return False
        client.disconnect()
        client.loop(timeout=0.1)
        return True

    def _drain(self, client: mqtt.Client) -> None:
        """Read what is already waiting on the socket (paho reads one packet per loop call)."""
        sock = client.socket()
        size = sum(len(m.payload) for m in self._inbox)
        while sock is not None and len(self._inbox) < BATCH_MESSAGES and size < BATCH_BYTES:
            pending = getattr(sock, "pending", None)
            if not (pending and pending()) and not select.select([sock], [], [], 0)[0]:
                break
            before = len(self._inbox)
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                break
            size += sum(len(m.payload) for m in self._inbox[before:])
            sock = client.socket()

    def _process(self, client: mqtt.Client) -> None:
        batch, self._inbox = self._inbox, []
        self.handle_batch(batch)
        for msg in batch:
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
        if self.on_commit is not None:
            self.on_commit(len(batch))
        self._flush_receipts(client)
        now = time.monotonic()
        for msg in batch:
            self.stats.receipt_latency.observe(now - msg.arrived)

    def _flush_receipts(self, client: mqtt.Client) -> None:
        outgoing, self._outgoing = self._outgoing, []
        by_device: dict[str, list[Receipt]] = {}
        for device, receipt in outgoing:
            by_device.setdefault(device, []).append(receipt)
        limit = min(RECEIPT_BYTES, self._max_packet - TOPIC_OVERHEAD)
        for device, receipts in by_device.items():
            topic = topics.receipts(device)
            for payload in _pack(receipts, limit - SIGNATURE_BYTES if self.signer else limit):
                client.publish(topic, payload, qos=1, properties=self._signed(topic, payload))

    def _publish_commands(self, client: mqtt.Client) -> None:
        """Publish open commands (QoS 1): a new one at once, each again every ``command_every_s``
        until its device acknowledges it; devices apply each id once."""
        now = time.monotonic()
        self._next_commands = now + min(COMMAND_LOOK_S, self.command_every_s)
        try:
            pending = open_commands(self.store)
        except Exception as exc:  # commands must never stop ingestion; the next round retries
            log.error("cannot read the open commands: %r", exc)
            return
        sent, self._command_sent = self._command_sent, {}
        for device, kind, payload in pending:
            key = hashlib.sha256(payload).digest()
            last = sent.get(key)
            if last is not None and now - last < self.command_every_s:
                self._command_sent[key] = last  # published recently: its device has it, or is offline
                continue
            self._command_sent[key] = now
            try:
                topic = topics.command(device, kind)
            except topics.TopicError as exc:
                log.error("not publishing a command: %s", exc)
                continue
            client.publish(topic, payload, qos=1, properties=self._signed(topic, payload, COMMAND_CONTEXT))

    def _signed(self, topic: str, payload: bytes, context: bytes | None = None) -> Properties | None:
        """The PUBLISH properties carrying the message's signature (a receipt's unless ``context``)."""
        if self.signer is None:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        sig = self.signer.sign(topic, payload) if context is None else self.signer.sign(topic, payload, context)
        props.UserProperty = (SIG_PROPERTY, sig)
        return props

    # ------------------------------------------------------------------ paho callbacks (same thread)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the ingester: %s (check its credentials and ACL)", rc)
            return
        self.stats.connected = True
        self._max_packet = int(getattr(props, "MaximumPacketSize", 0) or (RECEIPT_BYTES + TOPIC_OVERHEAD))
        client.subscribe(topics.ingest_subscription(self.group), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("broker refused the ingest subscription: %s (check the ACL)", rcs)
            return
        log.info("ingesting from %s:%d as group %r", self.address.host, self.address.port, self.group)
        self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.stats.connected and not self._stop.is_set():
            log.warning("ingester disconnected: %s", rc)
        self.stats.connected = False

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers check this, but a bad one must not stop the ingester
            topic = "<topic is not UTF-8>"
        if len(msg.payload) > self.max_message:
            # Not parsed, not stored, not kept: acknowledged (after the batch) so it is not redelivered.
            self.stats.oversize_dropped += 1
            log.warning(
                "dropped a %d-byte message on %r: over the %d-byte limit",
                len(msg.payload),
                topic[:200],
                self.max_message,
            )
            self._inbox.append(Message(topic, b"", msg.mid, msg.qos, oversize=len(msg.payload)))
            return
        self._inbox.append(Message(topic, bytes(msg.payload), msg.mid, msg.qos))


def _pack(receipts: list[Receipt], limit: int) -> list[bytes]:
    """Receipt batches, each encoded within ``limit`` bytes."""
    out: list[bytes] = []
    start = 0
    step = len(receipts)
    while start < len(receipts):
        n = min(step, len(receipts) - start)
        payload = encode(ReceiptBatch(receipts=receipts[start : start + n]))
        if len(payload) > limit and n > 1:
            step = max(1, n // 2)
            continue
        out.append(payload)
        start += n
    return out


def _device_of(topic: str) -> str | None:
    try:
        return topics.parse_up(topic).device
    except topics.TopicError:
        return None
