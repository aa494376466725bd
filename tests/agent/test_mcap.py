"""MCAP export of a recorded session, read back with the ``mcap`` package."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from mcap.reader import make_reader

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture
from agent.catalog.db import Catalog
from agent.config import parse_config


def test_export_one_channel_per_stream_and_read_it_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    config = parse_config(
        {
            "agent": {"device_id": "m-01", "site": "lab", "station": "rack", "data_dir": str(data_dir)},
            "devices": [
                {"name": "vis", "type": "sim-camera", "width": 160, "height": 120, "fps": 5},
                {"name": "ir", "type": "sim-thermal", "width": 80, "height": 60, "fps": 4},
                {"name": "mic", "type": "sim-microphone", "channels": 2},
                {"name": "env", "type": "sim-serial", "rate_hz": 5},
            ],
            "capture": {
                "vis": {"policy": "every"},
                "ir": {"policy": "every"},
                "mic": {"policy": "segment", "segment_s": 1.0},
                "env": {"policy": "readings", "batch_s": 1.0},
            },
        }
    )
    cap = LocalCapture(config, clock=Clock(probe_daemons=False))
    cap.start()
    assert cap.wait_open(30)
    time.sleep(3.5)
    session = cap.recording.background
    assert session is not None
    cap.stop()
    out = tmp_path / "session.mcap"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "export-mcap", session[:14], str(out), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "export-mcap",
            "no-such",
            str(tmp_path / "x.mcap"),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert again.returncode == 1 and "no session 'no-such'" in again.stderr and "Traceback" not in again.stderr

    with Catalog(data_dir / "catalog.sqlite", "m-01") as cat:
        rows = {r["record_id"]: r for r in cat.conn.execute("SELECT * FROM captures WHERE session_id = ?", (session,))}
        n_frames = {s: sum(1 for r in rows.values() if r["stream"] == s) for s in ("vis", "ir")}
        audio_frames = sum(json.loads(r["meta_json"])["frames"] for r in rows.values() if r["stream"] == "mic")
        readings = cat.conn.execute("SELECT COUNT(DISTINCT seq) FROM readings WHERE stream = 'env'").fetchone()[0]
        ir_row = next(r for r in rows.values() if r["stream"] == "ir")
        ir_raw = cv2.imread(str(data_dir / ir_row["path"]), cv2.IMREAD_UNCHANGED)

    with out.open("rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary is not None
        topics = {c.topic: c for c in summary.channels.values()}
        assert set(topics) >= {"/vis", "/ir", "/mic", "/env", "/alignment"}
        assert json.loads(topics["/ir"].metadata["settings"])["pixel_format"] == "Y16"
        assert "device time" in topics["/mic"].metadata["publish_time"]
        schemas = {summary.schemas[c.schema_id].name for c in topics.values()}
        assert {"foxglove.CompressedImage", "foxglove.RawImage", "fieldcap.AudioChunk"} <= schemas
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        assert metadata["fieldcap.session"]["session_id"] == session
        counts: dict[str, int] = {}
        samples = 0
        last_log = 0
        for _schema, channel, message in reader.iter_messages(log_time_order=True):
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert message.log_time >= last_log
            last_log = message.log_time
            body = json.loads(message.data)
            if channel.topic == "/mic":
                samples += body["frames"]
                assert message.publish_time == round(body["sample_index_first"] * 1e9 / 48000)
            if (
                channel.topic == "/ir"
                and body["timestamp"]["sec"] * 10**9 + body["timestamp"]["nsec"] == ir_row["t_start_utc_ns"]
            ):
                raw = np.frombuffer(base64.b64decode(body["data"]), dtype="<u2").reshape(body["height"], body["width"])
                assert np.array_equal(raw, ir_raw)  # the radiometric values, untouched
            if channel.topic == "/vis":
                assert message.log_time == rows_by_utc(rows, message.log_time)
    assert counts["/vis"] == n_frames["vis"] and counts["/ir"] == n_frames["ir"]
    assert samples == audio_frames and counts["/env"] == readings
    assert sf.info(str(data_dir / next(r["path"] for r in rows.values() if r["stream"] == "mic"))).samplerate == 48000


def rows_by_utc(rows: dict[str, object], utc: int) -> int:
    """The capture UTC a visible message must carry: the one of a catalog row."""
    matches = [r["t_start_utc_ns"] for r in rows.values() if r["stream"] == "vis" and r["t_start_utc_ns"] == utc]  # type: ignore[index]
    return int(matches[0]) if matches else -1
