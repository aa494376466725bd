"""Central → device commands: what the central side may ask a device to do, validated on the device.

Commands travel on ``fieldcap/v1/{device}/down/cmd/{kind}`` as QoS 1 messages, signed like receipts
but under their own context (``signing.COMMAND_CONTEXT``), so neither can stand in for the other.
The central side keeps each command in its ``commands`` table and publishes it again until the
device acknowledges it with an ordinary ``command_ack`` record; a device that was offline therefore
gets it when it comes back, whatever its broker session kept. Devices apply each command id once
and ignore replays. Every message is hostile until checked: the envelope names the device (it must
be this one), the kind fixes the body's schema, and commands that delete data are refused unless
the device can verify the signature.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync.wire import RecordId, UtcTime, WireError, decode_json

CommandKind = Literal["rerecord", "purge", "assignment"]
#: Commands that delete data: a device applies them only when their signature checks out.
DESTRUCTIVE: frozenset[str] = frozenset({"purge"})
MAX_ITEMS = 1000

Id = Annotated[str, Field(min_length=1, max_length=128)]


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RerecordItem(_Cmd):
    take_id: Id
    session_id: Id
    item_id: Id


class RerecordBody(_Cmd):
    """Record these takes again at the booth; the retake supersedes each one."""

    items: list[RerecordItem] = Field(min_length=1, max_length=MAX_ITEMS)
    reason: str = Field(min_length=1, max_length=2000)


class PurgeBody(_Cmd):
    """Delete everything of this subject on the device (a withdrawal of consent)."""

    subject_pseudonym: str = Field(pattern=r"^[0-9a-f]{16,128}$")


Label = Annotated[str, Field(min_length=1, max_length=64)]


class AssignmentItem(_Cmd):
    item_id: Id
    text: str = Field(max_length=16384)
    type: Label
    instructions: str = Field(default="", max_length=4096)
    max_duration_s: float = Field(gt=0, le=600)


class AssignmentRound(_Cmd):
    name: Label
    items: list[AssignmentItem] = Field(min_length=1, max_length=MAX_ITEMS)


class AssignmentBody(_Cmd):
    """A collection plan's share for this booth: its site, rounds with prompts, attributes, quotas, consent.

    ``version`` is the sha256 of the canonical plan; a newer assignment supersedes older ones.
    """

    plan: Label
    version: str = Field(pattern=r"^[0-9a-f]{64}$")
    site: Label
    rounds: list[AssignmentRound] = Field(min_length=1, max_length=100)
    attributes: dict[Label, list[Label]] = Field(min_length=1, max_length=32)
    quotas: dict[Label, dict[Label, Annotated[int, Field(ge=0)]]]
    speakers: int = Field(gt=0)
    consent_scope: Label
    consent_max_age_days: int = Field(gt=0)


class Command(_Cmd):
    schema_version: Literal[1]
    command_id: RecordId
    device: str = Field(min_length=1, max_length=64)
    kind: CommandKind
    created_utc: UtcTime
    rerecord: RerecordBody | None = None
    purge: PurgeBody | None = None
    assignment: AssignmentBody | None = None

    def check_body(self) -> None:
        """Exactly the body of its kind is present."""
        bodies = {"rerecord": self.rerecord, "purge": self.purge, "assignment": self.assignment}
        if bodies[self.kind] is None or any(v is not None for k, v in bodies.items() if k != self.kind):
            raise WireError(f"a {self.kind} command must carry exactly a {self.kind!r} body")


def parse_command(payload: bytes) -> Command:
    """Decode and validate a command message; WireError says why it is refused."""
    data = decode_json(payload, limit=1 << 20)
    if not isinstance(data, dict):
        raise WireError("command is not a JSON object")
    try:
        cmd = Command.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise WireError(f"{'.'.join(str(p) for p in err['loc']) or 'command'}: {err['msg']}"[:300]) from None
    cmd.check_body()
    return cmd


def encode_command(cmd: Command) -> bytes:
    return cmd.model_dump_json(exclude_none=True).encode()
