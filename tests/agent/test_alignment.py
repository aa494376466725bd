"""The alignment index against the simulators' ground truth, and its bookkeeping on crafted data."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture as Capture
from agent.capture.recording import Recording
from agent.catalog.db import Catalog
from agent.catalog.writer import Writer
from agent.config import parse_config
from agent.sessions.alignment import align_session
from drivers.sim.serial import waveform_value

DRIFT_PPM = 50.0
RATE = 48000


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """~60 s of visible + IR frames, a 50 ppm fast microphone pair and a 10 Hz sensor.

    60 s, not 30: the drift fit's error in ppm shrinks with the span, and at 30 s a loaded CI
    machine's callback delays were enough to move the estimate by 6 ppm.
    """
    data_dir = tmp_path_factory.mktemp("align") / "d"
    config = parse_config(
        {
            "agent": {"device_id": "t-01", "site": "lab", "station": "rack", "data_dir": str(data_dir)},
            "devices": [
                {"name": "vis", "type": "sim-camera", "width": 160, "height": 120, "fps": 15},
                {"name": "ir", "type": "sim-thermal", "width": 80, "height": 60, "fps": 9},
                {"name": "mic", "type": "sim-microphone", "channels": 2, "drift_ppm": DRIFT_PPM},
                {"name": "env", "type": "sim-serial", "rate_hz": 10, "fields": ["temperature_c"], "period_s": 20},
            ],
            "capture": {
                "vis": {"policy": "every", "image_format": "png"},
                "ir": {"policy": "every"},
                "mic": {"policy": "segment", "segment_s": 3.0},
                "env": {"policy": "readings", "batch_s": 1.0},
            },
        }
    )
    cap = Capture(config, clock=Clock(probe_daemons=False))
    cap.start()
    assert cap.wait_open(30)
    time.sleep(60)
    session = cap.recording.background
    cap.stop()  # ends the session and builds its alignment index
    with Catalog(data_dir / "catalog.sqlite", "t-01") as cat:
        meta = {r[0]: json.loads(r[1]) for r in cat.conn.execute("SELECT record_id, meta_json FROM captures")}
        rows = [dict(r) for r in cat.conn.execute("SELECT * FROM alignments WHERE session_id = ?", (session,))]
        fits = [dict(r) for r in cat.conn.execute("SELECT * FROM clock_fits WHERE session_id = ?", (session,))]
        ledger = cat.conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM events"
            " WHERE kind IN ('drop', 'gap', 'duplicate', 'bad_frame', 'overflow')"
        ).fetchone()[0]
        readings = cat.conn.execute("SELECT seq, t_mono_ns FROM readings WHERE stream = 'env'").fetchall()
        runs = cat.conn.execute("SELECT COUNT(*) FROM alignment_runs WHERE session_id = ?", (session,)).fetchone()[0]
        synced = [r[0] for r in cat.conn.execute("SELECT kind FROM outbox WHERE kind LIKE 'alignment%'")]
    # The sensor's start: reading k is due k / 10 s after it (its stamps are at most a little late).
    sensor_t0 = min(t - seq * 100_000_000 for seq, t in readings)
    return {
        "meta": meta,
        "rows": rows,
        "fits": fits,
        "runs": runs,
        "synced": synced,
        "losses": cap.losses(),
        "sensor_t0": sensor_t0,
        "ledger": ledger,
    }


def test_every_loss_the_capture_saw_is_an_event(recorded: dict[str, Any]) -> None:
    # On a quiet machine nothing is lost; on a loaded one a simulator may skip a frame. Either way
    # each loss must be in the ledger.
    reported = sum(sum(v.values()) for v in recorded["losses"].values())
    assert recorded["ledger"] == reported


def test_visible_ir_pairs_within_2_ms_of_truth(recorded: dict[str, Any]) -> None:
    meta = recorded["meta"]
    pairs = [r for r in recorded["rows"] if r["kind"] == "frame_frame"]
    matched = [r for r in pairs if r["matched"]]
    assert len(matched) >= 0.95 * len(pairs) > 150  # IR (slower) frames are the reference
    errors = [
        abs(r["offset_ns"] - (meta[r["record_b"]]["t_truth_ns"] - meta[r["record_a"]]["t_truth_ns"])) / 1e6
        for r in matched
    ]
    assert np.percentile(errors, 99) <= 2.0


def test_frame_to_audio_offsets_within_1_ms_of_truth(recorded: dict[str, Any]) -> None:
    meta = recorded["meta"]
    rate_true = RATE * (1 + DRIFT_PPM * 1e-6)  # device frames per host second
    matched = [r for r in recorded["rows"] if r["kind"] == "frame_audio" and r["matched"]]
    assert len(matched) > 400
    errors = []
    for r in matched:
        audio = meta[r["record_b"]]["first_block"]  # truth: the block's first index and its true time
        index_true = audio["device_time"] + (meta[r["record_a"]]["t_truth_ns"] - audio["t_truth_ns"]) * rate_true / 1e9
        errors.append(abs(json.loads(r["detail_json"])["sample_index"] - index_true) / RATE * 1e3)
    assert np.percentile(errors, 99) <= 1.0


def test_injected_audio_drift_is_estimated_within_5_ppm(recorded: dict[str, Any]) -> None:
    (mic,) = [f for f in recorded["fits"] if f["stream"] == "mic"]
    assert mic["span_s"] > 25
    assert abs(mic["drift_ppm"] - DRIFT_PPM) <= 5.0, mic
    cams = [f for f in recorded["fits"] if f["device_time"] == "frame_counter"]
    assert {f["stream"] for f in cams} == {"vis", "ir"}
    # The cameras are paced by the host clock (0 ppm); under heavy CPU load their stamps wander more.
    assert all(abs(f["drift_ppm"]) <= 20.0 for f in cams), cams
    # ... which their uncertainty says: the microphone's drift is significant, the cameras' is not
    assert mic["drift_significant"] == 1 and abs(mic["drift_ppm"] - DRIFT_PPM) <= mic["drift_uncertainty_ppm"], mic
    assert all(f["drift_significant"] == 0 and f["drift_uncertainty_ppm"] > 0 for f in cams), cams


def test_sensor_values_interpolated_at_frame_times(recorded: dict[str, Any]) -> None:
    meta = recorded["meta"]
    rows = [r for r in recorded["rows"] if r["kind"] == "frame_sensor" and r["stream_a"] == "ir" and r["matched"]]
    assert len(rows) > 150
    # temperature_c = 21.5 + 2 sin(2 pi t / 20) changes by up to 0.63 °C/s: linear interpolation
    # between 0.1 s readings is within 0.002 °C, and each ms of timing error costs up to 0.0006 °C
    # (the sensor's own stamps are host stamps: 0.03 °C allows ~45 ms of jitter on a loaded box).
    errors = [
        abs(
            json.loads(r["detail_json"])["values"]["temperature_c"]
            - waveform_value("temperature_c", (meta[r["record_a"]]["t_truth_ns"] - recorded["sensor_t0"]) / 1e9, 20)
        )
        for r in rows
    ]
    assert np.percentile(errors, 99) <= 0.03
    assert recorded["runs"] == 1 and "alignment" in recorded["synced"] and "alignment_pairs" in recorded["synced"]


def _frame(cat: Catalog, stream: str, modality: str, t: int, session: str, index: int) -> str:
    return cat.add_capture(
        stream=stream,
        kind="frame",
        modality=modality,
        t_start_mono_ns=t,
        t_end_mono_ns=t,
        t_start_utc_ns=t,
        seq_first=index,
        seq_last=index,
        media=None,
        media_rel=None,
        meta={"device_time": None},
        session_id=session,
    )


def test_unmatched_items_are_rows_with_a_reason(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        cat.sessions.add_session(
            {
                "session_id": "s1",
                "kind": "test",
                "site": "x",
                "station": "y",
                "started_utc": "2026-01-01T00:00:00+00:00",
            }
        )
        ms = 1_000_000
        vis = [_frame(cat, "vis", "visible", i * 100 * ms, "s1", i) for i in range(10)]  # 10 fps
        # IR at 5 fps, one frame 60 ms off any visible frame (tolerance: half of 200 ms = 100 ms, so
        # still matched) and one 3 s after the visible stream ended (unmatched).
        ir = [_frame(cat, "ir", "thermal", t * ms, "s1", i) for i, t in enumerate((0, 200, 460, 600, 3900))]
        report = align_session(cat, "s1")
        pairs = {r["record_a"]: r for r in report.rows if r["kind"] == "frame_frame"}
        assert set(pairs) == set(ir)
        assert pairs[ir[2]]["matched"] and pairs[ir[2]]["record_b"] == vis[5] and pairs[ir[2]]["offset_ns"] == 40 * ms
        assert not pairs[ir[4]]["matched"] and "away" in pairs[ir[4]]["detail"]["reason"]
        (summary,) = [p for p in report.summary["pairs"] if p["kind"] == "frame_frame"]
        assert summary["tolerance_ns"] == pytest.approx(100 * ms, rel=0.35)
        assert (summary["matched"], summary["unmatched_a"]) == (4, 1)
        stored = cat.conn.execute("SELECT COUNT(*) FROM alignments WHERE matched = 0").fetchone()[0]
        assert stored == 1


def test_a_long_session_is_indexed_while_it_runs_in_windows_that_tile_it(tmp_path: Path) -> None:
    """Periodic alignment (a 2 s period here instead of 300 s): runs appear while recording, their
    windows tile the session without overlap, and each reference frame is indexed exactly once."""
    data_dir = tmp_path / "d"
    config = parse_config(
        {
            "agent": {"device_id": "t-02", "data_dir": str(data_dir)},
            "devices": [
                {"name": "vis", "type": "sim-camera", "width": 64, "height": 48, "fps": 10},
                {"name": "ir", "type": "sim-thermal", "width": 40, "height": 30, "fps": 5},
                {"name": "mic", "type": "sim-microphone", "channels": 1},
                {"name": "env", "type": "sim-serial", "rate_hz": 10, "fields": ["temperature_c"]},
            ],
            "capture": {
                "vis": {"policy": "every", "image_format": "png"},
                "ir": {"policy": "every"},
                "mic": {"policy": "segment", "segment_s": 1.0},
                "env": {"policy": "readings", "batch_s": 0.5},
            },
        }
    )
    cap = Capture(config, clock=Clock(probe_daemons=False), align_every_s=2.0, align_lag_s=1.5)
    cap.start()
    assert cap.wait_open(30)
    session = cap.recording.background
    assert session is not None

    def runs_so_far() -> int:
        with Catalog(data_dir / "catalog.sqlite", "t-02") as cat:
            return int(cat.conn.execute("SELECT COUNT(*) FROM alignment_runs").fetchone()[0])

    deadline = time.monotonic() + 60
    while runs_so_far() < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    during = runs_so_far()
    cap.stop()
    assert during >= 3  # indexed while recording, not only at the end
    with Catalog(data_dir / "catalog.sqlite", "t-02") as cat:
        runs = [dict(r) for r in cat.conn.execute("SELECT * FROM alignment_runs ORDER BY created_utc, rowid")]
        rows = [dict(r) for r in cat.conn.execute("SELECT * FROM alignments")]
        ir = {
            r[0]: json.loads(r[1])
            for r in cat.conn.execute("SELECT record_id, meta_json FROM captures WHERE stream = 'ir'")
        }
        vis = {
            r[0]: json.loads(r[1])
            for r in cat.conn.execute("SELECT record_id, meta_json FROM captures WHERE stream = 'vis'")
        }
    assert {r["session_id"] for r in runs} == {session}
    bounds = [(r["t_from_mono_ns"], r["t_to_mono_ns"]) for r in runs]
    assert bounds[0][0] is None and bounds[-1][1] is None  # from the beginning to the end
    assert all(a[1] == b[0] and a[1] is not None for a, b in itertools.pairwise(bounds))  # no gap, no overlap
    pairs = [r for r in rows if r["kind"] == "frame_frame"]
    assert sorted(r["record_a"] for r in pairs) == sorted(ir)  # every IR frame once, in exactly one window
    for r in pairs:
        run = next(
            b for b in bounds if (b[0] is None or b[0] <= r["t_mono_ns"]) and (b[1] is None or r["t_mono_ns"] < b[1])
        )
        assert runs[bounds.index(run)]["run_id"] == r["run_id"]
    matched = [r for r in pairs if r["matched"]]
    assert len(matched) >= 0.9 * len(pairs)
    errors = [
        abs(r["offset_ns"] - (vis[r["record_b"]]["t_truth_ns"] - ir[r["record_a"]]["t_truth_ns"])) / 1e6
        for r in matched
    ]
    assert np.percentile(errors, 99) <= 2.0
    # Audio and sensor partners are found across window edges too (the lag waits for them).
    assert (
        sum(1 for r in rows if r["kind"] == "frame_audio" and r["matched"])
        >= 0.9 * sum(1 for r in rows if r["kind"] == "frame_audio")
        > 0
    )
    assert any(r["kind"] == "frame_sensor" and r["matched"] for r in rows)


def test_a_resumed_session_is_indexed_on_from_where_the_last_process_stopped(tmp_path: Path) -> None:
    """A booth that quits with its session open and comes back: the second process's windows go on
    from the first one's last window, so no frame is indexed twice or left out."""
    config = parse_config({"agent": {"device_id": "dev", "data_dir": str(tmp_path)}})
    clock = Clock(probe_daemons=False)

    def process() -> Recording:
        writer = Writer(tmp_path / "catalog.sqlite", "dev", tmp_path, clock, queue_size=10)
        recording = Recording(
            config, open_catalog=lambda: Catalog(tmp_path / "catalog.sqlite", "dev"), clock=clock, writer=writer
        )
        recording.start(background_session=False)
        return recording

    def frames(cat: Catalog, session: str, t0: int, first: int, n: int) -> list[str]:
        ms = 1_000_000  # visible at 10 fps, IR at 5 fps
        for i in range(first, first + n):
            _frame(cat, "vis", "visible", t0 + (i - first) * 100 * ms, session, i)
        return [
            _frame(cat, "ir", "thermal", t0 + (i - first) * 100 * ms + ms, session, i)
            for i in range(first, first + n, 2)
        ]

    first = process()
    session = first.sessions.start_session(kind="booth").session_id
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        ir = frames(cat, session, time.monotonic_ns() - 2_000_000_000, 0, 10)  # captured in the last 2 s
        first.housekeeping(cat)  # starts watching it
    first.stop()  # quits with the session open: a closed window up to now
    time.sleep(0.01)
    second = process()
    second.sessions.resume_session(session)
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        ir += frames(cat, session, time.monotonic_ns(), 10, 10)  # captured by the second process
        second.housekeeping(cat)
    second.sessions.end_session(session)
    second.stop()
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        runs = [dict(r) for r in cat.conn.execute("SELECT * FROM alignment_runs ORDER BY created_utc, rowid")]
        indexed = [r[0] for r in cat.conn.execute("SELECT record_a FROM alignments WHERE kind = 'frame_frame'")]
    assert [(r["t_from_mono_ns"] is None, r["t_to_mono_ns"] is None) for r in runs] == [(True, False), (False, True)]
    assert runs[0]["t_to_mono_ns"] == runs[1]["t_from_mono_ns"]
    assert sorted(indexed) == sorted(ir)  # each IR frame once
