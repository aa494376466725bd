"""``--format mcap``: one MCAP file per (device, session), for Foxglove and the ``mcap`` tools.

Each stream gets channels: ``/STREAM`` with the media (``foxglove.CompressedImage`` for frames,
``fieldcap.AudioSegment`` with the WAV for audio, ``fieldcap.Readings`` per sensor sample), and
``/STREAM/samples`` with each capture's metadata, QC verdict, annotations and lineage
(``fieldcap.Sample``). Messages are JSON with JSON-schema schemas (binary fields base64, as Foxglove
expects); ``log_time`` and ``publish_time`` are the capture's UTC time in ns. Channel metadata holds
the device, modality, driver and settings in force; a ``fieldcap.session`` metadata record holds the
session. Captures outside any session go to ``mcap/DEVICE/no-session.mcap``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.extras import require
from agent.sessions.foxglove import COMPRESSED_IMAGE_SCHEMA, TIME_SCHEMA
from central.datasets.lineage import lineage
from central.datasets.plan import ExportContext, sample_row
from central.datasets.samples import Sample
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.versions import canonical_json

_TIME = TIME_SCHEMA
SCHEMAS: dict[str, dict[str, Any]] = {
    "foxglove.CompressedImage": COMPRESSED_IMAGE_SCHEMA,
    "fieldcap.AudioSegment": {
        "type": "object",
        "properties": {
            "timestamp": _TIME,
            "format": {"type": "string"},
            "duration_s": {"type": "number"},
            "data": {"type": "string", "contentEncoding": "base64"},
        },
    },
    "fieldcap.Readings": {
        "type": "object",
        "properties": {"timestamp": _TIME, "seq": {"type": "integer"}, "values": {"type": "object"}},
    },
    "fieldcap.Sample": {"type": "object", "description": "A capture's metadata, QC, annotations and lineage."},
}


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _time(ns: int) -> dict[str, int]:
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _media_schema(s: Sample) -> str | None:
    if s.blob is not None and s.blob.media_type.startswith("image/"):
        return "foxglove.CompressedImage"
    if s.blob is not None and s.blob.media_type.startswith("audio/"):
        return "fieldcap.AudioSegment"
    if s.capture.get("readings"):
        return "fieldcap.Readings"
    return None


def _channel_metadata(s: Sample) -> dict[str, str]:
    lin = lineage(s)
    return {
        "device": s.device,
        "stream": s.stream_name,
        "modality": s.modality,
        "driver": str(lin["driver"] or ""),
        "settings": canonical_json(lin["settings"]),
    }


def _media_messages(ctx: ExportContext, s: Sample, schema: str) -> Iterator[tuple[int, Callable[[], bytes]]]:
    """(log time, make the message) pairs: media is read only when its message is written."""
    t = s.t_start_utc_ns or 0
    if schema == "fieldcap.Readings":
        by_seq: dict[tuple[int, int], dict[str, Any]] = {}
        for r in s.capture.get("readings") or []:
            if isinstance(r, list) and len(r) == 5:
                by_seq.setdefault((int(r[2]), int(r[0])), {})[str(r[3])] = r[4]
        for (t_utc, seq), values in sorted(by_seq.items()):
            msg = canonical_json({"timestamp": _time(t_utc), "seq": seq, "values": values}).encode()
            yield t_utc, _const(msg)
        return
    blob = s.blob
    assert blob is not None

    def make() -> bytes:
        data = base64.b64encode(ctx.blobs.path_for(blob.sha256).read_bytes()).decode()
        fmt = blob.media_type.split("/", 1)[1]
        if schema == "foxglove.CompressedImage":
            msg: dict[str, Any] = {"timestamp": _time(t), "frame_id": s.stream_name, "data": data, "format": fmt}
        else:
            msg = {"timestamp": _time(t), "format": fmt, "duration_s": s.duration_s, "data": data}
        return canonical_json(msg).encode()

    yield t, make


def _session_spec(ctx: ExportContext, path: str, group: list[Sample]) -> FileSpec:
    def write(dest: Path) -> None:
        mcap_writer = require("mcap.writer", "central", "MCAP export")

        with dest.open("wb") as fh:
            writer = mcap_writer.Writer(fh, compression=mcap_writer.CompressionType.ZSTD)
            writer.start(profile="", library="fieldcap")
            schema_ids = {
                name: writer.register_schema(
                    name=name, encoding="jsonschema", data=json.dumps(body, sort_keys=True).encode()
                )
                for name, body in SCHEMAS.items()
            }
            channels: dict[tuple[str, str], int] = {}
            for s in group:  # register in a fixed order: by stream, media channel first
                for topic, schema in (
                    (f"/{s.stream_name}", _media_schema(s)),
                    (f"/{s.stream_name}/samples", "fieldcap.Sample"),
                ):
                    if schema is not None and (topic, schema) not in channels:
                        channels[(topic, schema)] = -1
            for topic, schema in sorted(channels):
                first = next(s for s in group if f"/{s.stream_name}" in (topic, topic.removesuffix("/samples")))
                channels[(topic, schema)] = writer.register_channel(
                    topic=topic,
                    message_encoding="json",
                    schema_id=schema_ids[schema],
                    metadata=_channel_metadata(first),
                )
            ordered = sorted(_messages(ctx, group, channels), key=lambda m: m[:3])
            for seq, (t, channel, _order, make) in enumerate(ordered):
                writer.add_message(channel_id=channel, log_time=t, publish_time=t, data=make(), sequence=seq)
            session = next((s.session for s in group if s.session), None)
            if session is not None:
                writer.add_metadata("fieldcap.session", {k: canonical_json(v) for k, v in sorted(session.items())})
            writer.finish()

    inputs = [canonical_json(sample_row(s, None)) for s in group]
    size = sum(s.blob.size * 4 // 3 if s.blob else 1024 for s in group)
    return FileSpec(path, fingerprint("mcap", path, inputs), write, size)


def _messages(
    ctx: ExportContext, group: list[Sample], channels: dict[tuple[str, str], int]
) -> Iterator[tuple[int, int, int, Callable[[], bytes]]]:
    """(log time, channel, tie-break, make the message) for every message of a session."""
    order = 0
    for s in group:
        schema = _media_schema(s)
        if schema is not None:
            channel = channels[(f"/{s.stream_name}", schema)]
            for t, make in _media_messages(ctx, s, schema):
                order += 1
                yield t, channel, order, make
        row = sample_row(s, None)
        row.pop("readings", None)
        order += 1
        msg = canonical_json(row).encode()
        yield s.t_start_utc_ns or 0, channels[(f"/{s.stream_name}/samples", "fieldcap.Sample")], order, _const(msg)


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.device, str(s.capture.get("session_id") or "no-session")), []).append(s)
    return [_session_spec(ctx, f"mcap/{device}/{session}.mcap", g) for (device, session), g in sorted(groups.items())]
