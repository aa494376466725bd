"""Lineage of a sample: where, how, by whom and by what it was made, and what is missing.

Every exported sample carries this block, and the dataset card's traceability indicator counts the
samples for which ``missing`` is empty. A field counts as missing only where it applies: prompt,
round, take and subject pseudonym only for captures made in a booth session or a take, model
sha256 only for annotations made by a model file (signal analyzers and people have none).
"""

from __future__ import annotations

from typing import Any

from central.datasets.samples import Sample

SESSION_FIELDS = (
    "session_id",
    "kind",
    "site",
    "station",
    "operator",
    "subject_pseudonym",
    "subject_key_id",
    "script",
    "round",
    "environment",
    "started_utc",
    "ended_utc",
)
TAKE_FIELDS = ("take_id", "item_id", "prompt", "round", "take_no", "status", "supersedes")

# Fields every sample needs for full lineage, in the order the dataset card lists them.
REQUIRED = (
    "device",
    "driver",
    "settings",
    "clock",
    "session",
    "qc_profile_version",
    "annotation_models",
    "subject_pseudonym",
    "prompt",
    "round",
    "take",
)


def _driver(s: Sample) -> str | None:
    """The driver type, from the stream's settings in force or the capture metadata."""
    for source in (s.stream.get("settings") if s.stream else None, s.stream, s.meta):
        if isinstance(source, dict):
            for key in ("driver", "driver_type", "type"):
                if isinstance(source.get(key), str) and source[key]:
                    return str(source[key])
    return None


def _models(s: Sample) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for ann in s.machine_annotations:
        key = (ann.get("model"), ann.get("model_version"), ann.get("model_sha256"))
        seen[key] = {"name": key[0], "version": key[1], "sha256": key[2]}
    return [seen[k] for k in sorted(seen, key=lambda k: tuple(str(x) for x in k))]


def _is_booth(s: Sample) -> bool:
    return s.take is not None or bool(s.capture.get("item_id")) or (s.session or {}).get("kind") == "booth"


def missing(s: Sample) -> list[str]:
    """Names (from ``REQUIRED``) of the lineage fields this sample lacks."""
    out = []
    if not s.device:
        out.append("device")
    if _driver(s) is None:
        out.append("driver")
    if s.stream is None or not isinstance(s.stream.get("settings"), dict):
        out.append("settings")
    if not isinstance(s.meta.get("clock"), dict):
        out.append("clock")
    if s.session is None:
        out.append("session")
    if s.blob is not None and (s.verdict is None or not s.verdict.get("profile_version")):
        out.append("qc_profile_version")
    for ann in s.machine_annotations:
        if not ann.get("model") or not ann.get("model_version"):
            out.append("annotation_models")
            break
    if _is_booth(s):
        session = s.session or {}
        take = s.take or {}
        if not session.get("subject_pseudonym"):
            out.append("subject_pseudonym")
        if not take.get("prompt"):
            out.append("prompt")
        if take.get("round") is None and session.get("round") is None:
            out.append("round")
        if s.take is None:
            out.append("take")
    return out


def lineage(s: Sample) -> dict[str, Any]:
    """The lineage block exported with a sample (JSON-ready, deterministic)."""
    session = None if s.session is None else {k: s.session.get(k) for k in SESSION_FIELDS}
    take = None
    if s.take is not None:
        take = {k: s.take.get(k) for k in TAKE_FIELDS}
        take["history"] = s.take_history
    verdict = s.verdict or {}
    return {
        "device": s.device,
        "stream": s.stream_name,
        "driver": _driver(s),
        "modality": s.modality,
        "stream_id": s.capture.get("stream_id"),
        "settings": None if s.stream is None else s.stream.get("settings"),
        "clock": s.meta.get("clock"),
        "capture": {
            "record_id": s.record_id,
            "created_utc": s.capture.get("created_utc"),
            "received_utc": s.received_utc,
            "t_start_utc_ns": s.t_start_utc_ns,
            "seq_first": s.capture.get("seq_first"),
            "seq_last": s.capture.get("seq_last"),
            "sha256": None if s.blob is None else s.blob.sha256,
            "supersedes": s.capture.get("supersedes"),
            "superseded_by": s.superseded_by,
        },
        "session": session,
        "take": take,
        "qc": None
        if s.verdict is None
        else {
            "profile": verdict.get("profile"),
            "profile_version": verdict.get("profile_version"),
            "verdict": verdict.get("verdict"),
            "analyzers": verdict.get("analyzers"),
        },
        "annotations": {
            "source": s.annotation_source,
            "human": None if s.human is None else s.human.provenance(),
            "human_sets": [h.provenance() for h in s.human_sets],
            "models": _models(s),
            "machine": s.machine_annotations,
        },
        "missing": missing(s),
    }
