"""Booth-style takes on camera streams: the frames between start and stop (padded by pre_s and
post_s) are captured as one take per camera, checked against the camera twins' ground truth."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture
from agent.catalog.db import Catalog
from agent.config import parse_config

PRE_S, POST_S = 0.3, 0.2
FPS = {"cam": 20.0, "ir": 9.0}


@pytest.fixture(scope="module")
def booth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("take") / "d"
    config = parse_config(
        {
            "agent": {"device_id": "booth-cam", "site": "lab", "station": "booth-1", "data_dir": str(data)},
            "devices": [
                {"name": "cam", "type": "sim-camera", "width": 64, "height": 48, "fps": FPS["cam"]},
                {"name": "ir", "type": "sim-thermal", "width": 80, "height": 60, "fps": FPS["ir"]},
                {"name": "mics", "type": "sim-microphone", "channels": 2},
            ],
            "capture": {
                name: {"policy": "take", "pre_s": PRE_S, "post_s": POST_S, "image_format": "png"}
                for name in ("cam", "ir", "mics")
            },
        }
    )
    cap = LocalCapture(config, clock=Clock(probe_daemons=False))
    cap.start(background_session=False)
    assert cap.wait_open(30)
    time.sleep(0.8)  # a full pre-roll in every ring
    sessions = cap.sessions
    info = sessions.start_session(kind="booth")
    take = sessions.start_take(info.session_id, "item-1", prompt="one")
    time.sleep(1.2)
    first = sessions.stop_take(take)
    time.sleep(0.6)  # frames between the takes belong to neither
    retake = sessions.retake(info.session_id, "item-1", prompt="one")
    time.sleep(0.7)
    second = sessions.stop_take(retake)
    sessions.end_session(info.session_id)
    time.sleep(0.5)
    cap.stop()
    with Catalog(data / "catalog.sqlite", "booth-cam") as cat:
        caps = {
            r["record_id"]: {**dict(r), "meta": json.loads(r["meta_json"])}
            for r in cat.conn.execute("SELECT * FROM captures")
        }
        takes = {r["take_id"]: dict(r) for r in cat.conn.execute("SELECT * FROM takes")}
        runs = [
            dict(r) for r in cat.conn.execute("SELECT * FROM alignment_runs WHERE session_id = ?", (info.session_id,))
        ]
        rows = [dict(r) for r in cat.conn.execute("SELECT * FROM alignments")]
    yield {
        "caps": caps,
        "takes": takes,
        "first": first,
        "second": second,
        "data": data,
        "losses": cap.losses(),
        "runs": runs,
        "rows": rows,
    }


def frames_of(caps: dict[str, dict[str, Any]], stream: str, take_id: str) -> list[dict[str, Any]]:
    got = [c for c in caps.values() if c["stream"] == stream and c["kind"] == "frame" and c["meta"]["take"] == take_id]
    return sorted(got, key=lambda c: c["meta"]["frame_index"])


def test_both_takes_are_done_with_one_capture_per_stream(booth: dict[str, Any]) -> None:
    first, second = booth["first"], booth["second"]
    assert first.status == "done" and second.status == "done", (first.errors, second.errors)
    for result in (first, second):
        assert {s: len(ids) for s, ids in result.captures.items()} == {"cam": 1, "ir": 1, "mics": 1}
        row = booth["takes"][result.take_id]
        assert json.loads(row["captures_json"]) == result.captures
    caps = booth["caps"]
    for stream in ("cam", "ir"):
        one, two = caps[first.captures[stream][0]], caps[second.captures[stream][0]]
        assert one["kind"] == two["kind"] == "take" and one["path"] is None  # a summary, not a file
        assert two["supersedes"] == one["record_id"] and one["supersedes"] is None  # a retake, nothing overwritten
        assert (one["take"], two["take"], one["item_id"]) == (1, 2, "item-1")
        assert one["meta"]["prompt"] == "one" and one["meta"]["take"] == first.take_id
    assert all(sum(v.values()) == 0 for v in booth["losses"].values()), booth["losses"]


@pytest.mark.parametrize("stream", ["cam", "ir"])
def test_the_take_holds_exactly_the_frames_from_start_minus_pre_to_stop_plus_post(
    booth: dict[str, Any], stream: str
) -> None:
    caps, period = booth["caps"], 1e9 / FPS[stream]
    for result in (booth["first"], booth["second"]):
        row = booth["takes"][result.take_id]
        start, stop = row["t_start_mono_ns"] - PRE_S * 1e9, row["t_stop_mono_ns"] + POST_S * 1e9
        frames = frames_of(caps, stream, result.take_id)
        stamps = [f["t_start_mono_ns"] for f in frames]
        truth = [f["meta"]["t_truth_ns"] for f in frames]
        assert all(start <= t <= stop for t in stamps)  # nothing from outside the take
        # ...and nothing from inside it is missing: consecutive frame indices, edges within a period.
        indices = [f["meta"]["frame_index"] for f in frames]
        assert indices == list(range(indices[0], indices[0] + len(indices)))
        slack = 30e6  # stamping lag of a frame behind its true exposure on a loaded machine
        assert start - slack <= truth[0] < start + period and stop - period - slack < truth[-1] <= stop
        assert abs(len(frames) - (stop - start) / period) <= 1.5
        assert all(f["take"] == result.take_no and f["item_id"] == "item-1" for f in frames)
        summary = caps[result.captures[stream][0]]
        meta = summary["meta"]
        assert (meta["frames"], meta["frames_missing"], meta["frames_failed"]) == (len(frames), 0, 0)
        assert (summary["seq_first"], summary["seq_last"]) == (frames[0]["seq_first"], frames[-1]["seq_first"])
        assert (summary["t_start_mono_ns"], summary["t_end_mono_ns"]) == (stamps[0], stamps[-1])
        assert (meta["window_start_mono_ns"], meta["window_end_mono_ns"]) == (start, stop)


def test_frames_between_takes_are_not_kept_and_files_read_back(booth: dict[str, Any]) -> None:
    caps = booth["caps"]
    first, second = booth["first"], booth["second"]
    for stream in ("cam", "ir"):
        a, b = frames_of(caps, stream, first.take_id), frames_of(caps, stream, second.take_id)
        kept = [c for c in caps.values() if c["stream"] == stream and c["kind"] == "frame"]
        assert len(kept) == len(a) + len(b)
        assert b[0]["meta"]["frame_index"] - a[-1]["meta"]["frame_index"] > 1  # a gap: the pause
    cam = frames_of(caps, "cam", first.take_id)[0]
    img = cv2.imread(str(booth["data"] / cam["path"]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 3)
    ir = frames_of(caps, "ir", first.take_id)[0]
    raw = cv2.imread(str(booth["data"] / ir["path"]), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (60, 80)


def test_the_booth_session_is_indexed_frames_against_frames_and_the_take_audio(booth: dict[str, Any]) -> None:
    (run,) = booth["runs"]  # a short booth session: one window, indexed once it ended
    assert run["t_from_mono_ns"] is None and run["t_to_mono_ns"] is None
    caps, rows = booth["caps"], [r for r in booth["rows"] if r["run_id"] == run["run_id"]]
    pairs = [r for r in rows if r["kind"] == "frame_frame"]
    ir = [c for c in caps.values() if c["stream"] == "ir" and c["kind"] == "frame"]
    assert len(pairs) == len(ir) and sum(r["matched"] for r in pairs) >= 0.9 * len(pairs)  # not the summaries
    to_audio = [r for r in rows if r["kind"] == "frame_audio" and r["stream_a"] == "cam"]
    assert to_audio and sum(r["matched"] for r in to_audio) >= 0.9 * len(to_audio)
    takes = {caps[c]["record_id"] for r in (booth["first"], booth["second"]) for c in r.captures["mics"]}
    assert {r["record_b"] for r in to_audio if r["matched"]} == takes  # each frame into its own take's WAV
