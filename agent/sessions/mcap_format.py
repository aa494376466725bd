"""fieldcap's one MCAP dialect: the schemas, the message bodies and the writer.

Both MCAP files fieldcap makes use it: a session exported on the device (``fieldcap export-mcap``)
and a dataset exported centrally (``fieldcap export --format mcap``). Messages are JSON with
JSON-schema schemas (no code generation needed to read them, binary fields base64 as Foxglove
expects): visible frames as ``foxglove.CompressedImage`` (the JPEG/PNG bytes as recorded), thermal
frames as ``foxglove.RawImage`` ``mono16`` (the raw radiometric values, not an 8-bit rendering),
audio as ``fieldcap.AudioChunk`` (PCM s16le in 100 ms chunks), sensor readings as
``fieldcap.SensorReading``, the alignment index as ``fieldcap.AlignmentPair`` and a capture's
metadata, QC and lineage as ``fieldcap.Sample``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import soundfile as sf

from agent.errors import FieldcapError
from agent.extras import require

AUDIO_CHUNK_S = 0.1

TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "foxglove.CompressedImage": {
        "type": "object",
        "properties": {
            "timestamp": TIME_SCHEMA,
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string"},
        },
    },
    "foxglove.RawImage": {
        "type": "object",
        "properties": {
            "timestamp": TIME_SCHEMA,
            "frame_id": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "encoding": {"type": "string"},
            "step": {"type": "integer"},
            "data": {"type": "string", "contentEncoding": "base64"},
        },
    },
    "fieldcap.AudioChunk": {
        "type": "object",
        "properties": {
            "timestamp": TIME_SCHEMA,
            "sample_rate": {"type": "integer"},
            "channels": {"type": "integer"},
            "sample_index_first": {"type": ["integer", "null"]},
            "frames": {"type": "integer"},
            "encoding": {"type": "string", "const": "pcm_s16le"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "capture": {"type": "string"},
        },
    },
    "fieldcap.SensorReading": {
        "type": "object",
        "properties": {
            "timestamp": TIME_SCHEMA,
            "seq": {"type": "integer"},
            "values": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        },
    },
    "fieldcap.AlignmentPair": {
        "type": "object",
        "properties": {
            "timestamp": TIME_SCHEMA,
            "kind": {"type": "string"},
            "stream_a": {"type": "string"},
            "stream_b": {"type": "string"},
            "record_a": {"type": ["string", "null"]},
            "record_b": {"type": ["string", "null"]},
            "offset_ns": {"type": ["integer", "null"]},
            "matched": {"type": "boolean"},
            "detail": {"type": "object"},
        },
    },
    "fieldcap.Sample": {"type": "object", "description": "A capture's metadata, QC, annotations and lineage."},
}


class ExportError(FieldcapError):
    """An MCAP file cannot be written (unknown session, missing media, unwritable output)."""


Body = Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class Message:
    """One message; ``body`` is called only when the message is written, so media is read late."""

    log_time: int
    publish_time: int
    topic: str
    body: Body


def stamp(utc_ns: int) -> dict[str, int]:
    return {"sec": utc_ns // 1_000_000_000, "nsec": utc_ns % 1_000_000_000}


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def const(body: Mapping[str, Any]) -> Body:
    data = encode(body)
    return lambda: data


def read_media(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: cannot read the media file: {exc.strerror}") from None


def compressed_image(path: Path, frame_id: str, utc: int, fmt: str) -> Body:
    def make() -> bytes:
        data = base64.b64encode(read_media(path)).decode()
        return encode({"timestamp": stamp(utc), "frame_id": frame_id, "data": data, "format": fmt})

    return make


def thermal_image(path: Path, frame_id: str, utc: int) -> Body:
    def make() -> bytes:
        img = cv2.imdecode(np.frombuffer(read_media(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 2:
            raise ExportError(f"{path}: not a single-channel thermal PNG")
        raw = np.ascontiguousarray(img, dtype="<u2")
        return encode(
            {
                "timestamp": stamp(utc),
                "frame_id": frame_id,
                "width": int(raw.shape[1]),
                "height": int(raw.shape[0]),
                "encoding": "mono16",
                "step": int(raw.shape[1] * 2),
                "data": base64.b64encode(raw.tobytes()).decode(),
            }
        )

    return make


def audio_chunks(
    path: Path,
    topic: str,
    record_id: str,
    utc_start: int,
    *,
    rate: int | None = None,
    frames: int | None = None,
    ns_per_frame: float | None = None,
    first_index: int | None = None,
) -> Iterator[Message]:
    """The take in ``AUDIO_CHUNK_S`` chunks. ``publish_time`` is the device's sample index / rate in ns
    where ``first_index`` is known, else the chunk's UTC time. Rate and length default to the file's."""
    if rate is None or frames is None:
        try:
            info = sf.info(str(path))
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise ExportError(f"{path}: cannot read the audio: {exc}") from None
        rate, frames = int(info.samplerate), int(info.frames)
    step_ns = ns_per_frame if ns_per_frame is not None else 1e9 / rate
    chunk = max(1, round(AUDIO_CHUNK_S * rate))
    for start in range(0, frames, chunk):
        utc = utc_start + round(start * step_ns)
        index = first_index + start if first_index is not None else None
        publish = round(index * 1e9 / rate) if index is not None else utc
        yield Message(
            utc, publish, topic, _audio_chunk(path, record_id, start, min(chunk, frames - start), index, rate, utc)
        )


def _audio_chunk(path: Path, record_id: str, start: int, n: int, index: int | None, rate: int, utc: int) -> Body:
    def make() -> bytes:
        try:
            data, _ = sf.read(str(path), start=start, frames=n, dtype="int16", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise ExportError(f"{path}: cannot read the audio: {exc}") from None
        return encode(
            {
                "timestamp": stamp(utc),
                "sample_rate": rate,
                "channels": int(data.shape[1]),
                "sample_index_first": index,
                "frames": int(data.shape[0]),
                "encoding": "pcm_s16le",
                "data": base64.b64encode(np.ascontiguousarray(data, dtype="<i2").tobytes()).decode(),
                "capture": record_id,
            }
        )

    return make


def sensor_reading(utc: int, seq: int, values: Mapping[str, Any]) -> Body:
    return const({"timestamp": stamp(utc), "seq": seq, "values": dict(values)})


def write_mcap(
    fh: IO[bytes],
    channels: Mapping[str, tuple[str, Mapping[str, str]]],
    messages: Iterable[Message],
    metadata: Sequence[tuple[str, Mapping[str, str]]] = (),
    *,
    extra: str | None = None,
) -> dict[str, int]:
    """Write one MCAP file: ``channels`` maps a topic to (schema name, channel metadata); messages
    are written by log time (then topic, then the order given), each channel with its own sequence
    numbers from 1. Returns the messages written per topic. ``extra`` is the install extra that
    brings the ``mcap`` library (the device's ``mcap`` by default)."""
    mcap_writer = require("mcap.writer", extra, "MCAP export")
    writer = mcap_writer.Writer(fh, compression=mcap_writer.CompressionType.ZSTD)
    writer.start(profile="", library="fieldcap")
    schema_ids = {
        name: writer.register_schema(name, "jsonschema", json.dumps(SCHEMAS[name], sort_keys=True).encode())
        for name in sorted({schema for schema, _meta in channels.values()})
    }
    ids = {
        topic: writer.register_channel(topic, "json", schema_ids[schema], dict(meta))
        for topic, (schema, meta) in sorted(channels.items())
    }
    seq: dict[str, int] = {}
    for msg in sorted(messages, key=lambda m: (m.log_time, m.topic)):
        seq[msg.topic] = seq.get(msg.topic, 0) + 1
        writer.add_message(ids[msg.topic], msg.log_time, msg.body(), msg.publish_time, seq[msg.topic])
    for name, data in metadata:
        writer.add_metadata(name, dict(data))
    writer.finish()
    return seq
