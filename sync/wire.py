"""Message bodies of the wire protocol (schema version 1), validated on both ends.

Records are JSON envelopes; blob chunks are raw bytes addressed by topic offset (never base64).
The ingester treats every incoming message as untrusted: these models forbid unknown keys and
bound every size, so a hostile message is rejected with a reason instead of doing harm.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 1 << 20
MAX_BLOB_BYTES = 1 << 36  # 64 GiB
MAX_QUERY_ITEMS = 1000

RecordId = Annotated[str, Field(pattern=r"^[0-9a-f][0-9a-f-]{7,63}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
MediaType = Annotated[str, Field(pattern=r"^[a-z]+/[a-z0-9.+-]{1,64}$")]


M = TypeVar("M", bound=BaseModel)


class WireError(ValueError):
    """A message that does not follow the protocol; the text is the dead-letter reason."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BlobInfo(_Msg):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)
    media_type: MediaType


class RecordEnvelope(_Msg):
    schema_version: Literal[1]
    record_id: RecordId
    device: str = Field(min_length=1, max_length=64)
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    created_utc: str = Field(max_length=40)
    body: dict[str, Any]
    blob: BlobInfo | None = None


class BlobInit(_Msg):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)
    chunk_size: int = Field(ge=1, le=1 << 26)
    media_type: MediaType
    record_id: RecordId | None = None


class BlobFin(_Msg):
    sha256: Sha256
    size: int = Field(ge=0, le=MAX_BLOB_BYTES)


class SyncQuery(_Msg):
    record_ids: list[RecordId] = Field(default_factory=list, max_length=MAX_QUERY_ITEMS)
    blobs: list[Sha256] = Field(default_factory=list, max_length=MAX_QUERY_ITEMS)


ReceiptStatus = Literal["stored", "duplicate", "rejected", "partial", "missing"]


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
    reply_to: Literal["rec", "init", "fin", "query"] | None = None


class ReceiptBatch(_Msg):
    receipts: list[Receipt]


def _reason(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {err['msg']}"


def decode_json(payload: bytes, limit: int = MAX_RECORD_BYTES) -> Any:
    if len(payload) > limit:
        raise WireError(f"payload of {len(payload)} bytes exceeds the {limit}-byte limit")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()
