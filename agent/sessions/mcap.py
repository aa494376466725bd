"""Export one session as an MCAP file: one channel per stream, readable by Foxglove and ``mcap``.

Messages are JSON with JSON-schema schemas (no code generation needed to read them): visible frames
as ``foxglove.CompressedImage`` (the JPEG/PNG bytes as recorded), thermal frames as
``foxglove.RawImage`` ``mono16`` (the raw radiometric values, not an 8-bit rendering), audio as
``fieldcap.AudioChunk`` (PCM s16le in 100 ms chunks), sensor readings as
``fieldcap.SensorReading``, and the alignment index as ``fieldcap.AlignmentPair``.

``log_time`` is the capture time in UTC ns (through the session's mono→UTC map); ``publish_time``
is the device's own time in ns on its own time base — sample index / rate for audio, frame counter
/ fps (or the stream PTS) for cameras — and equals ``log_time`` where a device has no clock of its
own. Each channel's metadata says which. The session, its clock map and the alignment summary are
MCAP metadata records.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from agent.catalog.db import Catalog, utc_now
from agent.errors import FieldcapError
from agent.extras import require
from agent.sessions.foxglove import COMPRESSED_IMAGE_SCHEMA, TIME_SCHEMA

AUDIO_CHUNK_S = 0.1
_TIME = TIME_SCHEMA
SCHEMAS: dict[str, dict[str, Any]] = {
    "foxglove.CompressedImage": COMPRESSED_IMAGE_SCHEMA,
    "foxglove.RawImage": {
        "type": "object",
        "properties": {
            "timestamp": _TIME,
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
            "timestamp": _TIME,
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
            "timestamp": _TIME,
            "seq": {"type": "integer"},
            "values": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        },
    },
    "fieldcap.AlignmentPair": {
        "type": "object",
        "properties": {
            "timestamp": _TIME,
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
}


class ExportError(FieldcapError):
    """The session cannot be exported (unknown id, missing media, unwritable output)."""


@dataclass
class _Msg:
    log_time: int
    publish_time: int
    channel: str
    make: Callable[[], dict[str, Any]]


def _const(body: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: body


def _stamp(utc_ns: int) -> dict[str, int]:
    return {"sec": utc_ns // 1_000_000_000, "nsec": utc_ns % 1_000_000_000}


def resolve_session(cat: Catalog, ref: str) -> str:
    """A session id from an id, a unique prefix of one, or ``latest``."""
    rows = cat.sessions.recent_sessions(1) if ref == "latest" else cat.sessions.sessions_like(ref)
    if len(rows) == 1:
        return str(rows[0]["session_id"])
    recent = ", ".join(
        f"{r['session_id']} ({r['kind']}, {r['started_utc'][:19]})" for r in cat.sessions.recent_sessions(5)
    )
    if not rows:
        raise ExportError(f"no session {ref!r} in {cat.path}; recent sessions: {recent or 'none'}")
    raise ExportError(f"{ref!r} matches {len(rows)} sessions; give more of the id (recent: {recent})")


class _Exporter:
    def __init__(self, cat: Catalog, session_id: str) -> None:
        self.cat = cat
        self.session_id = session_id
        self.data_dir = cat.data_dir
        self.streams: dict[str, dict[str, Any]] = {}
        for row in cat.conn.execute(
            "SELECT stream_id, device, modality, settings_json FROM streams WHERE session_id = ? ORDER BY created_utc",
            (session_id,),
        ):
            entry = self.streams.setdefault(row["device"], {"modality": row["modality"], "stream_ids": []})
            entry["stream_ids"].append(row["stream_id"])
            entry["settings"] = json.loads(row["settings_json"])
        self.messages: list[_Msg] = []
        self.channel_info: dict[str, tuple[str, dict[str, str]]] = {}

    def _channel(self, topic: str, schema: str, meta: dict[str, Any]) -> None:
        if topic not in self.channel_info:
            self.channel_info[topic] = (
                schema,
                {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()},
            )

    def _stream_meta(self, stream: str, modality: str, publish_time: str) -> dict[str, Any]:
        info = self.streams.get(stream, {})
        return {
            "stream": stream,
            "modality": modality,
            "session_id": self.session_id,
            "stream_ids": info.get("stream_ids", []),
            "settings": info.get("settings", {}),
            "log_time": "capture time, UTC ns (host CLOCK_MONOTONIC through the session's clock map)",
            "publish_time": publish_time,
        }

    def _device_ns(self, stream: str, device_time: Any, fallback: int) -> int:
        fps = self.streams.get(stream, {}).get("settings", {}).get("fps")
        if isinstance(device_time, int) and fps:
            return round(device_time * 1e9 / float(fps))
        if isinstance(device_time, float) and device_time >= 0:
            return round(device_time * 1e9)  # a stream PTS in seconds
        return fallback

    def frames(self) -> None:
        rows = self.cat.conn.execute(
            "SELECT record_id, stream, modality, path, media_type, t_start_utc_ns, meta_json FROM captures"
            " WHERE session_id = ? AND modality IN ('visible', 'thermal') AND path IS NOT NULL"
            " AND media_deleted_utc IS NULL ORDER BY t_start_mono_ns",
            (self.session_id,),
        )
        for row in rows:
            stream, utc = row["stream"], int(row["t_start_utc_ns"])
            meta = json.loads(row["meta_json"])
            path = self.data_dir / row["path"]
            publish = self._device_ns(stream, meta.get("device_time"), utc)
            if row["modality"] == "thermal":
                self._channel(
                    f"/{stream}",
                    "foxglove.RawImage",
                    self._stream_meta(stream, "thermal", "frame counter / fps in ns (device time)"),
                )
                self.messages.append(_Msg(utc, publish, f"/{stream}", self._thermal(path, stream, utc)))
            else:
                self._channel(
                    f"/{stream}",
                    "foxglove.CompressedImage",
                    self._stream_meta(stream, "visible", "frame counter / fps, or stream PTS, in ns (device time)"),
                )
                fmt = "jpeg" if row["media_type"] == "image/jpeg" else "png"
                self.messages.append(_Msg(utc, publish, f"/{stream}", self._compressed(path, stream, utc, fmt)))

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ExportError(f"{path}: cannot read the media file: {exc.strerror}") from None

    def _compressed(self, path: Path, stream: str, utc: int, fmt: str) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            data = base64.b64encode(self._read(path)).decode()
            return {"timestamp": _stamp(utc), "frame_id": stream, "data": data, "format": fmt}

        return make

    def _thermal(self, path: Path, stream: str, utc: int) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            img = cv2.imdecode(np.frombuffer(self._read(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 2:
                raise ExportError(f"{path}: not a single-channel thermal PNG")
            raw = np.ascontiguousarray(img, dtype="<u2")
            return {
                "timestamp": _stamp(utc),
                "frame_id": stream,
                "width": int(raw.shape[1]),
                "height": int(raw.shape[0]),
                "encoding": "mono16",
                "step": int(raw.shape[1] * 2),
                "data": base64.b64encode(raw.tobytes()).decode(),
            }

        return make

    def audio(self) -> None:
        rows = self.cat.conn.execute(
            "SELECT record_id, stream, path, t_start_mono_ns, t_start_utc_ns, meta_json FROM captures"
            " WHERE session_id = ? AND modality = 'audio' AND path IS NOT NULL AND media_deleted_utc IS NULL"
            " ORDER BY t_start_mono_ns",
            (self.session_id,),
        )
        for row in rows:
            stream = row["stream"]
            meta = json.loads(row["meta_json"])
            rate, frames = int(meta.get("sample_rate") or 0), int(meta.get("frames") or 0)
            if not rate or not frames:
                continue
            ns_per_frame = _fitted_ns_per_frame(meta.get("clock_points") or [], rate)
            first_index = meta.get("sample_index_first")
            self._channel(
                f"/{stream}",
                "fieldcap.AudioChunk",
                self._stream_meta(stream, "audio", "sample index / nominal rate in ns (device time)"),
            )
            chunk = max(1, round(AUDIO_CHUNK_S * rate))
            path = self.data_dir / row["path"]
            for start in range(0, frames, chunk):
                utc = int(row["t_start_utc_ns"]) + round(start * ns_per_frame)
                index = first_index + start if isinstance(first_index, int) else None
                publish = round(index * 1e9 / rate) if index is not None else utc
                make = self._audio_chunk(path, row["record_id"], start, min(chunk, frames - start), index, rate, utc)
                self.messages.append(_Msg(utc, publish, f"/{stream}", make))

    def _audio_chunk(
        self, path: Path, record_id: str, start: int, n: int, index: int | None, rate: int, utc: int
    ) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            try:
                data, _ = sf.read(str(path), start=start, frames=n, dtype="int16", always_2d=True)
            except (OSError, RuntimeError, sf.LibsndfileError) as exc:
                raise ExportError(f"{path}: cannot read the audio: {exc}") from None
            return {
                "timestamp": _stamp(utc),
                "sample_rate": rate,
                "channels": int(data.shape[1]),
                "sample_index_first": index,
                "frames": int(data.shape[0]),
                "encoding": "pcm_s16le",
                "data": base64.b64encode(np.ascontiguousarray(data, dtype="<i2").tobytes()).decode(),
                "capture": record_id,
            }

        return make

    def readings(self) -> None:
        rows = self.cat.conn.execute(
            "SELECT r.stream, r.seq, r.t_utc_ns, r.name, r.value FROM readings r JOIN captures c"
            " ON c.record_id = r.record_id WHERE c.session_id = ? ORDER BY r.stream, r.seq, r.name",
            (self.session_id,),
        )
        grouped: dict[tuple[str, int], tuple[int, dict[str, float | None]]] = {}
        for stream, seq, utc, name, value in rows:
            grouped.setdefault((stream, seq), (utc, {}))[1][name] = value
        for (stream, seq), (utc, values) in grouped.items():
            self._channel(
                f"/{stream}",
                "fieldcap.SensorReading",
                self._stream_meta(stream, "sensor", "equal to log_time (readings keep no device clock)"),
            )
            body = {"timestamp": _stamp(utc), "seq": seq, "values": values}
            self.messages.append(_Msg(utc, utc, f"/{stream}", _const(body)))

    def alignment(self) -> dict[str, str]:
        run = self.cat.conn.execute(
            "SELECT run_id, summary_json FROM alignment_runs WHERE session_id = ? ORDER BY created_utc",
            (self.session_id,),
        ).fetchall()
        if not run:
            return {}
        rows = self.cat.conn.execute(
            "SELECT a.kind, a.stream_a, a.stream_b, a.record_a, a.record_b, a.offset_ns, a.matched, a.t_mono_ns,"
            " a.detail_json, c.t_start_utc_ns, c.t_start_mono_ns FROM alignments a"
            " LEFT JOIN captures c ON c.record_id = a.record_a WHERE a.session_id = ? ORDER BY a.id",
            (self.session_id,),
        )
        self._channel(
            "/alignment",
            "fieldcap.AlignmentPair",
            {
                "session_id": self.session_id,
                "log_time": "capture time of record_a, UTC ns",
                "publish_time": "= log_time",
            },
        )
        for r in rows:
            if r["t_start_utc_ns"] is None:
                continue
            body = {
                "timestamp": _stamp(int(r["t_start_utc_ns"])),
                "kind": r["kind"],
                "stream_a": r["stream_a"],
                "stream_b": r["stream_b"],
                "record_a": r["record_a"],
                "record_b": r["record_b"],
                "offset_ns": r["offset_ns"],
                "matched": bool(r["matched"]),
                "detail": json.loads(r["detail_json"] or "{}"),
            }
            utc = int(r["t_start_utc_ns"])
            self.messages.append(_Msg(utc, utc, "/alignment", _const(body)))
        return {f"run_{i}": row["summary_json"] for i, row in enumerate(run)}

    def iter_sorted(self) -> Iterator[_Msg]:
        yield from sorted(self.messages, key=lambda m: (m.log_time, m.channel))


def _fitted_ns_per_frame(points: list[list[int]], rate: int) -> float:
    """The file's own index→mono slope when it has clock points spanning a second or more."""
    if len(points) >= 2:
        arr = np.array(points, dtype=np.float64)
        span = arr[-1, 0] - arr[0, 0]
        if span >= rate:
            x, t = arr[:, 0] - arr[0, 0], arr[:, 1] - arr[0, 1]
            return float(((x - x.mean()) * (t - t.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return 1e9 / rate


def export_session(cat: Catalog, session_ref: str, out: Path) -> dict[str, Any]:
    """Write the session to ``out`` (atomically: a temporary name, then rename); return counts."""
    mcap_writer = require("mcap.writer", feature="MCAP export")  # the "mcap" extra
    session_id = resolve_session(cat, session_ref)
    if out.exists():
        raise ExportError(f"{out} already exists; choose another name or remove it")
    session = cat.sessions.session(session_id)
    assert session is not None
    ex = _Exporter(cat, session_id)
    ex.frames()
    ex.audio()
    ex.readings()
    alignment = ex.alignment()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    counts: dict[str, int] = {}
    try:
        fh = tmp.open("xb")
    except OSError as exc:
        raise ExportError(f"{out}: cannot write here: {exc.strerror}") from None
    try:
        with fh:
            writer = mcap_writer.Writer(fh, compression=mcap_writer.CompressionType.ZSTD)
            writer.start(profile="", library="fieldcap")
            schema_ids = {
                name: writer.register_schema(name, "jsonschema", json.dumps(body).encode())
                for name, body in SCHEMAS.items()
                if any(info[0] == name for info in ex.channel_info.values())
            }
            channels = {
                topic: writer.register_channel(topic, "json", schema_ids[schema], meta)
                for topic, (schema, meta) in sorted(ex.channel_info.items())
            }
            seq: dict[str, int] = {}
            for msg in ex.iter_sorted():
                seq[msg.channel] = seq.get(msg.channel, 0) + 1
                data = json.dumps(msg.make(), separators=(",", ":")).encode()
                writer.add_message(channels[msg.channel], msg.log_time, data, msg.publish_time, seq[msg.channel])
            info = {k: ("" if v is None else str(v)) for k, v in dict(session).items()}
            writer.add_metadata("fieldcap.session", info)
            clock = cat.conn.execute(
                "SELECT t_mono_ns, t_realtime_ns, reason, health_json FROM clock_map ORDER BY t_mono_ns"
            ).fetchall()
            writer.add_metadata(
                "fieldcap.clock_map",
                {"entries": json.dumps([dict(r) for r in clock]), "session_clock": session["clock_json"]},
            )
            if alignment:
                writer.add_metadata("fieldcap.alignment", alignment)
            writer.add_metadata("fieldcap.export", {"device": cat.device_id, "exported_utc": utc_now()})
            writer.finish()
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    counts = dict(seq)
    return {"session_id": session_id, "path": str(out), "messages": counts, "channels": sorted(channels)}
