"""An analyzer result triggers a capture on another stream, end to end in the daemon, checked
against the simulators' ground truth.

The microphone twin's speech stand-in is on for 2 s and off for 1 s, every 3 s of device time.
The daemon screens each 0.5 s segment; a rule on the level analyzer (``rms_dbfs``) fires when the
level rises, i.e. at each speech onset (3.0 s, 6.0 s, ...), and opens a window on the camera — a
result that reaches the trigger bus only after the segment has ended and been screened, about the
moment the segment began. (Silero VAD does not take the twin's band-limited noise for speech, so
the level analyzer stands in for it here; the VAD's speech onsets date triggers the same way, see
``test_triggers.test_analyzer_results_are_dated_at_the_finding``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

from agent.config import parse_config
from agent.daemon import Agent

RATE = 48000
FPS = 20
PERIOD_NS = 1e9 / FPS
PRE_S, POST_S = 0.5, 0.3
CYCLE = 3 * RATE  # samples from one speech onset to the next


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("trig") / "data"
    config = parse_config(
        {
            "agent": {"device_id": "trig-01", "data_dir": str(data)},
            "devices": [
                {
                    "name": "mic",
                    "type": "sim-microphone",
                    "channels": 1,
                    "speech": "band-noise",
                    "tone_interval_s": 3600,
                },
                {"name": "cam", "type": "sim-camera", "width": 64, "height": 48, "fps": FPS},
            ],
            "capture": {
                "mic": {"policy": "segment", "segment_s": 0.5, "qc_profile": "level"},
                "cam": {
                    "policy": "triggered",
                    "pre_s": PRE_S,
                    "post_s": POST_S,
                    "triggers": [
                        {
                            "source": "analyzer",
                            "stream": "mic",
                            "field": "rms_dbfs",
                            "above": -40.0,
                            "hysteresis": 5.0,
                            "delay_s": 4.0,
                        }
                    ],
                },
            },
            "qc": {
                "model_dir": str(model_dir),
                "profiles": {"level": {"modality": "audio", "use_vad": False, "use_dnsmos": False}},
            },
            "sync": {"enabled": False},
        }
    )
    agent = Agent(config)
    agent.start()
    try:

        def clips() -> list[Any]:
            with agent.catalog() as cat:
                return list(cat.conn.execute("SELECT meta_json FROM captures WHERE stream = 'cam' AND kind = 'clip'"))

        wait_until("clips of three speech onsets (0 s, 3 s, 6 s)", lambda: len(clips()) >= 3, timeout=90)
    finally:
        agent.stop()
    with agent.catalog() as cat:
        caps = {
            r["record_id"]: {**dict(r), "meta": json.loads(r["meta_json"])}
            for r in cat.conn.execute("SELECT * FROM captures")
        }
        triggers = [json.loads(r[0]) for r in cat.conn.execute("SELECT detail_json FROM events WHERE kind = 'trigger'")]
    return {"caps": caps, "triggers": triggers}


def onset_truth_ns(segment: dict[str, Any]) -> int:
    """True monotonic time of the segment's first sample, from the twin's block ground truth."""
    block = segment["meta"]["first_block"]
    return round(block["t_truth_ns"] + (segment["meta"]["sample_index_first"] - block["device_time"]) * 1e9 / RATE)


def test_each_speech_onset_triggers_once_dated_at_the_onset(recorded: dict[str, Any]) -> None:
    fired = [t for t in recorded["triggers"] if t["source"] == "analyzer"]
    assert len(fired) >= 3
    segments = [recorded["caps"][t["capture_id"]] for t in fired]
    # Crossing, not level: one trigger per onset, none while the speech goes on.
    assert [s["meta"]["sample_index_first"] for s in segments[:3]] == [0, CYCLE, 2 * CYCLE]
    for trig, segment in zip(fired[1:], segments[1:], strict=False):
        assert trig["streams"] == ["cam"] and trig["rule"]["field"] == "rms_dbfs" and trig["value"] > -40
        assert abs(trig["t_mono_ns"] - onset_truth_ns(segment)) <= 2_000_000  # 2 ms


def test_the_window_holds_pre_s_before_and_post_s_after_the_onset(recorded: dict[str, Any]) -> None:
    caps = recorded["caps"]
    fired = [t for t in recorded["triggers"] if t["source"] == "analyzer"]
    for trig in fired[1:3]:  # the first onset is the stream's start: nothing can precede it
        t = trig["t_mono_ns"]
        (clip,) = [c for c in caps.values() if c["kind"] == "clip" and c["meta"].get("trigger") == trig["trigger_id"]]
        frames = sorted(
            (c for c in caps.values() if c["kind"] == "frame" and c["meta"].get("trigger") == trig["trigger_id"]),
            key=lambda c: c["meta"]["frame_index"],
        )
        truth = [f["meta"]["t_truth_ns"] for f in frames]
        meta = clip["meta"]
        assert "preroll_missing_s" not in meta  # delay_s covered the segment and its screening
        assert meta["window_start_mono_ns"] == t - PRE_S * 1e9 and meta["window_end_mono_ns"] == t + POST_S * 1e9
        assert truth[0] <= t <= truth[-1]  # the trigger time is inside what was captured
        slack = 30e6  # a frame is stamped a little after its true exposure on a loaded machine
        assert t - PRE_S * 1e9 - slack <= truth[0] < t - PRE_S * 1e9 + PERIOD_NS
        assert t + POST_S * 1e9 - PERIOD_NS - slack < truth[-1] <= t + POST_S * 1e9
        indices = [f["meta"]["frame_index"] for f in frames]
        assert indices == list(range(indices[0], indices[0] + len(indices)))  # nothing missing
        assert abs(len(frames) - (PRE_S + POST_S) * FPS) <= 1
        assert (meta["frames"], meta["frames_missing"], clip["seq_first"], clip["seq_last"]) == (
            len(frames),
            0,
            frames[0]["seq_first"],
            frames[-1]["seq_first"],
        )
