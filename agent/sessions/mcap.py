"""Export one session as an MCAP file: one channel per stream, readable by Foxglove and ``mcap``.

The messages are fieldcap's MCAP dialect (``agent.sessions.mcap_format``, shared with the central
dataset export): visible frames as JPEG/PNG, thermal frames as raw ``mono16``, audio in 100 ms PCM
chunks, sensor readings, and the alignment index.

``log_time`` is the capture time in UTC ns (through the session's mono→UTC map); ``publish_time``
is the device's own time in ns on its own time base — sample index / rate for audio, frame counter
/ fps (or the stream PTS) for cameras — and equals ``log_time`` where a device has no clock of its
own. Each channel's metadata says which. The session, its clock map and the alignment summary are
MCAP metadata records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from agent.catalog.db import Catalog
from agent.extras import require
from agent.sessions.mcap_format import (
    ExportError,
    Message,
    audio_chunks,
    compressed_image,
    const,
    sensor_reading,
    stamp,
    thermal_image,
    write_mcap,
)
from sync.wire import utc_now

__all__ = ["ExportError", "export_session", "resolve_session"]


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
        for row in cat.timeline.streams(session_id):
            entry = self.streams.setdefault(row["device"], {"modality": row["modality"], "stream_ids": []})
            entry["stream_ids"].append(row["stream_id"])
            entry["settings"] = json.loads(row["settings_json"])
        self.messages: list[Message] = []
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
            **(
                {
                    "pair_with": info["pair_with"],
                    "pairing": "each frame was kept as the partner of a /" + info["pair_with"] + " frame; "
                    "the pairs are the frame_pair messages on /alignment (record ids, offset, skew)",
                }
                if info.get("pair_with")
                else {}
            ),
        }

    def _device_ns(self, stream: str, device_time: Any, fallback: int) -> int:
        fps = self.streams.get(stream, {}).get("settings", {}).get("fps")
        if isinstance(device_time, int) and fps:
            return round(device_time * 1e9 / float(fps))
        if isinstance(device_time, float) and device_time >= 0:
            return round(device_time * 1e9)  # a stream PTS in seconds
        return fallback

    def frames(self) -> None:
        rows = self.cat.timeline.media(self.session_id, ("visible", "thermal"))
        for row in rows:
            stream, utc = row["stream"], int(row["t_start_utc_ns"])
            meta = json.loads(row["meta_json"])
            path = self.data_dir / row["path"]
            publish = self._device_ns(stream, meta.get("device_time"), utc)
            pair = meta.get("pair")
            if isinstance(pair, dict) and pair.get("with") and f"/{stream}" not in self.channel_info:
                # A paired camera (pair_with): its frames are partners of the leader's, one sample each.
                self.streams.setdefault(stream, {})["pair_with"] = pair["with"]
            if row["modality"] == "thermal":
                self._channel(
                    f"/{stream}",
                    "foxglove.RawImage",
                    self._stream_meta(stream, "thermal", "frame counter / fps in ns (device time)"),
                )
                self.messages.append(Message(utc, publish, f"/{stream}", thermal_image(path, stream, utc)))
            else:
                self._channel(
                    f"/{stream}",
                    "foxglove.CompressedImage",
                    self._stream_meta(stream, "visible", "frame counter / fps, or stream PTS, in ns (device time)"),
                )
                fmt = "jpeg" if row["media_type"] == "image/jpeg" else "png"
                self.messages.append(Message(utc, publish, f"/{stream}", compressed_image(path, stream, utc, fmt)))

    def audio(self) -> None:
        rows = self.cat.timeline.media(self.session_id, ("audio",))
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
            self.messages.extend(
                audio_chunks(
                    self.data_dir / row["path"],
                    f"/{stream}",
                    row["record_id"],
                    int(row["t_start_utc_ns"]),
                    rate=rate,
                    frames=frames,
                    ns_per_frame=ns_per_frame,
                    first_index=first_index if isinstance(first_index, int) else None,
                )
            )

    def readings(self) -> None:
        rows = self.cat.timeline.all_readings(self.session_id)
        grouped: dict[tuple[str, int], tuple[int, dict[str, float | None]]] = {}
        for stream, seq, utc, name, value in rows:
            grouped.setdefault((stream, seq), (utc, {}))[1][name] = value
        for (stream, seq), (utc, values) in grouped.items():
            self._channel(
                f"/{stream}",
                "fieldcap.SensorReading",
                self._stream_meta(stream, "sensor", "equal to log_time (readings keep no device clock)"),
            )
            self.messages.append(Message(utc, utc, f"/{stream}", sensor_reading(utc, seq, values)))

    def alignment(self) -> dict[str, str]:
        run = self.cat.timeline.alignment_runs(self.session_id)
        if not run:
            return {}
        rows = self.cat.timeline.alignment_pairs(self.session_id)
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
                "timestamp": stamp(int(r["t_start_utc_ns"])),
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
            self.messages.append(Message(utc, utc, "/alignment", const(body)))
        return {f"run_{i}": row["summary_json"] for i, row in enumerate(run)}


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
    require("mcap.writer", feature="MCAP export")  # the "mcap" extra: say so before any work
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
    info = {k: ("" if v is None else str(v)) for k, v in dict(session).items()}
    clock = cat.timeline.clock_map()
    metadata: list[tuple[str, dict[str, str]]] = [
        ("fieldcap.session", info),
        (
            "fieldcap.clock_map",
            {"entries": json.dumps([dict(r) for r in clock]), "session_clock": session["clock_json"]},
        ),
    ]
    if alignment:
        metadata.append(("fieldcap.alignment", alignment))
    metadata.append(("fieldcap.export", {"device": cat.device_id, "exported_utc": utc_now()}))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        fh = tmp.open("xb")
    except OSError as exc:
        raise ExportError(f"{out}: cannot write here: {exc.strerror}") from None
    try:
        with fh:
            counts = write_mcap(fh, ex.channel_info, ex.messages, metadata)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"session_id": session_id, "path": str(out), "messages": counts, "channels": sorted(ex.channel_info)}
