"""Samples: each capture in the central store joined with everything recorded about it.

A sample is one ``capture`` record (a frame, an audio segment or take, a batch of sensor
readings) with its QC verdict, its machine annotations, every human annotation set (and the one
exports use, ``versions.chosen``), and
the session, stream (settings in force) and take it belongs to, and the environment it was captured in
(``environment``: sensor readings near the capture time, time of day, weather tag). Records arrive from devices in any
order and may be re-sent, so joins go by (device, id) and the newest record wins where a device
sent several (a session's start and end records, a re-screened verdict).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from central.datasets.environment import ReadingIndex, describe
from central.datasets.versions import AnnotationSet, all_sets, chosen
from central.store import CentralStore
from sync.records import body_problem
from sync.topics import SHA256_RE

log = logging.getLogger("fieldcap.datasets")

KINDS = ("capture", "verdict", "channel_verdict", "annotation", "session", "stream", "take")

MEDIA_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
    "video/mp4": "mp4",
    "application/json": "bin.json",
}


def extension(media_type: str | None) -> str:
    """File extension for a media type (``bin`` when unknown)."""
    if not media_type:
        return "bin"
    return MEDIA_EXTENSIONS.get(media_type, "bin")


@dataclass(frozen=True, slots=True)
class Blob:
    sha256: str
    size: int
    media_type: str
    stored: bool


@dataclass
class Sample:
    """One capture and what the central store knows about it."""

    device: str
    record_id: str
    received_utc: str
    capture: dict[str, Any]
    blob: Blob | None
    verdict: dict[str, Any] | None = None
    channel_verdicts: list[dict[str, Any]] = field(default_factory=list)  # per microphone, multi-channel takes
    machine_annotations: list[dict[str, Any]] = field(default_factory=list)
    human: AnnotationSet | None = None  # the human set exports use (adjudicated > newest annotator)
    human_sets: list[AnnotationSet] = field(default_factory=list)  # every one, least preferred first
    session: dict[str, Any] | None = None
    stream: dict[str, Any] | None = None
    take: dict[str, Any] | None = None
    take_history: list[dict[str, Any]] = field(default_factory=list)
    superseded_by: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)  # ``environment.describe``

    @property
    def key(self) -> str:
        """Unique across devices; ``/`` keeps the device as a directory in file-based formats."""
        return f"{self.device}/{self.record_id}"

    @property
    def modality(self) -> str:
        return str(self.capture.get("modality") or "unknown")

    @property
    def stream_name(self) -> str:
        return str(self.capture.get("stream") or "")

    @property
    def t_start_utc_ns(self) -> int | None:
        value = self.capture.get("t_start_utc_ns")
        return int(value) if isinstance(value, int) else None

    @property
    def duration_s(self) -> float | None:
        start, end = self.capture.get("t_start_mono_ns"), self.capture.get("t_end_mono_ns")
        if isinstance(start, int) and isinstance(end, int):
            return (end - start) / 1e9
        return None

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.capture.get("meta")
        return meta if isinstance(meta, dict) else {}

    @property
    def site(self) -> str | None:
        if self.session and self.session.get("site"):
            return str(self.session["site"])
        site = self.meta.get("site")
        return str(site) if site else None

    @property
    def verdict_name(self) -> str | None:
        return None if self.verdict is None else self.verdict.get("verdict")

    @property
    def profile(self) -> str | None:
        return None if self.verdict is None else self.verdict.get("profile")

    @property
    def annotation_source(self) -> str:
        if self.human is not None:
            return "human"
        return "machine" if self.machine_annotations else "none"

    @property
    def annotations(self) -> list[dict[str, Any]]:
        """What exports use: the chosen human set where there is one, else the machine's."""
        if self.human is not None:
            return [dict(a) for a in self.human.annotations]
        return [dict(a) for a in self.machine_annotations]

    @property
    def labels(self) -> list[str]:
        return sorted({str(a["label"]) for a in self.annotations if a.get("label") not in (None, "")})

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (self.t_start_utc_ns or 0, self.device, self.record_id)


def _machine_annotation(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_id": body.get("record_id"),
        "kind": body.get("kind"),
        "label": body.get("label"),
        "score": body.get("score"),
        "t_start_s": body.get("t_start_s"),
        "t_end_s": body.get("t_end_s"),
        "geometry": body.get("geometry"),
        "model": body.get("model"),
        "model_version": body.get("model_version"),
        "model_sha256": body.get("model_sha256"),
        "source": "machine",
    }


def _channel_verdict(ch: dict[str, Any]) -> dict[str, Any]:
    """One microphone's verdict as sent (``agent.catalog.db.add_channel_verdicts``), nothing else kept."""
    return {k: ch.get(k) for k in ("channel", "mic", "profile", "profile_version", "verdict", "reasons", "metrics")}


def _annotation_order(ann: dict[str, Any]) -> tuple[str, float, str, str]:
    start = ann.get("t_start_s")
    return (
        str(ann.get("kind") or ""),
        float(start) if start is not None else -1.0,
        str(ann.get("label") or ""),
        str(ann.get("record_id") or ""),
    )


class Samples(list[Sample]):
    """The samples of a store, and how many stored records of each kind could not be read as samples."""

    def __init__(self, items: Iterable[Sample] = ()) -> None:
        super().__init__(items)
        self.invalid: dict[str, int] = {}


DEVICES_PER_QUERY = 500  # device names bound per statement (SQLite allows 32766 variables)


def read_records(
    store: CentralStore,
    kinds: Sequence[str] = KINDS,
    invalid: Counter[str] | None = None,
    devices: Collection[str] | None = None,
) -> list[tuple[str, str, str, str, dict[str, Any], bool]]:
    """(device, record_id, kind, received_utc, envelope, blob stored) of ``kinds``, by device and
    record id (record ids sort by time, so the newest of several comes last).

    ``devices``: only these devices' records, read through the primary key (device, record_id), so
    a selection of a few devices reads their rows only, not the store; None: every device.

    Every body is checked against its kind's schema (``sync.records``) again: rows stored before the
    ingester validated bodies, or edited by hand, are skipped and counted in ``invalid`` instead of
    breaking a report. A blob counts as stored for a record only if the record's own device uploaded it.
    """
    invalid = Counter() if invalid is None else invalid
    marks = ",".join("?" * len(kinds))
    sql = (
        "SELECT r.device, r.record_id, r.kind, r.received_utc, r.body, o.sha256 IS NOT NULL"
        " FROM records r LEFT JOIN blob_owners o ON o.device = r.device AND o.sha256 = r.blob_sha256"
        f" WHERE r.kind IN ({marks})"
    )
    rows: list[Any] = []
    with store._tx() as cur:
        if devices is None:
            rows = store._exec(cur, sql + " ORDER BY r.device, r.record_id", tuple(kinds)).fetchall()
        else:
            # In device order, a bounded number of devices per statement: the rows stay in
            # (device, record id) order across statements.
            names = sorted(set(devices))
            for i in range(0, len(names), DEVICES_PER_QUERY):
                part = names[i : i + DEVICES_PER_QUERY]
                rows += store._exec(
                    cur,
                    sql + f" AND r.device IN ({','.join('?' * len(part))}) ORDER BY r.device, r.record_id",
                    (*kinds, *part),
                ).fetchall()
    out = []
    for device, record_id, kind, received, body, stored in rows:
        try:
            env = json.loads(body)
        except (ValueError, RecursionError):
            env = None
        problem = body_problem(str(kind), env)
        if problem is None and isinstance(env, dict) and env.get("blob") is not None:
            blob = env["blob"]
            if not (
                isinstance(blob, dict) and SHA256_RE.fullmatch(str(blob.get("sha256"))) and _is_int(blob.get("size"))
            ):
                problem = "the envelope's blob is malformed"
        if problem is not None:
            invalid[str(kind)] += 1
            log.warning("record %s/%s (%s) skipped: %s", device, record_id, kind, problem[:200])
            continue
        assert isinstance(env, dict)
        out.append((str(device), str(record_id), str(kind), str(received), env, bool(stored)))
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_samples(store: CentralStore, devices: Collection[str] | None = None) -> Samples:
    """Every capture in the store as a sample, in capture-time order (``invalid``: rows skipped per kind).

    ``devices``: only the captures of these devices, and only their records are read (everything a
    sample joins — verdicts, annotations, sessions, streams, takes, human annotation sets, sensor
    readings — is the same device's), so each of their samples is the same as in a full load.
    """
    invalid: Counter[str] = Counter()
    captures = Samples()
    verdicts: dict[tuple[str, str], dict[str, Any]] = {}
    channels: dict[tuple[str, str], list[dict[str, Any]]] = {}
    annotations: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    streams: dict[tuple[str, str], dict[str, Any]] = {}
    takes: dict[tuple[str, str], dict[str, Any]] = {}
    for device, record_id, kind, received, env, stored in read_records(store, KINDS, invalid, devices):
        body = env["body"]
        if kind == "capture":
            blob = env.get("blob")
            captures.append(
                Sample(
                    device=device,
                    record_id=record_id,
                    received_utc=received,
                    capture=body,
                    blob=None
                    if not isinstance(blob, dict)
                    else Blob(str(blob["sha256"]), int(blob["size"]), str(blob["media_type"]), stored),
                )
            )
        elif kind == "verdict" and body.get("capture_id"):
            verdicts[(device, str(body["capture_id"]))] = body  # ordered by record id: the newest wins
        elif kind == "channel_verdict" and body.get("capture_id") and isinstance(body.get("channels"), list):
            channels[(device, str(body["capture_id"]))] = [
                _channel_verdict(ch) for ch in body["channels"] if isinstance(ch, dict)
            ]  # the newest record wins, as for verdicts
        elif kind == "annotation" and body.get("capture_id"):
            annotations[(device, str(body["capture_id"]))].append(_machine_annotation({"record_id": record_id, **body}))
        elif kind == "session" and body.get("session_id"):
            sessions[(device, str(body["session_id"]))] = body
        elif kind == "stream" and body.get("stream_id"):
            streams[(device, str(body["stream_id"]))] = body
        elif kind == "take" and body.get("take_id"):
            takes[(device, str(body["take_id"]))] = body
    _link(captures, verdicts, annotations, sessions, streams, takes, all_sets(store, devices))
    readings = ReadingIndex.build([(c.device, c.capture) for c in captures if c.modality == "sensor"])
    for c in captures:
        c.channel_verdicts = channels.get((c.device, c.record_id), [])
        c.environment = describe(readings, c.device, c.t_start_utc_ns, c.session, c.meta)
    captures.sort(key=lambda s: s.sort_key)
    captures.invalid = dict(sorted(invalid.items()))
    return captures


def _link(
    captures: list[Sample],
    verdicts: dict[tuple[str, str], dict[str, Any]],
    annotations: dict[tuple[str, str], list[dict[str, Any]]],
    sessions: dict[tuple[str, str], dict[str, Any]],
    streams: dict[tuple[str, str], dict[str, Any]],
    takes: dict[tuple[str, str], dict[str, Any]],
    human: dict[tuple[str, str], list[AnnotationSet]],
) -> None:
    take_of_capture: dict[tuple[str, str], dict[str, Any]] = {}
    take_by_number: dict[tuple[str, str, str, Any], dict[str, Any]] = {}
    history: dict[tuple[str, str, str, Any], list[dict[str, Any]]] = defaultdict(list)
    for (device, _take_id), take in takes.items():
        recorded = take.get("captures")
        if isinstance(recorded, dict):
            for ids in recorded.values():
                for rid in ids if isinstance(ids, list) else [ids]:
                    take_of_capture[(device, str(rid))] = take
        item = (device, str(take.get("session_id")), str(take.get("item_id")), take.get("round"))
        history[item].append(take)
        take_by_number[(device, str(take.get("session_id")), str(take.get("item_id")), take.get("take_no"))] = take
    superseded = {
        (s.device, str(s.capture["supersedes"])): s.record_id for s in captures if s.capture.get("supersedes")
    }
    for s in captures:
        key = (s.device, s.record_id)
        s.verdict = verdicts.get(key)
        s.machine_annotations = sorted(annotations.get(key, []), key=_annotation_order)
        s.human_sets = human.get(key, [])
        s.human = chosen(s.human_sets)
        sid, stream_id = s.capture.get("session_id"), s.capture.get("stream_id")
        s.session = sessions.get((s.device, str(sid))) if sid else None
        s.stream = streams.get((s.device, str(stream_id))) if stream_id else None
        s.take = take_of_capture.get(key) or take_by_number.get(
            (s.device, str(sid), str(s.capture.get("item_id")), s.capture.get("take"))
        )
        if s.take is not None:
            item = (s.device, str(s.take.get("session_id")), str(s.take.get("item_id")), s.take.get("round"))
            s.take_history = [
                {k: t.get(k) for k in ("take_id", "take_no", "status", "supersedes", "ended_utc")}
                for t in sorted(history[item], key=lambda t: (t.get("take_no") or 0, str(t.get("take_id"))))
            ]
        s.superseded_by = superseded.get(key)
        if s.superseded_by is None and s.take is not None:
            later = [t for t in s.take_history if t["supersedes"] == s.take.get("take_id")]
            if later:
                s.superseded_by = f"take:{later[-1]['take_id']}"
