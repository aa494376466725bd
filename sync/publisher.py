"""The device-side publisher: outbox → MQTT, until a central receipt confirms each item.

One thread owns the paho client, the outbox connection and every publish, and drives the network
with ``client.loop()``; callbacks run on this thread and need no locks. A fresh paho client is
made for each connection, so paho never retransmits on its own from a memory queue: the SQLite
outbox is the only source of what still has to go, and anything that was in flight when a
connection died is simply sent again (the ingester deduplicates). A broker PUBACK only moves an
item to ``sent``; ``confirmed`` needs the ingester's receipt with the matching size and sha256.

Each round of the loop gathers PUBACKs and receipts, writes the resulting state changes in one
outbox transaction, then publishes: queries that are due, records (highest priority first), and
media chunks — records and verdicts always before media, operator-flagged items before the rest,
all within the broker's receive maximum, its maximum packet size and the bandwidth cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from sync import topics
from sync.commands import Command, parse_command
from sync.mqtt import BrokerAddress, ConnackLimits, Credentials, backoff, connect_properties, new_client
from sync.outbox import BlobRef, OutboxChanges, OutboxItem, OutboxStore
from sync.ratelimit import TokenBucket
from sync.receipts import Awaiting, ReceiptBook
from sync.settings import SyncSettings
from sync.signing import COMMAND_CONTEXT, ReceiptVerifier, signature_of
from sync.uploads import Event, LocalMediaError, Upload, local_loss
from sync.wire import (
    MAX_QUERY_ITEMS,
    MAX_RECORD_BYTES,
    BlobFin,
    BlobInit,
    Receipt,
    ReceiptBatch,
    SyncQuery,
    WireError,
    encode,
    parse,
)

log = logging.getLogger("fieldcap.sync")
IDLE_POLL_S = 0.25

RESYNC_LIMIT = 200_000  # unconfirmed items loaded after a (re)connect, to ask the central side about
QUERY_PAGES_PER_ROUND = 4
RECORD_PAGE = 256
SETTLE_EVERY_S = 0.1  # outbox writes are gathered this long (see _settle)
SETTLE_MAX = 5000
PACKET_TOO_LARGE = 0x95
NO_MATCHING_SUBSCRIBERS = 0x10
UNROUTED_ASK_S = 1.0  # ask about a message the broker routed to nobody after this long
DENIED_EVENT_EVERY_S = 3600.0  # one event per hour per reason while the broker keeps refusing
FORGED_EVENT_EVERY_S = 600.0  # at most one forged_receipt event per ten minutes; the rest are counted

Kind = Literal["rec", "chunk", "init", "fin", "query", "status"]


class Closable(OutboxStore, Protocol):
    """An outbox this publisher owns and closes when it stops."""

    def close(self) -> None: ...


@dataclass
class PublisherStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    records_sent: int = 0
    records_confirmed: int = 0
    chunks_sent: int = 0
    blobs_confirmed: int = 0
    bytes_sent: int = 0
    receipts: int = 0
    forged_receipts: int = 0  # receipt messages refused: unsigned or not signed by the central side
    commands: int = 0  # central commands received and valid (replays included)
    commands_refused: int = 0  # command messages refused: malformed, for another device, or badly signed
    queries: int = 0
    refused_publishes: int = 0
    unrouted: int = 0  # PUBACKs saying "no matching subscribers": no ingester is listening
    last_receipt_mono: float | None = None
    last_error: str | None = None
    idle: bool = False


class Publisher:
    """Publishes a device's outbox and applies the receipts that come back."""

    def __init__(
        self,
        *,
        device_id: str,
        settings: SyncSettings,
        credentials: Credentials,
        open_store: Callable[[], Closable],
        verifier: ReceiptVerifier | None = None,
    ) -> None:
        """``verifier`` (the central side's receipt public key) makes every receipt message prove
        that an ingester signed it for this device; without one any client that may publish on
        this device's receipt topic can confirm items."""
        topics.status(device_id)  # validates the device id
        self.device = device_id
        self.settings = settings
        self.credentials = credentials
        self.address = BrokerAddress.parse(settings.broker)
        self._open_store = open_store
        self.verifier = verifier
        self._receipt_topic = topics.receipts(device_id)
        self._command_prefix = topics.command(device_id, "x")[:-1]
        self._commands: list[tuple[Command, bool]] = []  # received, not yet applied (with: verified)
        self._forged_unreported = 0  # refused since the last forged_receipt event
        self.stats = PublisherStats()
        #: Monotonic time of the loop's last iteration (the daemon's watchdog reads it).
        self.heartbeat: float | None = None
        self._idle_checked = 0.0  # when the last look at the outbox for idleness began
        self._idle_version = -1  # the outbox's data_version at that look
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._bucket = TokenBucket(settings.bandwidth_bps, max(settings.chunk_size, (settings.bandwidth_bps or 0) // 4))
        # Across connections: what we wait a receipt for (id -> when to ask again) and refusals.
        self._awaiting = Awaiting()
        self._hold_until = 0.0
        self._refusals = 0
        self._event_times: dict[str, float] = {}
        self._events: list[Event] = []
        self._reset_connection_state()

    def _reset_connection_state(self) -> None:
        self._alive = False
        self._inflight: dict[int, tuple[Kind, str, Upload | None]] = {}
        self._sent_at: dict[int, float] = {}  # mid -> when published, oldest first
        self._inflight_records: set[str] = set()
        self._queue: deque[OutboxItem] = deque()  # a page of pending records, in outbox order
        self._uploads: dict[str, Upload] = {}
        self._book = ReceiptBook(self._awaiting, self._uploads, self._inflight_records)
        self._receipts: list[Receipt] = []
        self._changes = OutboxChanges()
        self._limits = ConnackLimits()
        self._window_max = self.settings.max_inflight
        self._resync = True
        self._next_query = 0.0
        self._settled = 0.0
        self._progress = time.monotonic()  # last PUBACK, or when something went in flight

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fieldcap-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything in the outbox is confirmed (or rejected).

        Only a look at the outbox that began after this call counts, so items committed just
        before it are never missed by a stale "idle" from an earlier look.
        """
        entered = time.monotonic()
        deadline = entered + timeout
        while True:
            if self.stats.idle and self._idle_checked > entered:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def run(self) -> None:
        """Publish in the calling thread until ``stop()`` (``start()`` runs this in a thread)."""
        self._run()

    def _run(self) -> None:
        store = self._open_store()
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    if self._connect():
                        attempt = 0 if self._session(store) else attempt + 1
                    else:
                        attempt += 1
                except Exception as exc:  # e.g. the catalog's disk is full: keep trying, never die
                    attempt += 1
                    self.stats.last_error = f"publisher error: {exc!r}"
                    log.exception("publisher error; retrying")
                self._wait(backoff(attempt, cap=self.settings.reconnect_max_s))
        finally:
            self._close_uploads()
            store.close()

    def _wait(self, seconds: float) -> None:
        """Sleep until the next attempt, still beating (waiting for the broker is not a stall)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            self._stop.wait(min(1.0, left))

    def _connect(self) -> bool:
        self.heartbeat = time.monotonic()
        self._reset_connection_state()
        client = new_client(
            f"fieldcap-{self.device}", self.credentials, max_inflight=0, tls=self.address.tls
        )  # 0 = no limit in paho: our own window limits what is in flight, paho must never hold one back
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.will_set(topics.status(self.device), b"offline", qos=1, retain=True)
        client.connect_timeout = min(10.0, max(2.0, float(self.settings.keepalive_s)))
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
        deadline = time.monotonic() + client.connect_timeout
        try:
            while self._alive and not self._stop.is_set():
                self.heartbeat = time.monotonic()
                busy = False
                if self.stats.connected:
                    established = True
                    busy = self._round(store)
                elif time.monotonic() > deadline:
                    self.stats.last_error = f"no CONNACK from the broker within {client.connect_timeout:g} s"
                    log.warning("%s", self.stats.last_error)
                    break
                rc = client.loop(timeout=0.0 if busy else self._sleep_s())
                if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                    break
            if self._stop.is_set() and self.stats.connected:
                self._settle(store, force=True)
                client.publish(topics.status(self.device), b"offline", qos=1, retain=True)
                client.loop(timeout=0.1)
                client.disconnect()
                client.loop(timeout=0.1)
            elif client.socket() is not None:
                client.disconnect()
            self._settle(store, force=True)  # PUBACKs and receipts that arrived in the last loop
        finally:
            if self.stats.connected:
                self.stats.disconnects += 1
            self.stats.connected = False
            self.stats.idle = False  # unknown until the next connection has looked
            self._alive = False
            self._close_uploads()
        return established

    def _sleep_s(self) -> float:
        """How long the loop may block in select when idle (it wakes early when data arrives).

        A quarter second bounds how late a new outbox row is noticed and keeps an idle agent's
        polling of the outbox (and its CPU) low; a busy loop does not sleep at all.
        """
        wait = self._bucket.wait_s()
        return IDLE_POLL_S if wait <= 0 else min(IDLE_POLL_S, max(0.001, wait))

    def _close_uploads(self) -> None:
        for up in self._uploads.values():
            up.close()
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
        self._limits = ConnackLimits.from_properties(props)
        self._window_max = min(self.settings.max_inflight, self._limits.receive_maximum or 65535)
        client.subscribe([(topics.receipts(self.device), 1), (topics.commands(self.device), 1)])
        self._publish(topics.status(self.device), b"online", ("status", ""), retain=True)
        log.info("connected to %s:%d", self.address.host, self.address.port)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.stats.connected and not self._stop.is_set():
            self.stats.last_error = f"disconnected from the broker: {rc}"
            log.warning("%s", self.stats.last_error)
        self._alive = False

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        what = self._inflight.pop(mid, None)
        self._sent_at.pop(mid, None)
        if what is None:
            return
        kind, ident, up = what
        self._progress = time.monotonic()
        if kind == "rec":
            self._inflight_records.discard(ident)
        if kind == "chunk" and up is not None:
            up.in_flight -= 1  # of the upload that sent it, even if a newer one replaced it
        if rc.is_failure:
            self._refused(kind, ident, up, rc)
            return
        self._refusals = 0
        ask_in = self.settings.receipt_timeout_s
        if rc.value == NO_MATCHING_SUBSCRIBERS and kind != "status":
            # Accepted but routed nowhere (no ingester subscribed right now): ask again soon.
            self.stats.unrouted += 1
            ask_in = min(ask_in, UNROUTED_ASK_S)
        now = time.monotonic()
        if kind == "rec":
            self._changes.record(ident, "sent")
            self._awaiting.records[ident] = now + ask_in
        elif kind == "fin" and self._uploads.get(ident) is up:
            self._changes.blob(ident, "sent")
            self._awaiting.blobs[ident] = now + ask_in
            self._end_upload(ident)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            self.stats.last_error = f"broker refused the receipt subscription: {rcs[0]}"
            log.error("%s; nothing can be confirmed (check the ACL for down/#)", self.stats.last_error)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if msg.topic.startswith(self._command_prefix):
            self._on_command(msg.topic, payload, signature_of(msg.properties))
            return
        if self.verifier is not None:
            # Checked against this device's own topic, whatever topic the message came on.
            why = self.verifier.check(self._receipt_topic, payload, signature_of(msg.properties))
            if why is not None:
                self._forged(why, len(payload))
                return
        try:
            batch = parse(ReceiptBatch, payload)
        except WireError as exc:
            log.error("ignoring a malformed receipt on %s: %s", msg.topic, exc)
            return
        self._receipts.extend(batch.receipts)

    def _on_command(self, topic: str, payload: bytes, signature: str | None) -> None:
        """Validate a central command; it is applied (once) when the round settles.

        With the central side's public key a command must be signed for this very topic; without
        one it is taken unverified, and the catalog refuses those that delete data.
        """
        why: str | None = None
        cmd: Command | None = None
        if self.verifier is not None:
            why = self.verifier.check(topic, payload, signature, COMMAND_CONTEXT)
        if why is None:
            try:
                cmd = parse_command(payload)
            except WireError as exc:
                why = f"malformed: {exc}"
        if cmd is not None and (cmd.device != self.device or topic != topics.command(self.device, cmd.kind)):
            why = f"addressed to {cmd.device!r} as {cmd.kind!r}, received on {topic[:200]!r}"
        if why is not None or cmd is None:
            self.stats.commands_refused += 1
            message = f"refused a central command message ({why}; {len(payload)} bytes); nothing was done"
            log.error("%s", message)
            self._event("command_refused", message, str(why)[:60])
            return
        self.stats.commands += 1
        self._commands.append((cmd, self.verifier is not None))

    def _apply_commands(self, store: Closable) -> None:
        commands, self._commands = self._commands, []
        for cmd, verified in commands:
            done = store.apply_command(cmd, verified=verified)
            if done is not None:
                log.warning("central command %s (%s): %s", cmd.command_id, cmd.kind, done)

    def _forged(self, why: str, size: int) -> None:
        """Refuse a receipt message that is not the central side's: count it, report it sparingly.

        The first one is an events row and an error line at once; a flood after it only counts,
        and the next report (at most one per FORGED_EVENT_EVERY_S) says how many were refused.
        """
        self.stats.forged_receipts += 1
        self._forged_unreported += 1
        now = time.monotonic()
        if now - self._event_times.get("forged_receipt", -FORGED_EVENT_EVERY_S) < FORGED_EVENT_EVERY_S:
            return
        self._event_times["forged_receipt"] = now
        n, self._forged_unreported = self._forged_unreported, 0
        message = (
            f"refused {n} receipt message(s) not signed by the central side ({why}; last one {size} bytes); "
            "nothing was confirmed by them. Someone may be forging receipts, or the ingester runs without "
            "--receipt-key or with a key that does not match sync.receipt_public_key"
        )
        log.error("%s", message)
        self._events.append(("forged_receipt", message, {"device": self.device, "reason": why, "count": n}))

    def _refused(self, kind: Kind, ident: str, up: Upload | None, rc: ReasonCode) -> None:
        """An error PUBACK (paho still calls it 'published'): the broker did not take the message."""
        self.stats.refused_publishes += 1
        self.stats.last_error = f"broker refused a publish ({kind} {ident[:16]}): {rc}"
        if kind == "status":
            log.error("the broker refuses this device's status topic: %s (check the ACL)", rc)
            return
        if kind == "rec" and rc.value == PACKET_TOO_LARGE:
            self._changes.record(ident, "rejected", "the broker refused the record as too large")
            self._event("rejected", f"the broker refused record {ident} as too large; it cannot be synced", ident)
            return
        if up is not None and self._uploads.get(ident) is up:
            self._end_upload(ident)
        # Not authorised, quota exceeded, ...: a configuration problem. Keep everything, pause.
        self._refusals += 1
        self._hold_until = time.monotonic() + backoff(self._refusals, cap=self.settings.reconnect_max_s)
        self._event("sync_refused", f"the broker refuses what this device publishes: {rc}", str(rc))
        log.error("%s; holding back and retrying (check the broker ACL for this device)", self.stats.last_error)

    def _event(self, kind: str, message: str, key: str) -> None:
        """Queue an events row, at most once per hour for the same kind and key."""
        now = time.monotonic()
        if now - self._event_times.get(f"{kind}:{key}", -DENIED_EVENT_EVERY_S) < DENIED_EVENT_EVERY_S:
            return
        self._event_times[f"{kind}:{key}"] = now
        self._events.append((kind, message, {"device": self.device, "key": key}))

    # ------------------------------------------------------------------ one round

    def _publish(
        self, topic: str, payload: bytes, what: tuple[Kind, str], *, upload: Upload | None = None, retain: bool = False
    ) -> bool:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.last_error = f"publish failed locally: {mqtt.error_string(info.rc)}"
            log.warning("%s; reconnecting", self.stats.last_error)
            self._alive = False
            return False
        if not self._inflight:
            self._progress = time.monotonic()
        self._inflight[info.mid] = (*what, upload)
        self._sent_at[info.mid] = time.monotonic()
        if what[0] == "rec":
            self._inflight_records.add(what[1])
        self.stats.bytes_sent += len(payload)
        return True

    def _window(self) -> int:
        return self._window_max - len(self._inflight)

    def _settle(self, store: Closable, *, force: bool = False) -> bool:
        """Apply receipts, and write what PUBACKs and receipts changed in one transaction.

        Writes are gathered for up to SETTLE_EVERY_S, so a record confirmed soon after its PUBACK
        costs one write, not two, and a busy device commits ten times a second, not per message.
        Losing unwritten changes in a crash is harmless: the items are asked about again.
        """
        busy = bool(self._receipts or self._commands)
        if self._receipts:
            self._apply_receipts()
        if self._commands:
            self._apply_commands(store)
        now = time.monotonic()
        changes = self._changes
        size = len(changes.records) + len(changes.blobs)
        if not (force or self._events or size >= SETTLE_MAX or (changes and now - self._settled >= SETTLE_EVERY_S)):
            return busy
        self._changes, self._settled = OutboxChanges(), now
        events, self._events = self._events, []
        if changes:
            store.apply(changes)
        for kind, message, detail in events:
            store.record_event(kind, message, detail)
        return busy or bool(changes or events)

    def _stuck(self) -> bool:
        """No PUBACK for a long time, or one message left unanswered while others are: reconnect.

        Over one TCP connection a broker answers every QoS 1 publish; a PUBACK that never comes
        while later ones do means the message was lost between us and the broker (a middlebox, a
        broker that dropped it), and only a new connection gets it sent again from the outbox.
        """
        limit = max(30.0, 3.0 * self.settings.keepalive_s)
        now = time.monotonic()
        oldest = next(iter(self._sent_at.values()), now)
        if self._inflight and (now - self._progress > limit or now - oldest > limit):
            self.stats.last_error = f"no PUBACK from the broker for {limit:g} s; reconnecting"
            log.warning("%s", self.stats.last_error)
            self._alive = False
            return True
        return False

    def _round(self, store: Closable) -> bool:
        """Settle, then publish what the window allows; True if anything happened."""
        if self._stuck():
            return False
        if self._resync:
            self._load_unconfirmed(store)  # before receipts are applied: they may answer these
        busy = self._settle(store)
        busy |= self._query()
        if time.monotonic() < self._hold_until:
            return busy
        if not busy and self._quiet(store):
            return False
        busy |= self._send_records(store)
        busy |= self._send_blobs(store)
        if busy or self._inflight or self._uploads:
            self.stats.idle = False
        else:
            self._settle(store, force=True)
            self._check_idle(store)
        return busy

    def _send_records(self, store: Closable) -> bool:
        """Publish records in outbox order (priority, then age) while the window allows.

        Records come from the outbox in pages of a few windows, so one query serves many rounds; a
        record committed meanwhile with a higher priority waits at most for one page to go out.
        """
        if self._window() <= 0 or not self._alive:
            return False
        if not self._queue:
            skip = self._inflight_records.union(self._changes.records)  # unwritten changes: the outbox lags
            self._queue.extend(store.records_to_send(max(4 * self._window_max, RECORD_PAGE), skip=skip))
        sent = False
        limit = min(
            MAX_RECORD_BYTES, self._limits.payload_limit(topics.record(self.device, "x" * 32)) or MAX_RECORD_BYTES
        )
        while self._queue and self._window() > 0 and self._alive:
            item = self._queue[0]
            payload = item.body_json.encode()
            if len(payload) > limit:
                self._queue.popleft()
                why = f"record of {len(payload)} bytes exceeds the {limit}-byte limit of the broker/ingester"
                self._changes.record(item.record_id, "rejected", why)
                self._event(
                    "rejected", f"record {item.record_id} ({item.kind}) cannot be synced: {why}", item.record_id
                )
                continue
            if not self._bucket.take(len(payload)):
                break
            if not self._publish(topics.record(self.device, item.kind), payload, ("rec", item.record_id)):
                break
            self._queue.popleft()
            self.stats.records_sent += 1
            sent = True
        return sent

    def _quiet(self, store: Closable) -> bool:
        """Idle at the last look, nothing held in memory, and nothing committed since: still idle.

        This publisher's own writes do not move ``data_version``, but each makes its round busy,
        which clears ``stats.idle`` until the next full look.
        """
        held = self._queue or self._inflight or self._uploads or self._awaiting or self._changes or self._events
        if not self.stats.idle or held or store.data_version() != self._idle_version:
            return False
        self._idle_checked = time.monotonic()
        return True

    def _check_idle(self, store: Closable) -> None:
        started = time.monotonic()
        self._idle_version = store.data_version()  # before the queries: a commit meanwhile is seen
        recs, blobs = store.unconfirmed(1)
        self.stats.idle = not (
            recs or blobs or self._awaiting or store.records_to_send(1, ()) or store.blobs_to_send(1, ())
        )
        self._idle_checked = started

    # ------------------------------------------------------------------ blobs

    def _chunk_size(self) -> int:
        worst = topics.blob_chunk(self.device, "0" * 64, 10**12)
        limit = self._limits.payload_limit(worst)
        return max(1, min(self.settings.chunk_size, limit)) if limit is not None else self.settings.chunk_size

    def _send_blobs(self, store: Closable) -> bool:
        busy = False
        free = self.settings.parallel_blobs - len(self._uploads)
        if free > 0 and self._window() > 0:
            for ref in store.blobs_to_send(free, skip=self._uploads.keys() | self._changes.blobs.keys()):
                busy |= self._start_upload(ref)
        for up in list(self._uploads.values()):
            if not self._alive or self._window() <= 0:
                break
            busy |= self._pump_upload(up)
        return busy

    def _start_upload(self, ref: BlobRef) -> bool:
        try:
            up = Upload.open(ref, self._chunk_size())
        except LocalMediaError as exc:
            local_loss(self._changes, self._events, ref, str(exc))
            return True
        self._uploads[ref.sha256] = up
        self._awaiting.refs[ref.sha256] = ref
        return True

    def _pump_upload(self, up: Upload) -> bool:
        sha = up.ref.sha256
        if up.init_due(self.settings.receipt_timeout_s):
            init = BlobInit(sha256=sha, size=up.ref.size, chunk_size=up.chunk, media_type=up.ref.media_type)
            if self._publish(topics.blob_init(self.device, sha), encode(init), ("init", sha), upload=up):
                up.init_sent = time.monotonic()
            return True
        sent = False
        while up.phase == "sending" and self._window() > 0 and self._alive:
            if not self._bucket.take(up.peek_size()):
                break
            try:
                chunk = up.next_chunk()
            except LocalMediaError as exc:
                self._end_upload(sha)
                local_loss(self._changes, self._events, up.ref, str(exc))
                return True
            if chunk is None:
                break
            offset, data = chunk
            if not self._publish(topics.blob_chunk(self.device, sha, offset), data, ("chunk", sha), upload=up):
                return True
            up.in_flight += 1
            self.stats.chunks_sent += 1
            sent = True
        if up.phase == "sending" and not up.ranges:
            up.phase = "draining"
        if up.phase == "draining" and up.in_flight == 0 and self._window() > 0:
            fin = BlobFin(sha256=sha, size=up.ref.size)
            if self._publish(topics.blob_fin(self.device, sha), encode(fin), ("fin", sha), upload=up):
                up.fin_sent()
            sent = True
        return sent

    def _end_upload(self, sha: str) -> None:
        up = self._uploads.pop(sha, None)
        if up is not None:
            up.close()

    # ------------------------------------------------------------------ receipts and queries

    def _apply_receipts(self) -> None:
        receipts, self._receipts = self._receipts, []
        self.stats.receipts += len(receipts)
        self.stats.last_receipt_mono = time.monotonic()
        done = self._book.apply(receipts, self._changes, self._events)
        self.stats.records_confirmed += done.records_confirmed
        self.stats.blobs_confirmed += done.blobs_confirmed

    def _load_unconfirmed(self, store: Closable) -> None:
        """After a (re)connect, ask about everything sent earlier that has no receipt yet."""
        self._resync = False
        recs, blobs = store.unconfirmed(RESYNC_LIMIT)
        self._awaiting.load(recs, blobs, time.monotonic())

    def _query(self) -> bool:
        now = time.monotonic()
        if now < self._next_query or not self._alive:
            return False
        self._next_query = now + min(1.0, self.settings.receipt_timeout_s / 4)
        again = now + self.settings.receipt_timeout_s
        sent = False
        for _ in range(QUERY_PAGES_PER_ROUND):
            if self._window() <= 0:
                break
            rec_ids, blob_ids = self._awaiting.due(now, MAX_QUERY_ITEMS)
            if not rec_ids and not blob_ids:
                break
            if not self._publish(
                topics.query(self.device), encode(SyncQuery(record_ids=rec_ids, blobs=blob_ids)), ("query", "")
            ):
                break
            self._awaiting.asked(rec_ids, blob_ids, again)
            self.stats.queries += 1
            sent = True
        return sent
