"""Message bodies of the wire protocol (schema version 1), validated on both ends.

Records are JSON envelopes; blob chunks are raw bytes addressed by topic offset (never base64).
The ingester treats every incoming message as untrusted: these models forbid unknown keys and
bound every size, so a hostile message is rejected with a reason instead of doing harm.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 1 << 20
MAX_BLOB_BYTES = 1 << 36  # 64 GiB
MAX_QUERY_ITEMS = 1000
MAX_MISSING_RANGES = 256  # a partial receipt lists at most this many gaps; the device asks again later

RecordId = Annotated[str, Field(pattern=r"^[0-9a-f][0-9a-f-]{7,63}$")]
# [0-9], not \d: the pattern engine's \d also matches non-ASCII digits.
UTC_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
UtcTime = Annotated[str, Field(max_length=40, pattern=UTC_PATTERN)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
MediaType = Annotated[str, Field(pattern=r"^[a-z]+/[a-z0-9.+-]{1,64}$")]


def utc_now() -> str:
    """Wall-clock time for catalog and store rows, as ISO 8601 UTC with microseconds (a ``UtcTime``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


M = TypeVar("M", bound=BaseModel)


class WireError(ValueError):
    """A message that does not follow the protocol; the text is the dead-letter reason."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Up(_Msg):
    """A device → central message: strict types, so ``"size": "0"`` or ``true`` is an error, not a 0."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BlobInfo(_Up):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)
    media_type: MediaType


class RecordEnvelope(_Up):
    schema_version: Literal[1]
    record_id: RecordId
    device: str = Field(min_length=1, max_length=64)
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    created_utc: UtcTime
    body: dict[str, Any]
    blob: BlobInfo | None = None


class BlobInit(_Up):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)
    chunk_size: int = Field(ge=1, le=1 << 26)
    media_type: MediaType
    record_id: RecordId | None = None


class BlobFin(_Up):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)


class SyncQuery(_Up):
    record_ids: list[RecordId] = Field(default_factory=list, max_length=MAX_QUERY_ITEMS)
    blobs: list[Sha256] = Field(default_factory=list, max_length=MAX_QUERY_ITEMS)


ReceiptStatus = Literal["stored", "duplicate", "rejected", "partial", "missing"]
ReplyTo = Literal["rec", "init", "fin", "query"]


class Receipt(_Msg):
    """The central side's word on one record or blob.

    ``missing`` means the central side has nothing (the device must send it again);
    ``partial`` lists the byte ranges ``[start, end)`` still needed.
    """

    type: Literal["record", "blob"]
    id: str = Field(max_length=64)
    status: ReceiptStatus
    reason: str | None = Field(default=None, max_length=500)
    size: int | None = None
    sha256: Sha256 | None = None
    missing: list[tuple[int, int]] | None = None
    reply_to: ReplyTo | None = None


class ReceiptBatch(_Msg):
    receipts: list[Receipt]


def _reason(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {err['msg']}"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def decode_json(payload: bytes, limit: int = MAX_RECORD_BYTES) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, bounded size and nesting."""
    if len(payload) > limit:
        raise WireError(f"payload of {len(payload)} bytes exceeds the {limit}-byte limit")
    try:
        return _DECODER.decode(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WireError(f"payload is not JSON (not UTF-8: {exc})") from None
    except RecursionError:
        raise WireError("payload is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, and so is a NaN
        raise WireError(f"payload is not JSON: {exc}") from None


def parse(model: type[M], payload: bytes) -> M:
    """Decode and validate a JSON message, raising WireError with a readable reason."""
    data = decode_json(payload)
    if not isinstance(data, dict):
        raise WireError("payload is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise WireError(_reason(exc)) from None
    except RecursionError:
        raise WireError("payload is nested too deeply") from None


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()
