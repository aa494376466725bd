"""``--format mcap``: one MCAP file per (device, session), for Foxglove and the ``mcap`` tools.

The file is in fieldcap's one MCAP dialect (``agent.sessions.mcap_format``, the same as a session
exported on the device). Each stream gets channels: ``/STREAM`` with the media (visible frames as
``foxglove.CompressedImage``, thermal frames as ``foxglove.RawImage`` ``mono16``, audio as
``fieldcap.AudioChunk``, sensor readings as ``fieldcap.SensorReading``), and ``/STREAM/samples`` with
each capture's metadata, QC verdict, annotations and lineage (``fieldcap.Sample``). ``log_time`` and
``publish_time`` are the capture's UTC time in ns. Channel metadata holds the device, modality,
driver and settings in force; a ``fieldcap.session`` metadata record holds the session. Captures
outside any session go to ``mcap/DEVICE/no-session.mcap``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.sessions.mcap_format import (
    Message,
    audio_chunks,
    compressed_image,
    const,
    sensor_reading,
    thermal_image,
    write_mcap,
)
from central.datasets.lineage import lineage
from central.datasets.plan import ExportContext, sample_row
from central.datasets.samples import Sample
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.versions import canonical_json


def _media_schema(s: Sample) -> str | None:
    if s.blob is not None and s.blob.media_type.startswith("image/"):
        return "foxglove.RawImage" if s.modality == "thermal" else "foxglove.CompressedImage"
    if s.blob is not None and s.blob.media_type.startswith("audio/"):
        return "fieldcap.AudioChunk"
    if s.capture.get("readings"):
        return "fieldcap.SensorReading"
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


def _media_messages(ctx: ExportContext, s: Sample, schema: str) -> Iterator[Message]:
    """The capture's media messages; media is read only when its message is written."""
    t, topic = s.t_start_utc_ns or 0, f"/{s.stream_name}"
    if schema == "fieldcap.SensorReading":
        by_seq: dict[tuple[int, int], dict[str, Any]] = {}
        for r in s.capture.get("readings") or []:
            if isinstance(r, list) and len(r) == 5:
                by_seq.setdefault((int(r[2]), int(r[0])), {})[str(r[3])] = r[4]
        for (t_utc, seq), values in sorted(by_seq.items()):
            yield Message(t_utc, t_utc, topic, sensor_reading(t_utc, seq, values))
        return
    blob = s.blob
    assert blob is not None
    path = ctx.blobs.local_path(blob.sha256)
    if schema == "fieldcap.AudioChunk":
        yield from audio_chunks(path, topic, str(s.capture.get("record_id") or ""), t)
    elif schema == "foxglove.RawImage":
        yield Message(t, t, topic, thermal_image(path, s.stream_name, t))
    else:
        yield Message(t, t, topic, compressed_image(path, s.stream_name, t, blob.media_type.split("/", 1)[1]))


def _session_spec(ctx: ExportContext, path: str, group: list[Sample]) -> FileSpec:
    def write(dest: Path) -> None:
        channels: dict[str, tuple[str, dict[str, str]]] = {}
        for s in group:  # the first capture of a stream describes its channels
            for topic, schema in (
                (f"/{s.stream_name}", _media_schema(s)),
                (f"/{s.stream_name}/samples", "fieldcap.Sample"),
            ):
                if schema is not None and topic not in channels:
                    channels[topic] = (schema, _channel_metadata(s))
        session = next((s.session for s in group if s.session), None)
        metadata = []
        if session is not None:
            metadata.append(("fieldcap.session", {k: canonical_json(v) for k, v in sorted(session.items())}))
        with dest.open("wb") as fh:
            write_mcap(fh, channels, _messages(ctx, group, channels), metadata, extra="central")

    inputs = [canonical_json(sample_row(s, None)) for s in group]
    size = sum(s.blob.size * 4 // 3 if s.blob else 1024 for s in group)
    return FileSpec(path, fingerprint("mcap", path, inputs), write, size)


def _messages(
    ctx: ExportContext, group: list[Sample], channels: dict[str, tuple[str, dict[str, str]]]
) -> Iterator[Message]:
    """Every message of a session: each capture's media (on its stream's channel) and its sample row."""
    for s in group:
        schema = _media_schema(s)
        if schema is not None and channels[f"/{s.stream_name}"][0] == schema:
            yield from _media_messages(ctx, s, schema)
        row = sample_row(s, None)
        row.pop("readings", None)
        t = s.t_start_utc_ns or 0
        yield Message(t, t, f"/{s.stream_name}/samples", const(row))


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.device, str(s.capture.get("session_id") or "no-session")), []).append(s)
    return [_session_spec(ctx, f"mcap/{device}/{session}.mcap", g) for (device, session), g in sorted(groups.items())]
