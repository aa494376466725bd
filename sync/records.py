"""Record bodies, one schema per record kind and envelope version, shared by the device and the central side.

The envelope (``sync.wire.RecordEnvelope``) says who sent what; these models say what a body of each
kind holds. The ingester validates every body against them before storing it, so nothing that
``fieldcap report`` or an export reads later can have a string where a number belongs (a take number
``"one"``, an annotation starting at ``"x"`` seconds). Types are strict (``"1"`` is not an int, ``true``
is not a number), unknown keys are refused, and the free-form parts the device fills from its settings
or analyzers (``meta``, ``metrics``, ``detail``, ...) must at least be JSON objects. A new field or kind
needs a schema here first: the device's own records are tested against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from sync.wire import RecordId, Sha256, UtcTime, WireError

Id = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(max_length=256)]
TEXT_MAX = 16384  # free text (event messages, reasons): the device shortens longer text before it queues it
Text = Annotated[str, Field(max_length=TEXT_MAX)]
Verdict = Literal["pass", "fail", "review"]
Obj = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _reading(row: list[Any]) -> list[Any]:
    """A sensor reading as the catalog sends it: [seq, t_mono_ns, t_utc_ns, name, value]."""
    ints = row[:3]
    ok = (
        len(row) == 5
        and all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
        and isinstance(row[3], str)
        and (row[4] is None or (isinstance(row[4], int | float) and not isinstance(row[4], bool)))
    )
    if not ok:
        raise ValueError("a reading is [seq, t_mono_ns, t_utc_ns, name, value]")
    return row


class CaptureV1(_Body):
    record_id: RecordId
    stream: Name
    stream_id: Id | None = None
    session_id: Id | None = None
    kind: Name
    modality: Name
    sha256: Sha256 | None = None
    size: int | None = Field(default=None, ge=0)
    media_type: Name | None = None
    t_start_mono_ns: int
    t_end_mono_ns: int
    t_start_utc_ns: int
    seq_first: int
    seq_last: int
    item_id: Id | None = None
    take: int | None = None
    supersedes: Id | None = None
    created_utc: UtcTime
    meta: Obj
    readings: list[Annotated[list[Any], AfterValidator(_reading)]] | None = None


class VerdictV1(_Body):
    capture_id: RecordId
    profile: Name
    profile_version: Name
    verdict: Verdict
    reasons: list[Text]
    metrics: Obj
    analyzers: list[Obj]


class AnnotationV1(_Body):
    record_id: RecordId
    capture_id: RecordId
    kind: Name
    label: Name
    score: float | None = None
    t_start_s: float | None = None
    t_end_s: float | None = None
    geometry: Obj | list[Any] | None = None
    model: Name
    model_version: Name
    model_sha256: Name | None = None
    created_utc: UtcTime


class ChannelV1(_Body):
    channel: int = Field(ge=0)
    mic: Name
    profile: Name
    profile_version: Name
    verdict: Verdict
    reasons: list[Text]
    metrics: Obj


class ChannelVerdictV1(_Body):
    capture_id: RecordId
    channels: list[ChannelV1]


class ClockV1(_Body):
    t_mono_ns: int
    t_realtime_ns: int
    reason: Text
    health: Obj


class AlignmentV1(_Body):
    run_id: Id
    session_id: Id
    t_from_mono_ns: int | None = None
    t_to_mono_ns: int | None = None
    summary: Obj
    clock_fits: list[Obj]
    parts: int = Field(ge=1)


class AlignmentPairsV1(_Body):
    run_id: Id
    session_id: Id
    part: int = Field(ge=0)
    columns: list[Name]
    rows: list[list[Any]]


class EventV1(_Body):
    record_id: RecordId
    t_utc_ns: int
    t_mono_ns: int
    kind: Name
    stream: Name | None = None
    count: int
    message: Text
    detail: Obj


class SessionV1(_Body):
    event: Literal["start", "end", "reopen"]
    session_id: Id
    kind: Name
    site: Name
    station: Name
    operator: Name
    subject_pseudonym: Name | None = None
    script: Name | None = None
    round: int | None = None
    environment: Obj | None = None
    clock: Obj | None = None
    started_utc: UtcTime
    ended_utc: UtcTime | None = None
    started_mono_ns: int | None = None
    ended_mono_ns: int | None = None
    subject_key_id: Name | None = None
    environment_end: Obj | None = None
    clock_end: Obj | None = None
    meta: Obj | None = None


class StreamV1(_Body):
    stream_id: Id
    device: Name
    session_id: Id | None = None
    modality: Name
    settings: Obj
    created_utc: UtcTime


class TakeV1(_Body):
    take_id: Id
    session_id: Id
    item_id: Id
    prompt: Text | None = None
    round: int | None = None
    take_no: int = Field(ge=0)
    supersedes: Id | None = None
    status: Literal["recording", "done", "aborted", "failed"]
    streams: list[Any]
    captures: dict[str, Id | list[Id]]
    t_start_mono_ns: int
    t_stop_mono_ns: int | None = None
    t_start_utc_ns: int
    clock: Obj
    created_utc: UtcTime
    ended_utc: UtcTime | None = None


class CommandAckV1(_Body):
    """A device's answer to a central command (``sync.commands``): it was applied, or refused and why."""

    command_id: RecordId
    command: Name
    status: Literal["applied", "refused"]
    message: Text
    counts: dict[str, int]


Day = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class ParticipantV1(_Body):
    """A participant of a collection plan, keyed by pseudonym: the subject ID never leaves the device."""

    subject_pseudonym: str = Field(pattern=r"^[0-9a-f]{16,128}$")
    subject_key_id: Name | None = None
    plan: Name
    site: Name
    attributes: dict[Name, Name] = Field(max_length=64)
    consent_scope: Name
    consent_date: Day
    consent_expires: Day | None = None
    consent_ref: Name
    updated_utc: UtcTime


#: (kind, envelope schema_version) → the model of the body.
SCHEMAS: dict[tuple[str, int], type[_Body]] = {
    ("capture", 1): CaptureV1,
    ("verdict", 1): VerdictV1,
    ("annotation", 1): AnnotationV1,
    ("channel_verdict", 1): ChannelVerdictV1,
    ("clock", 1): ClockV1,
    ("alignment", 1): AlignmentV1,
    ("alignment_pairs", 1): AlignmentPairsV1,
    ("event", 1): EventV1,
    ("session", 1): SessionV1,
    ("stream", 1): StreamV1,
    ("take", 1): TakeV1,
    ("command_ack", 1): CommandAckV1,
    ("participant", 1): ParticipantV1,
}


def validate_body(kind: str, version: int, body: Obj) -> BaseModel:
    """The body as its kind's model; WireError naming the first bad field otherwise."""
    model = SCHEMAS.get((kind, version))
    if model is None:
        raise WireError(f"no schema for record kind {kind[:40]!r} version {version}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise WireError(f"{kind} body.{loc}: {err['msg']}"[:300]) from None
    except RecursionError:
        raise WireError(f"{kind} body is nested too deeply") from None


def body_problem(kind: str, envelope: object) -> str | None:
    """Why a stored envelope cannot be read as its kind (None if it can): for readers of old rows."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
        return "not a record envelope"
    version = envelope.get("schema_version")
    try:
        validate_body(kind, version if isinstance(version, int) else -1, envelope["body"])
    except WireError as exc:
        return str(exc)
    return None
