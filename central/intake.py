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
from dataclasses import dataclass

from central.blobs import BlobMismatch, BlobTree
from central.staging import Staging, StagingLost
from central.store import CentralStore
from sync import topics
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

Ranges = tuple[tuple[int, int], ...]


@dataclass
class IntakeStats:
    messages: int = 0
    records_stored: int = 0
    duplicates: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    blobs_stored: int = 0
    rejected: int = 0


class Intake:
    """Message handlers; receipts go to ``emit(device, receipt)``."""

    def __init__(
        self,
        store: CentralStore,
        blobs: BlobTree,
        emit: Callable[[str, Receipt], None],
        *,
        max_chunk: int = DEFAULT_MAX_CHUNK,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.staging = Staging(blobs)
        self.emit = emit
        self.max_chunk = max_chunk
        self.stats = IntakeStats()
        # Per transaction: what we know of blobs being staged, and chunk ranges not yet written as
        # rows (contiguous chunks become one row). See begin() / flush().
        self._staged: dict[str, int | None] = {}
        self._ranges: dict[str, list[list[int]]] = {}

    def begin(self) -> None:
        """A new transaction starts: forget what the last one cached."""
        self._staged.clear()
        self._ranges.clear()

    def flush(self, sha256: str | None = None) -> None:
        """Write the chunk ranges gathered so far (of one blob, or all) as rows."""
        for sha in [sha256] if sha256 is not None else list(self._ranges):
            for start, end in self._ranges.pop(sha, ()):
                self.store.add_chunk(sha, start, end - start)

    def _forget(self, sha256: str) -> None:
        self.flush(sha256)
        self._staged.pop(sha256, None)

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

    def dead(self, topic: str, device: str | None, reason: str, payload: bytes) -> None:
        self.stats.rejected += 1
        log.warning("dead-lettered %s: %s", topic[:200], reason[:300])
        self.store.dead_letter(topic, device, reason, payload)

    # ------------------------------------------------------------------ records

    def _record(self, up: topics.UpTopic, payload: bytes) -> None:
        env = parse(RecordEnvelope, payload)
        if env.device != up.device:
            raise WireError(f"record names device {env.device!r} but was published by {up.device!r}")
        if env.kind != up.record_kind:
            raise WireError(f"record kind {env.kind!r} does not match topic kind {up.record_kind!r}")
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

    def _blob_init(self, up: topics.UpTopic, payload: bytes) -> None:
        init = parse(BlobInit, payload)
        sha = init.sha256
        if sha != up.sha256:
            raise WireError("init sha256 does not match the topic")
        size = self.store.blob_size(sha)
        if size is not None:
            if size != init.size:
                raise WireError(f"blob {sha} is stored with {size} bytes, not {init.size}")
            self.staging.drop(sha)  # a leftover from a race between two ingesters, if any
            self.emit(
                up.device, Receipt(type="blob", id=sha, status="duplicate", size=size, sha256=sha, reply_to="init")
            )
            return
        self._forget(sha)
        info = self.store.staging_info(sha)
        if info is not None and info[0] != init.size:
            # Content of one sha256 has one size, so one of the two announcements is wrong; only
            # the bytes can tell which. Start over with the newer one rather than let a bad
            # announcement block every later upload of this blob (fin verifies either way).
            log.warning(
                "blob %s re-announced by %s with %d bytes (staged: %d); staging restarts",
                sha,
                up.device,
                init.size,
                info[0],
            )
            self.staging.drop(sha)
            self.store.drop_staging(sha)
        self.store.start_staging(sha, init.size, init.media_type, up.device)
        if self.staging.create(sha, init.size):
            self.store.forget_chunks(sha)  # a new file holds nothing, whatever rows say
        state = self.store.blob_state(sha)
        self._blob_receipt(up.device, sha, init.size, state.missing, "init")

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
        sha = up.sha256
        if len(payload) > self.max_chunk:
            raise WireError(f"chunk of {len(payload)} bytes exceeds the {self.max_chunk}-byte limit")
        if not payload:
            raise WireError("empty chunk")
        if sha in self._staged:
            size = self._staged[sha]
        else:
            stored = self.store.blob_size(sha) is not None
            info = None if stored else self.store.staging_info(sha)
            if not stored and info is None:
                raise WireError("chunk for a blob that was never announced with init")
            size = self._staged[sha] = None if info is None else info[0]
        if size is None:
            return  # already complete: a late duplicate
        end = up.offset + len(payload)
        if end > size:
            raise WireError(f"chunk [{up.offset}, {end}) lies outside the blob's {size} bytes")
        if not self.staging.write(sha, up.offset, payload):
            return  # the staging file was just finished or dropped; fin sorts out what is still needed
        ranges = self._ranges.setdefault(sha, [])
        if ranges and ranges[-1][1] == up.offset:
            ranges[-1][1] = end
        else:
            ranges.append([up.offset, end])
        self.stats.chunks += 1
        self.stats.chunk_bytes += len(payload)

    def _blob_fin(self, up: topics.UpTopic, payload: bytes) -> None:
        fin = parse(BlobFin, payload)
        sha = fin.sha256
        if sha != up.sha256:
            raise WireError("fin sha256 does not match the topic")
        self._forget(sha)
        size = self.store.blob_size(sha)
        if size is not None:
            if size != fin.size:
                raise WireError(f"blob {sha} is stored with {size} bytes, not {fin.size}")
            self.staging.drop(sha)
            self.emit(
                up.device, Receipt(type="blob", id=sha, status="duplicate", size=size, sha256=sha, reply_to="fin")
            )
            return
        info = self.store.staging_info(sha)
        if info is None:
            self.emit(up.device, Receipt(type="blob", id=sha, status="missing", reply_to="fin"))
            return
        staged_size, media_type, _dev = info
        if staged_size != fin.size:
            raise WireError(f"fin size {fin.size} differs from init size {staged_size}")
        state = self.store.blob_state(sha)
        if state.missing:
            self._blob_receipt(up.device, sha, fin.size, state.missing, "fin")
            return
        try:
            self.staging.finish(sha, fin.size)
        except BlobMismatch as exc:
            self.staging.drop(sha)
            self.store.drop_staging(sha)
            reason = f"blob {sha}: {exc}"
            self.dead(topics.blob_fin(up.device, sha), up.device, reason, payload)
            self.emit(up.device, Receipt(type="blob", id=sha, status="rejected", reason=reason[:500], reply_to="fin"))
            return
        except StagingLost:
            self.store.drop_staging(sha)
            self.emit(up.device, Receipt(type="blob", id=sha, status="missing", reply_to="fin"))
            return
        status = self.store.finish_blob(sha, fin.size, media_type, up.device)
        self.stats.blobs_stored += status == "stored"
        self.emit(up.device, Receipt(type="blob", id=sha, status=status, size=fin.size, sha256=sha, reply_to="fin"))

    # ------------------------------------------------------------------ queries

    def _query(self, up: topics.UpTopic, payload: bytes) -> None:
        q = parse(SyncQuery, payload)
        known = self.store.known_records(up.device, q.record_ids)
        for rid in q.record_ids:
            self.emit(
                up.device,
                Receipt(type="record", id=rid, status="stored" if rid in known else "missing", reply_to="query"),
            )
        self.flush()
        for sha in q.blobs:
            state = self.store.blob_state(sha)
            if state.status == "stored":
                self.emit(
                    up.device,
                    Receipt(type="blob", id=sha, status="stored", size=state.size, sha256=sha, reply_to="query"),
                )
            elif state.status == "partial" and state.size is not None:
                self._blob_receipt(up.device, sha, state.size, state.missing, "query")
            else:
                self.emit(up.device, Receipt(type="blob", id=sha, status="missing", reply_to="query"))


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
