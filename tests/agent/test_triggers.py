"""Triggered windows fed with samples whose timing the test controls: late analyzer results, the
ring buffer that waits for them, and the rules a configuration may hold (real SQLite, real files)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.capture.clock import Clock
from agent.capture.recorder import StreamRecorder
from agent.capture.recording import Recording
from agent.capture.triggers import TriggerBus, TriggerRule, analyzer_event_ns, hold_s
from agent.catalog.db import Catalog
from agent.catalog.writer import Writer
from agent.config import CaptureSettings, parse_config
from agent.errors import ConfigError
from drivers import Sample

PERIOD = 100_000_000  # 10 fps


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    clock = Clock(probe_daemons=False)
    writer = Writer(tmp_path / "catalog.sqlite", "dev", tmp_path, clock, queue_size=1000)
    writer.start()
    yield {"clock": clock, "writer": writer, "dir": tmp_path}
    writer.stop()


def captures(tmp_path: Path, stream: str) -> list[dict[str, Any]]:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        rows = cat.conn.execute("SELECT * FROM captures WHERE stream = ? ORDER BY t_start_mono_ns, kind", (stream,))
        return [{**dict(r), "meta": json.loads(r["meta_json"])} for r in rows]


def frame(i: int, t: int) -> Sample:
    return Sample("cam", "visible", i, t, i, np.full((24, 32, 3), i % 256, dtype=np.uint8), {"frame_index": i})


def analyzer_rule(delay_s: float) -> TriggerRule:
    return TriggerRule(source="analyzer", stream="mic", field="rms_dbfs", above=-40.0, delay_s=delay_s)


def camera(rig: dict[str, Any], delay_s: float) -> StreamRecorder:
    policy = CaptureSettings(policy="triggered", pre_s=0.3, post_s=0.2, triggers=(analyzer_rule(delay_s),))
    return StreamRecorder("cam", "visible", policy, {"fps": 10}, rig["clock"], rig["writer"])


def windows(rig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per trigger: the seqs of its frames and its clip row."""
    rig["writer"].stop()
    out: dict[str, dict[str, Any]] = {}
    for c in captures(rig["dir"], "cam"):
        entry = out.setdefault(c["meta"]["trigger"], {"frames": [], "clip": None})
        if c["kind"] == "frame":
            entry["frames"].append(c["seq_first"])
        else:
            entry["clip"] = c
    return out


def test_the_ring_waits_delay_s_for_a_late_analyzer_result(rig: dict[str, Any]) -> None:
    rec = camera(rig, delay_s=2.0)
    bus = TriggerBus()
    bus.add_rule(analyzer_rule(2.0), "cam")
    bus.subscribe("cam", rec.trigger)
    t0 = time.monotonic_ns()
    for i in range(30):  # 3 s of frames
        rec.feed(frame(i, t0 + i * PERIOD))
    # QC screened the capture of t0 + 1 s only now, 1.9 s later: the window is still in memory.
    (trig,) = bus.check_metrics("mic", {"rms_dbfs": -20.0}, t0 + 10 * PERIOD)
    for i in range(30, 35):
        rec.feed(frame(i, t0 + i * PERIOD))
    rec.flush()
    got = windows(rig)[trig.trigger_id]
    assert got["frames"] == [7, 8, 9, 10, 11, 12]  # [t - 0.3 s, t + 0.2 s], all of it
    clip = got["clip"]
    assert (clip["kind"], clip["seq_first"], clip["seq_last"], clip["meta"]["frames"]) == ("clip", 7, 12, 6)
    assert "preroll_missing_s" not in clip["meta"]


def test_a_result_later_than_delay_s_says_what_is_missing(rig: dict[str, Any]) -> None:
    rec = camera(rig, delay_s=0.0)  # the ring keeps pre_s (and two frame periods: 0.5 s)
    bus = TriggerBus()
    bus.subscribe("cam", rec.trigger)
    t0 = time.monotonic_ns()
    for i in range(30):
        rec.feed(frame(i, t0 + i * PERIOD))
    trig = bus.fire("analyzer", "late", t_mono_ns=t0 + 24 * PERIOD)  # wants [2.1 s, 2.6 s]; 2.4 s is the oldest held
    rec.flush()
    clip = windows(rig)[trig.trigger_id]
    assert clip["frames"] == [24, 25, 26]
    assert clip["clip"]["meta"]["preroll_missing_s"] == pytest.approx(0.2, abs=1e-3)


def test_a_late_trigger_about_an_earlier_moment_gets_its_own_window(rig: dict[str, Any]) -> None:
    rec = camera(rig, delay_s=3.0)
    bus = TriggerBus()
    bus.subscribe("cam", rec.trigger)
    t0 = time.monotonic_ns()
    for i in range(20):
        rec.feed(frame(i, t0 + i * PERIOD))
    now = bus.fire("operator", "now", t_mono_ns=t0 + 19 * PERIOD)  # open: [1.6 s, 2.1 s]
    earlier = bus.fire("analyzer", "earlier", t_mono_ns=t0 + 5 * PERIOD)  # [0.2 s, 0.7 s], not an extension
    for i in range(20, 25):
        rec.feed(frame(i, t0 + i * PERIOD))
    rec.flush()
    got = windows(rig)
    assert got[now.trigger_id]["frames"] == [16, 17, 18, 19, 20, 21]
    assert got[earlier.trigger_id]["frames"] == [2, 3, 4, 5, 6, 7]
    assert "extended_by" not in got[now.trigger_id]["clip"]["meta"]


def test_analyzer_results_are_dated_at_the_finding() -> None:
    speech = [
        {"kind": "trim", "t_start_s": 0.4},
        {"kind": "speech_segment", "t_start_s": 2.5},
        {"kind": "speech_segment", "t_start_s": 0.65},
    ]
    assert analyzer_event_ns(10_000_000_000, speech) == 10_650_000_000  # the first speech, not the trim
    assert analyzer_event_ns(10_000_000_000, []) == 10_000_000_000  # a frame: its capture time
    sensor = TriggerRule(source="sensor", stream="env", field="t", above=1.0, delay_s=30.0)
    assert hold_s([sensor, analyzer_rule(4.0), analyzer_rule(2.0)]) == 4.0  # sensor rules fire at once


def test_a_capture_from_before_this_process_triggers_nothing(tmp_path: Path) -> None:
    config = parse_config(
        {
            "agent": {"device_id": "dev", "data_dir": str(tmp_path)},
            "devices": [
                {"name": "mic", "type": "sim-microphone"},
                {"name": "cam", "type": "sim-camera"},
            ],
            "capture": {
                "mic": {"policy": "segment", "segment_s": 1.0},
                "cam": {"policy": "triggered", "triggers": [analyzer_rule(3.0).model_dump()]},
            },
        }
    )
    clock = Clock(probe_daemons=False)
    writer = Writer(tmp_path / "catalog.sqlite", "dev", tmp_path, clock, queue_size=10)
    recording = Recording(
        config, open_catalog=lambda: Catalog(tmp_path / "catalog.sqlite", "dev"), clock=clock, writer=writer
    )
    # QC resuming after a restart screens a capture of the previous run (maybe of another boot).
    assert recording.on_verdict("mic", {"rms_dbfs": -20.0}, recording.started_ns - 5_000_000_000) == []
    (trig,) = recording.on_verdict("mic", {"rms_dbfs": -20.0}, time.monotonic_ns(), detail={"capture_id": "c1"})
    assert trig.source == "analyzer" and trig.detail["capture_id"] == "c1"
    assert trig.streams == ("cam",)


def test_analyzer_rules_are_checked_against_what_they_watch(tmp_path: Path) -> None:
    def config(rule: dict[str, Any], mic: dict[str, Any]) -> None:
        parse_config(
            {
                "agent": {"device_id": "dev", "data_dir": str(tmp_path)},
                "devices": [
                    {"name": "mic", "type": "sim-microphone"},
                    {"name": "env", "type": "sim-serial"},
                    {"name": "cam", "type": "sim-camera"},
                ],
                "capture": {"mic": mic, "cam": {"policy": "triggered", "triggers": [rule]}},
            }
        )

    rule = {"source": "analyzer", "stream": "mic", "field": "speech_s", "above": 0.5}
    with pytest.raises(ConfigError, match=r"delay_s: 'mic' is screened only after each segment of 30 s.*at least 32"):
        config(rule, {"policy": "segment", "segment_s": 30.0})
    config({**rule, "delay_s": 32.0}, {"policy": "segment", "segment_s": 30.0})
    config(rule, {"policy": "segment", "segment_s": 4.0})  # the default 5 s covers a 4 s segment
    with pytest.raises(ConfigError, match="'env' is a sensor: use source = 'sensor'"):
        config({**rule, "stream": "env"}, {"policy": "segment", "segment_s": 4.0})
