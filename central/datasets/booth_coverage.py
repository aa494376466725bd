"""Script coverage on the central side, by the device's own rule (``agent.booth.coverage``).

A device decides coverage from its catalog: the newest take of each item, its captures, the QC
verdicts per capture and per microphone, and the operator's accept and skip decisions. All of
these reach the central store as records (``session``, ``take``, ``capture``, ``verdict``,
``channel_verdict`` and ``booth_decision`` events), so the card rebuilds the same facts from them
and asks the same function, ``coverage_of``: the card and ``fieldcap coverage`` cannot disagree on
data both have. Sessions are judged whole (every take and decision the store holds), whatever
filters chose the samples that named them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.booth.coverage import coverage_of
from agent.booth.records import DECISION_EVENT, BoothSessionRow, Mic, TakeFacts, VerdictFacts
from agent.booth.scripts import items_from_meta, load_script
from agent.errors import FieldcapError
from central.datasets.samples import Sample, read_records
from central.store import CentralStore

KINDS = ("session", "take", "capture", "verdict", "channel_verdict", "event")

Key = tuple[str, str]  # (device, id)


def _session_row(body: dict[str, Any]) -> BoothSessionRow | None:
    raw = body.get("meta")
    meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
    try:
        mics = tuple(
            Mic(str(m["mic"]), str(m["stream"]), int(m["channel"]))
            for m in meta.get("mics") or ()
            if isinstance(m, dict)
        )
        items = tuple(items_from_meta(meta))
    except (KeyError, TypeError, ValueError):
        return None  # a device-sent session we cannot read is not judged rather than misjudged
    return BoothSessionRow(
        session_id=str(body["session_id"]),
        subject_pseudonym=body.get("subject_pseudonym"),
        script=body.get("script"),
        script_sha256=meta.get("script_sha256"),
        round_no=body.get("round") if isinstance(body.get("round"), int) else None,
        started_utc=str(body.get("started_utc") or ""),
        ended_utc=body.get("ended_utc"),
        items=items,
        mics=mics,
        meta=meta,
    )


def _verdict(body: dict[str, Any], mic: str | None = None) -> VerdictFacts:
    reasons = body.get("reasons")
    metrics = body.get("metrics")
    return VerdictFacts(
        str(body.get("verdict")),
        tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
        metrics if isinstance(metrics, dict) else {},
        str(body.get("profile")),
        str(body.get("profile_version")),
        mic,
    )


def _take(device_session: str, body: dict[str, Any]) -> TakeFacts | None:
    try:
        take = TakeFacts(
            take_id=str(body["take_id"]),
            session_id=device_session,
            item_id=str(body["item_id"]),
            round_no=body.get("round") if isinstance(body.get("round"), int) else None,
            take_no=int(body["take_no"]),
            status=str(body.get("status")),
            supersedes=body.get("supersedes"),
            prompt=body.get("prompt"),
            created_utc=str(body.get("created_utc") or ""),
        )
    except (KeyError, TypeError, ValueError):
        return None
    captures = body.get("captures")
    if isinstance(captures, dict):
        for stream, ids in captures.items():
            if isinstance(ids, list) and ids:
                take.captures[str(stream)] = str(ids[0])
            elif isinstance(ids, str):
                take.captures[str(stream)] = ids
    return take


def _with_script(row: BoothSessionRow, scripts_dir: Path | None) -> tuple[BoothSessionRow, str]:
    """A session without script items in its metadata takes them from ``--scripts DIR/<script>``."""
    if row.items:
        return row, "session metadata"
    if scripts_dir is not None and row.script:
        path = scripts_dir / Path(str(row.script)).name
        if path.is_file():
            try:
                return dataclasses.replace(row, items=load_script(path).items), f"script file {path.name}"
            except FieldcapError:
                return row, f"script file {path.name} unreadable: items recorded so far"
    return row, "items recorded so far (no script items known)"


def session_coverage(
    store: CentralStore, samples: Sequence[Sample], scripts_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Coverage of every booth session the samples belong to, as ``fieldcap coverage --json`` has it
    (plus the device, the share of cells covered and where the script items came from)."""
    wanted = {
        (s.device, str(s.session["session_id"]))
        for s in samples
        if s.session and (s.session.get("kind") == "booth" or s.session.get("script"))
    }
    if not wanted:
        return []
    sessions: dict[Key, dict[str, Any]] = {}
    takes: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
    channels: dict[Key, int] = {}
    verdicts: dict[Key, VerdictFacts] = {}
    per_mic: dict[Key, dict[int, VerdictFacts]] = {}
    decisions: dict[Key, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    devices = {device for device, _session in wanted}  # sessions, takes and verdicts are per device
    for device, record_id, kind, _received, env, _stored in read_records(store, KINDS, devices=devices):
        body = env["body"]
        if kind == "session" and (device, str(body.get("session_id"))) in wanted:
            sessions[(device, str(body["session_id"]))] = body  # the newest (end) record wins
        elif kind == "take" and (device, str(body.get("session_id"))) in wanted and body.get("take_id"):
            takes[(device, str(body["session_id"]))][str(body["take_id"])] = body
        elif kind == "capture":
            meta = body.get("meta")
            n = meta.get("channels") if isinstance(meta, dict) else None
            channels[(device, record_id)] = n if isinstance(n, int) and n > 0 else 1
        elif kind == "verdict" and body.get("capture_id"):
            verdicts[(device, str(body["capture_id"]))] = _verdict(body)
        elif kind == "channel_verdict" and body.get("capture_id") and isinstance(body.get("channels"), list):
            per_mic[(device, str(body["capture_id"]))] = {
                int(ch["channel"]): _verdict(ch, mic=str(ch.get("mic")))
                for ch in body["channels"]
                if isinstance(ch, dict) and isinstance(ch.get("channel"), int)
            }
        elif kind == "event" and body.get("kind") == DECISION_EVENT and isinstance(body.get("detail"), dict):
            detail = body["detail"]
            key = (device, str(detail.get("session_id")))
            if key in wanted:
                t = body.get("t_utc_ns")
                decisions[key].append((t if isinstance(t, int) else 0, detail))
    out = []
    for key in sorted(wanted):
        row = _session_row(sessions[key]) if key in sessions else None
        if row is None:
            continue
        row, source = _with_script(row, scripts_dir)
        facts = _facts(key, takes[key], channels, verdicts, per_mic)
        skipped: set[str] = set()
        for _t, d in sorted(decisions[key], key=lambda x: x[0]):  # oldest first: the newest accept wins
            if d.get("decision") == "skip":
                skipped.add(str(d.get("item_id")))
            elif d.get("decision") == "accept" and str(d.get("take_id")) in facts:
                facts[str(d.get("take_id"))].decision = d
        judged = coverage_of(row, list(facts.values()), skipped)
        cov = judged.to_dict()
        cov["device"] = key[0]
        cov["coverage"] = cov["covered"] / cov["cells"] if cov["cells"] else 0.0
        cov["items_done"] = judged.items_done()
        cov["target_source"] = source
        out.append(cov)
    return out


def _facts(
    key: Key,
    bodies: dict[str, dict[str, Any]],
    channels: dict[Key, int],
    verdicts: dict[Key, VerdictFacts],
    per_mic: dict[Key, dict[int, VerdictFacts]],
) -> dict[str, TakeFacts]:
    device = key[0]
    facts: dict[str, TakeFacts] = {}
    for body in bodies.values():
        take = _take(key[1], body)
        if take is None:
            continue
        for stream, capture_id in take.captures.items():
            take.channels[stream] = channels.get((device, capture_id), 1)
            if (device, capture_id) in verdicts:
                take.verdicts[stream] = verdicts[(device, capture_id)]
            if (device, capture_id) in per_mic:
                take.channel_verdicts[stream] = per_mic[(device, capture_id)]
        facts[take.take_id] = take
    for take in facts.values():
        if take.supersedes in facts:
            facts[str(take.supersedes)].superseded_by = take.take_id
    return facts
