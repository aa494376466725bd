"""What the central side does with one message from a device: validate, store, answer.

Every message is untrusted. It is checked (topic, schema, sizes, the device in the body equals the
device in the topic, names derived only from validated digests), stored idempotently, and answered
with a receipt; whatever is refused becomes a dead-letter row with the reason. Handlers run inside
the caller's store transaction (``central.ingester`` runs a batch of messages per transaction) and
keep no state of their own: everything they know is in the store and the blob tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from central.blobs import BlobBackend, BlobMismatch
from central.commands import record_ack
from central.limits import Buckets, IntakeLimits
from central.staging import Staging, StagingLost
from central.store import CentralStore
from sync import topics
from sync.records import validate_body
from sync.wire import (
    MAX_MISSING_RANGES,
    MAX_RECORD_BYTES,
    BlobFin,
    BlobInit,
    Receipt,
    RecordEnvelope,
    ReplyTo,
    SyncQuery,
    WireError,
    parse,
)

log = logging.getLogger("fieldcap.ingest")

DEFAULT_MAX_CHUNK = 16 * 1024 * 1024
MAX_COUNTED_DEVICES = 10_000  # per-device drop counters kept; more devices share one "*" counter

Ranges = tuple[tuple[int, int], ...]


class Refused(WireError):
    """A valid message over one of the device's limits: dead-lettered and answered with ``rejected``."""


@dataclass
class IntakeStats:
    messages: int = 0
    records_stored: int = 0
    duplicates: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    blobs_stored: int = 0
    rejected: int = 0
    #: Records refused because their body does not match its kind's schema.
    records_invalid: int = 0
    #: Uploads refused by a size limit or a device quota.
    quota_refusals: int = 0
    #: Query items not answered because the device asked too much too fast.
    query_items_limited: int = 0
    #: Dead letters not kept (over the device's rate), in all and per device.
    dead_letters_dropped: int = 0
    dead_letters_dropped_by_device: dict[str, int] = field(default_factory=dict)
    #: Messages dropped unread because they exceed the largest message the protocol allows.
    oversize_dropped: int = 0
    #: Abandoned uploads, orphan staging files and old dead letters removed by the sweep.
    uploads_expired: int = 0
    staging_files_removed: int = 0
    dead_letters_expired: int = 0
    #: Records stored per kind (kinds are validated first, so the set is the schema's).
    records_by_kind: dict[str, int] = field(default_factory=dict)
    #: Bytes of blobs verified and stored.
    blob_bytes_stored: int = 0
    #: Refusals by reason (the reason's leading words; at most MAX_REASONS kinds, then "other").
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


MAX_REASONS = 40  # distinct refusal reasons counted apart (a metric label: bounded)


def reason_category(reason: str) -> str:
    """The refusal's kind for counting: its words before the first detail (digits, quotes, ':')."""
    words = []
    for word in reason.split()[:6]:
        if any(c.isdigit() for c in word) or word[0] in "'\"([{<" or not word.isascii():
            break
        words.append(word.rstrip(":,;.").lower())
        if word.endswith((":", ",", ";")):
            break
    return " ".join(w for w in words if w)[:60] or "other"


class Intake:
    """Message handlers; receipts go to ``emit(device, receipt)``."""

    def __init__(
        self,
        store: CentralStore,
        blobs: BlobBackend,
        emit: Callable[[str, Receipt], None],
        *,
        staging_dir: Path | None = None,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        limits: IntakeLimits | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        staging_dir = staging_dir or blobs.default_staging()
        if staging_dir is None:
            raise ValueError(f"blobs in {blobs.describe()} need a local staging directory (--staging DIR)")
        self.staging = Staging(blobs, staging_dir)
        self.emit = emit
        self.max_chunk = max_chunk
        self.limits = limits or IntakeLimits()
        self.stats = IntakeStats()
        self._queries = Buckets(self.limits.query_items_burst, self.limits.query_items_per_s)
        self._dead = Buckets(self.limits.dead_letter_burst, self.limits.dead_letters_per_s)
        #: Dead letters dropped per device since the last summary (see ``summarize_drops``).
        self._unsummarized: dict[str, int] = {}
        # Per transaction: what we know of uploads being staged (size, chunk rows), and chunk ranges
        # not yet written as rows (contiguous chunks become one row). See begin() / flush().
        self._staged: dict[tuple[str, str], list[int] | None] = {}
        self._ranges: dict[tuple[str, str], list[list[int]]] = {}

    def begin(self) -> None:
        """A new transaction starts: forget what the last one cached."""
        self._staged.clear()
        self._ranges.clear()

    def flush(self, key: tuple[str, str] | None = None) -> None:
        """Write the chunk ranges gathered so far (of one upload, or all) as rows."""
        for k in [key] if key is not None else list(self._ranges):
            for start, end in self._ranges.pop(k, ()):
                self.store.add_chunk(k[0], k[1], start, end - start)

    def _forget(self, key: tuple[str, str]) -> None:
        self.flush(key)
        self._staged.pop(key, None)

    def handle(self, topic: str, payload: bytes) -> None:
        """Handle one message; protocol violations are dead-lettered, store errors propagate."""
        self.stats.messages += 1
        try:
            up = topics.parse_up(topic)
        except topics.TopicError as exc:
            self.dead(topic, None, str(exc), payload)
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
            self.dead(topic, up.device, str(exc), payload)
            if up.kind == "rec":
                rid = _peek_record_id(payload)
                if rid:
                    self.emit(
                        up.device,
                        Receipt(type="record", id=rid, status="rejected", reason=str(exc)[:500], reply_to="rec"),
                    )
            elif isinstance(exc, Refused) and up.sha256 is not None and up.kind != "blob_chunk":
                reply: ReplyTo = "init" if up.kind == "blob_init" else "fin"
                self.emit(
                    up.device,
                    Receipt(type="blob", id=up.sha256, status="rejected", reason=str(exc)[:500], reply_to=reply),
                )

    def dead(self, topic: str, device: str | None, reason: str, payload: bytes) -> None:
        """Dead-letter a refused message, within the device's dead-letter rate (the rest are counted)."""
        self.stats.rejected += 1
        by_reason = self.stats.rejected_by_reason
        category = reason_category(reason)
        if category not in by_reason and len(by_reason) >= MAX_REASONS:
            category = "other"
        by_reason[category] = by_reason.get(category, 0) + 1
        key = device or "-"
        if not self._dead.take(key):
            self.stats.dead_letters_dropped += 1
            counts = self.stats.dead_letters_dropped_by_device
            if key not in counts and len(counts) >= MAX_COUNTED_DEVICES:
                key = "*"
            counts[key] = counts.get(key, 0) + 1
            self._unsummarized[key] = self._unsummarized.get(key, 0) + 1
            return
        log.warning("dead-lettered %r: %s", topic[:200], reason[:300])
        self.store.dead_letter(topic, device, reason, payload, keep=self.limits.dead_letter_keep_bytes)

    # ------------------------------------------------------------------ housekeeping

    def summarize_drops(self) -> None:
        """One dead letter and one log line per device whose dead letters were dropped since the last call."""
        pending, self._unsummarized = self._unsummarized, {}
        for device, n in sorted(pending.items()):
            reason = (
                f"{n} rejected message(s) from {device} were counted but not kept: over the device's dead-letter rate"
                f" ({self.limits.dead_letters_per_s:g}/s, burst {self.limits.dead_letter_burst})"
            )
            log.warning("%s", reason)
            self.store.dead_letter("(summary)", None if device in ("-", "*") else device, reason, b"", keep=0)

    def sweep(self) -> None:
        """Remove abandoned uploads, orphan staging files and old dead letters (in the open transaction)."""
        lim = self.limits
        now = datetime.now(UTC)
        before = (now - timedelta(seconds=lim.upload_max_age_s)).isoformat(timespec="microseconds")
        for device, sha in self.store.stale_staging(before):
            log.warning("upload of blob %s by %s abandoned for %gs: removed", sha, device, lim.upload_max_age_s)
            self.staging.drop(device, sha)
            self.store.drop_staging(device, sha)
            self.stats.uploads_expired += 1
        self.stats.staging_files_removed += self._remove_orphans(now.timestamp() - lim.upload_max_age_s)
        cutoff = (now - timedelta(seconds=lim.dead_letter_max_age_s)).isoformat(timespec="microseconds")
        self.stats.dead_letters_expired += self.store.expire_dead_letters(cutoff, lim.dead_letters_per_device)
        self.summarize_drops()

    def _remove_orphans(self, older_than: float) -> int:
        """Staging files with no upload row (a rolled-back batch, an expired upload, an old layout)."""
        known = self.store.staging_keys()
        removed = 0
        root = self.staging.staging_dir
        for entry in root.iterdir():
            if entry.is_dir() and topics.DEVICE_RE.fullmatch(entry.name):
                files = [(entry.name, f) for f in entry.iterdir()]
            else:
                files = [("", entry)]
            for device, f in files:
                if (device, f.name) in known:
                    continue
                try:
                    if f.is_file() and f.stat().st_mtime < older_than:
                        f.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    # ------------------------------------------------------------------ records

    def _record(self, up: topics.UpTopic, payload: bytes) -> None:
        env = parse(RecordEnvelope, payload)
        if env.device != up.device:
            raise WireError(f"record names device {env.device!r} but was published by {up.device!r}")
        if env.kind != up.record_kind:
            raise WireError(f"record kind {env.kind!r} does not match topic kind {up.record_kind!r}")
        try:
            validate_body(env.kind, env.schema_version, env.body)
        except WireError:
            self.stats.records_invalid += 1
            raise
        if env.blob is not None and env.body.get("sha256") not in (None, env.blob.sha256):
            self.stats.records_invalid += 1
            raise WireError("body.sha256 differs from the envelope's blob.sha256")
        body = payload.decode()
        status = self.store.put_record(
            up.device,
            env.record_id,
            env.kind,
            env.created_utc,
            env.blob.sha256 if env.blob else None,
            env.blob.size if env.blob else None,
            body,
        )
        if status == "stored":
            self.stats.records_stored += 1
            self.stats.records_by_kind[env.kind] = self.stats.records_by_kind.get(env.kind, 0) + 1
            if env.kind == "command_ack" and not record_ack(self.store, up.device, env.body):
                log.warning("%s acknowledged command %s, which is not open for it", up.device, env.body["command_id"])
        else:
            self.stats.duplicates += 1
            if self.store.record_body(up.device, env.record_id) != body:
                # Honest re-sends are byte-identical (the envelope is built once, at commit).
                self.dead(
                    topics.record(up.device, env.kind),
                    up.device,
                    f"record {env.record_id} was already stored with a different body; the stored one is kept",
                    payload,
                )
        self.emit(up.device, Receipt(type="record", id=env.record_id, status=status, reply_to="rec"))

    # ------------------------------------------------------------------ blobs
    # Every upload is the device's own: (device, sha256) names its staging row and file, and a
    # blob counts as the device's only once it uploaded and we verified it. Storage underneath
    # stays content-addressed, so a second device's upload of the same bytes is verified and then
    # shares the one file; it is never told "duplicate" for bytes it did not send.

    def _blob_init(self, up: topics.UpTopic, payload: bytes) -> None:
        init = parse(BlobInit, payload)
        sha, dev = init.sha256, up.device
        if sha != up.sha256:
            raise WireError("init sha256 does not match the topic")
        key = (dev, sha)
        size = self.store.owned_size(dev, sha)
        if size is not None:
            if size != init.size:
                raise WireError(f"blob {sha} is stored with {size} bytes, not {init.size}")
            self.staging.drop(dev, sha)  # a leftover from a race between two ingesters, if any
            self.emit(dev, Receipt(type="blob", id=sha, status="duplicate", size=size, sha256=sha, reply_to="init"))
            return
        lim = self.limits
        if init.size > lim.max_blob_bytes:
            self._refuse(f"blob {sha} of {init.size} bytes exceeds the {lim.max_blob_bytes}-byte limit")
        self._forget(key)
        info = self.store.staging_info(dev, sha)
        if info is not None and info[0] != init.size:
            # The device announced other bytes under this sha256 earlier; only its bytes can tell
            # which announcement is right, so start over with the newer one (fin verifies either way).
            log.warning("blob %s re-announced by %s with %d bytes (staged: %d); restarts", sha, dev, init.size, info[0])
            self.staging.drop(dev, sha)
            self.store.drop_staging(dev, sha)
            info = None
        if info is None:
            uploads, announced = self.store.device_staging(dev)
            if uploads >= lim.device_open_uploads:
                self._refuse(
                    f"{dev} has {uploads} uploads open, its limit; finish or let them expire"
                    f" ({lim.upload_max_age_s:g} s) before starting more"
                )
            if announced + init.size > lim.device_staged_bytes:
                self._refuse(
                    f"{dev}'s open uploads announce {announced} bytes; {init.size} more exceed its"
                    f" {lim.device_staged_bytes}-byte staging quota"
                )
        self.store.start_staging(dev, sha, init.size, init.media_type)
        if self.staging.create(dev, sha):
            self.store.forget_chunks(dev, sha)  # a new file holds nothing, whatever rows say
        state = self.store.blob_state(dev, sha)
        self._blob_receipt(dev, sha, init.size, state.missing, "init")

    def _refuse(self, reason: str) -> None:
        self.stats.quota_refusals += 1
        log.warning("refused: %s", reason)
        raise Refused(reason)

    def _blob_receipt(self, device: str, sha: str, size: int, missing: Ranges, to: ReplyTo) -> None:
        status = "missing" if missing == ((0, size),) else "partial"
        self.emit(
            device,
            Receipt(
                type="blob",
                id=sha,
                status=status,
                size=size,
                missing=list(missing[:MAX_MISSING_RANGES]),
                reply_to=to,
            ),
        )

    def _chunk(self, up: topics.UpTopic, payload: bytes) -> None:
        assert up.sha256 is not None and up.offset is not None
        dev, sha = up.device, up.sha256
        key = (dev, sha)
        if len(payload) > self.max_chunk:
            raise WireError(f"chunk of {len(payload)} bytes exceeds the {self.max_chunk}-byte limit")
        if not payload:
            raise WireError("empty chunk")
        if key in self._staged:
            known = self._staged[key]
        else:
            info = self.store.staging_info(dev, sha)
            if info is None:
                if self.store.owned_size(dev, sha) is not None:
                    self._staged[key] = None
                    return  # already complete: a late duplicate
                raise WireError("chunk for a blob that was never announced with init")
            known = self._staged[key] = [info[0], self.store.chunk_rows(dev, sha)]
        if known is None:
            return
        size, rows = known
        end = up.offset + len(payload)
        if end > size:
            raise WireError(f"chunk [{up.offset}, {end}) lies outside the blob's {size} bytes")
        ranges = self._ranges.setdefault(key, [])
        contiguous = bool(ranges) and ranges[-1][1] == up.offset
        if not contiguous and rows + len(ranges) >= self.limits.max_chunk_rows:
            raise WireError(
                f"upload of {sha} already has {self.limits.max_chunk_rows} separate pieces; send contiguous chunks"
            )
        if not self.staging.write(dev, sha, up.offset, payload):
            return  # the staging file was just finished or dropped; fin sorts out what is still needed
        if contiguous:
            ranges[-1][1] = end
        else:
            ranges.append([up.offset, end])
        self.stats.chunks += 1
        self.stats.chunk_bytes += len(payload)

    def _blob_fin(self, up: topics.UpTopic, payload: bytes) -> None:
        fin = parse(BlobFin, payload)
        sha, dev = fin.sha256, up.device
        if sha != up.sha256:
            raise WireError("fin sha256 does not match the topic")
        key = (dev, sha)
        self._forget(key)
        size = self.store.owned_size(dev, sha)
        if size is not None:
            if size != fin.size:
                raise WireError(f"blob {sha} is stored with {size} bytes, not {fin.size}")
            self.staging.drop(dev, sha)
            self.emit(dev, Receipt(type="blob", id=sha, status="duplicate", size=size, sha256=sha, reply_to="fin"))
            return
        info = self.store.staging_info(dev, sha)
        if info is None:
            self.emit(dev, Receipt(type="blob", id=sha, status="missing", reply_to="fin"))
            return
        staged_size, media_type = info
        if staged_size != fin.size:
            raise WireError(f"fin size {fin.size} differs from init size {staged_size}")
        state = self.store.blob_state(dev, sha)
        if state.missing:
            self._blob_receipt(dev, sha, fin.size, state.missing, "fin")
            return
        try:
            # A final file committed from another device proves nothing about this device's upload.
            self.staging.finish(dev, sha, fin.size, relink_ok=self.store.blob_size(sha) is None)
        except BlobMismatch as exc:
            self.staging.drop(dev, sha)
            self.store.drop_staging(dev, sha)
            reason = f"blob {sha}: {exc}"
            self.dead(topics.blob_fin(dev, sha), dev, reason, payload)
            self.emit(dev, Receipt(type="blob", id=sha, status="rejected", reason=reason[:500], reply_to="fin"))
            return
        except StagingLost:
            self.store.drop_staging(dev, sha)
            self.emit(dev, Receipt(type="blob", id=sha, status="missing", reply_to="fin"))
            return
        status = self.store.finish_blob(dev, sha, fin.size, media_type)
        self.stats.blobs_stored += status == "stored"
        self.stats.blob_bytes_stored += fin.size if status == "stored" else 0
        self.emit(dev, Receipt(type="blob", id=sha, status=status, size=fin.size, sha256=sha, reply_to="fin"))

    # ------------------------------------------------------------------ queries

    def _query(self, up: topics.UpTopic, payload: bytes) -> None:
        q = parse(SyncQuery, payload)
        dev = up.device
        record_ids = list(dict.fromkeys(q.record_ids))  # a device asking twice gets one answer
        shas = list(dict.fromkeys(q.blobs))
        items = len(record_ids) + len(shas)
        if items and not self._queries.take(dev, items):
            self.stats.query_items_limited += items
            raise WireError(
                f"query of {items} items over {dev}'s query rate ({self.limits.query_items_per_s:g} items/s,"
                f" burst {self.limits.query_items_burst}); ask again later"
            )
        known = self.store.known_records(dev, record_ids)
        for rid in record_ids:
            self.emit(
                dev, Receipt(type="record", id=rid, status="stored" if rid in known else "missing", reply_to="query")
            )
        self.flush()
        for sha, state in self.store.blob_states(dev, shas).items():
            if state.status == "stored":
                self.emit(
                    dev, Receipt(type="blob", id=sha, status="stored", size=state.size, sha256=sha, reply_to="query")
                )
            elif state.status == "partial" and state.size is not None:
                self._blob_receipt(dev, sha, state.size, state.missing, "query")
            else:
                self.emit(dev, Receipt(type="blob", id=sha, status="missing", reply_to="query"))


def _peek_record_id(payload: bytes) -> str | None:
    """The record id of a record we reject, so the device learns why (if it is well-formed)."""
    import json

    if len(payload) > MAX_RECORD_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    rid = data.get("record_id") if isinstance(data, dict) else None
    if isinstance(rid, str) and 8 <= len(rid) <= 64 and all(c in "0123456789abcdef-" for c in rid):
        return rid
    return None
