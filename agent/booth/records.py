"""What the catalog knows about booth sessions: takes, their captures and verdicts, operator decisions.

The booth keeps no state of its own. A session's script items and microphones are in the session's
metadata, every take is a ``takes`` row (a retake supersedes, nothing is overwritten), the QC
verdicts are ``verdicts`` rows of the take captures (one per capture, its worst channel's) and
``channel_verdicts`` rows (one per microphone, see ``agent.qc``), and the operator's decisions
(accept, skip) are ``events`` rows of kind ``booth_decision`` — the audit log, synced like
everything else. So a booth that crashed or quit resumes exactly where it was, and ``review`` and
``coverage`` read the same facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.booth.scripts import PromptItem, items_from_meta
from agent.catalog.db import Catalog
from agent.errors import FieldcapError

__all__ = [
    "DECISION_EVENT",
    "BoothSessionRow",
    "TakeFacts",
    "VerdictFacts",
    "booth_sessions",
    "mic_verdict",
    "record_decision",
    "resolve_booth_session",
    "session_takes",
]

DECISION_EVENT = "booth_decision"


class BoothRecordsError(FieldcapError):
    """A session reference that does not name a booth session."""


@dataclass(frozen=True, slots=True)
class Mic:
    """One microphone: a channel of a take stream."""

    mic: str  # "stream:channel name"
    stream: str
    channel: int


@dataclass(frozen=True, slots=True)
class BoothSessionRow:
    session_id: str
    subject_pseudonym: str | None
    script: str | None
    script_sha256: str | None
    round_no: int | None
    started_utc: str
    ended_utc: str | None
    items: tuple[PromptItem, ...]
    mics: tuple[Mic, ...]
    meta: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> BoothSessionRow:
        meta = json.loads(row["meta_json"] or "{}")
        raw_mics = [m for m in meta.get("mics") or () if isinstance(m, dict)]
        mics = tuple(Mic(str(m["mic"]), str(m["stream"]), int(m["channel"])) for m in raw_mics)
        return cls(
            session_id=row["session_id"],
            subject_pseudonym=row["subject_pseudonym"],
            script=row["script"],
            script_sha256=meta.get("script_sha256"),
            round_no=row["round"],
            started_utc=row["started_utc"],
            ended_utc=row["ended_utc"],
            items=tuple(items_from_meta(meta)),
            mics=mics,
            meta=meta,
        )


@dataclass(frozen=True, slots=True)
class VerdictFacts:
    verdict: str
    reasons: tuple[str, ...]
    metrics: dict[str, Any]
    profile: str
    profile_version: str
    mic: str | None = None  # the microphone of a channel verdict; None for a capture's (whole take's)


@dataclass
class TakeFacts:
    """One take with everything known about it."""

    take_id: str
    session_id: str
    item_id: str
    round_no: int | None
    take_no: int
    status: str
    supersedes: str | None
    prompt: str | None
    created_utc: str
    captures: dict[str, str] = field(default_factory=dict)  # stream -> capture record id
    paths: dict[str, str | None] = field(default_factory=dict)  # stream -> media path (data-dir relative)
    states: dict[str, str] = field(default_factory=dict)  # stream -> committed / synced / confirmed
    verdicts: dict[str, VerdictFacts] = field(default_factory=dict)  # stream -> verdict of its capture
    channels: dict[str, int] = field(default_factory=dict)  # stream -> channels in its capture
    channel_verdicts: dict[str, dict[int, VerdictFacts]] = field(default_factory=dict)  # stream -> channel -> verdict
    superseded_by: str | None = None
    decision: dict[str, Any] | None = None  # the newest accept decision for this take

    @property
    def accepted(self) -> bool:
        return self.decision is not None and self.decision.get("decision") == "accept"

    @property
    def judged(self) -> bool:
        """Every capture of the take has the agent's verdict."""
        return bool(self.verdicts) and set(self.verdicts) == set(self.captures)

    @property
    def judged_per_mic(self) -> bool:
        """Every multi-channel capture of the take has been screened per microphone too."""
        return all(self.channel_verdicts.get(s) for s in self.captures if self.channels.get(s, 1) > 1)

    def verdicts_by_mic(self) -> dict[str, VerdictFacts]:
        """What QC says, by microphone where that is known, else by stream (the whole take's verdict)."""
        out: dict[str, VerdictFacts] = {}
        for stream, capture in sorted(self.verdicts.items()):
            own = self.channel_verdicts.get(stream)
            if self.channels.get(stream, 1) > 1 and own and not _unattributed(capture, own):
                out.update({v.mic or f"{stream}:ch{c}": v for c, v in sorted(own.items())})
            else:
                out[stream] = capture
        return out

    def labelled_reasons(self) -> list[str]:
        """Every QC reason prefixed with the microphone (or stream) it is about."""
        return [f"{label}: {r}" for label, v in self.verdicts_by_mic().items() for r in v.reasons]


def _unattributed(capture: VerdictFacts, own: dict[int, VerdictFacts]) -> bool:
    """The take failed, but no channel screened on its own did: the failure is the whole take's."""
    return capture.verdict == "fail" and all(v.verdict != "fail" for v in own.values())


def mic_verdict(take: TakeFacts, mic: Mic) -> tuple[VerdictFacts | None, str]:
    """The QC verdict that applies to one microphone of a take, and its scope.

    Scope ``microphone``: the channel screened on its own (or the capture of a one-channel stream).
    Scope ``take``: the whole take's verdict (its worst channel's), used until per-microphone QC
    has run (older takes, a booth that quit first) and for a failure no single channel explains,
    so a cell is never judged more leniently than the take. Nothing is known before the capture's
    own verdict is in: that one is authoritative (it is the one that syncs).
    """
    capture = take.verdicts.get(mic.stream)
    if capture is None:
        return None, "take"
    if take.channels.get(mic.stream, 1) <= 1:
        return capture, "microphone"
    own = take.channel_verdicts.get(mic.stream, {})
    if mic.channel not in own or _unattributed(capture, own):
        return capture, "take"
    return own[mic.channel], "microphone"


def booth_sessions(cat: Catalog, *, open_only: bool = False) -> list[BoothSessionRow]:
    """Every booth session, oldest first."""
    return [BoothSessionRow.from_row(r) for r in cat.booth.sessions(open_only=open_only)]


def resolve_booth_session(cat: Catalog, ref: str) -> BoothSessionRow:
    """A booth session from its id, a unique prefix of it, or ``latest``."""
    if ref == "latest":
        rows = booth_sessions(cat)
        if not rows:
            raise BoothRecordsError(f"{cat.path}: no booth session yet (start one with `fieldcap booth`)")
        return rows[-1]
    found = [r for r in cat.sessions.sessions_like(ref) if r["kind"] == "booth"]
    if not found:
        others = cat.sessions.sessions_like(ref)
        what = f" (it is a {others[0]['kind']} session)" if len(others) == 1 else ""
        raise BoothRecordsError(
            f"no booth session {ref!r} in {cat.path}{what}; list them with `fieldcap review` or `fieldcap coverage`"
        )
    if len(found) > 1:
        ids = ", ".join(r["session_id"] for r in found[:5])
        raise BoothRecordsError(f"session {ref!r} is ambiguous ({ids}, ...); give more of the id")
    return BoothSessionRow.from_row(found[0])


def record_decision(
    cat: Catalog,
    *,
    session_id: str,
    item_id: str,
    round_no: int | None,
    decision: str,
    take_id: str | None = None,
    take_no: int | None = None,
    override: bool = False,
    qc: dict[str, Any] | None = None,
) -> str:
    """Record an operator decision (``accept`` a take, ``skip`` an item) as a synced event."""
    what = f"take {take_no} of item {item_id!r}" if take_no is not None else f"item {item_id!r}"
    verb = {"accept": "accepted", "skip": "skipped"}.get(decision, decision)
    message = f"operator {verb} {what}" + (" against a failed QC verdict" if override else "")
    return cat.add_event(
        DECISION_EVENT,
        message,
        detail={
            "session_id": session_id,
            "item_id": item_id,
            "round": round_no,
            "decision": decision,
            "take_id": take_id,
            "take_no": take_no,
            "override": override,
            "qc": qc or {},
        },
    )


def decisions(cat: Catalog, session_id: str) -> list[dict[str, Any]]:
    """The operator decisions of a session, oldest first."""
    rows = cat.booth.events(DECISION_EVENT, session_id)
    out = []
    for detail_json, t_utc_ns in rows:
        d = json.loads(detail_json)
        d["t_utc_ns"] = t_utc_ns
        out.append(d)
    return out


def session_takes(cat: Catalog, session_id: str) -> list[TakeFacts]:
    """Every take of a session (superseded ones too), oldest first, with captures, verdicts, decisions."""
    takes: dict[str, TakeFacts] = {}
    for row in cat.sessions.takes(session_id):
        facts = TakeFacts(
            take_id=row["take_id"],
            session_id=session_id,
            item_id=row["item_id"],
            round_no=row["round"],
            take_no=int(row["take_no"]),
            status=row["status"],
            supersedes=row["supersedes"],
            prompt=row["prompt"],
            created_utc=row["created_utc"],
        )
        for stream, ids in json.loads(row["captures_json"] or "{}").items():
            if ids:
                facts.captures[stream] = str(ids[0])
        takes[facts.take_id] = facts
    for facts in takes.values():
        if facts.supersedes in takes:
            takes[facts.supersedes].superseded_by = facts.take_id
    by_capture = {cid: (t, s) for t in takes.values() for s, cid in t.captures.items()}
    if by_capture:
        rows = cat.booth.take_captures(session_id)
        for r in rows:
            found = by_capture.get(r["record_id"])
            if found is None:
                continue
            take, stream = found
            take.paths[stream] = r["path"]
            take.states[stream] = r["state"]
            take.channels[stream] = int(r["channels"] or 1)
            if r["verdict"] is not None:
                take.verdicts[stream] = _verdict(r)
        rows = cat.booth.take_channel_verdicts(session_id)
        for r in rows:
            found = by_capture.get(r["capture_id"])
            if found is not None:
                take, stream = found
                take.channel_verdicts.setdefault(stream, {})[int(r["channel"])] = _verdict(r, mic=r["mic"])
    for d in decisions(cat, session_id):
        decided = takes.get(str(d.get("take_id")))
        if decided is not None and d.get("decision") == "accept":
            decided.decision = d
    return list(takes.values())


def _verdict(r: Any, *, mic: str | None = None) -> VerdictFacts:
    return VerdictFacts(
        r["verdict"],
        tuple(json.loads(r["reasons_json"])),
        json.loads(r["metrics_json"]),
        r["profile"],
        r["profile_version"],
        mic,
    )


def skipped_items(cat: Catalog, session_id: str) -> set[str]:
    """Items the operator skipped (whether or not they were recorded later)."""
    return {str(d["item_id"]) for d in decisions(cat, session_id) if d.get("decision") == "skip"}
