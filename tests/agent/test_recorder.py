"""Capture policies and formats, fed with samples whose timing the test controls (real SQLite, real files)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import soundfile as sf

from agent.capture.clock import Clock
from agent.capture.environment import LatestReadings
from agent.capture.recorder import StreamRecorder
from agent.capture.triggers import TriggerBus, TriggerRule
from agent.catalog.db import Catalog
from agent.catalog.writer import Writer
from agent.config import CaptureSettings
from drivers import Sample

RATE = 8000
BLOCK = 256


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    clock = Clock(probe_daemons=False)
    writer = Writer(tmp_path / "catalog.sqlite", "dev", tmp_path, clock, queue_size=1000)
    writer.start()
    yield {"clock": clock, "writer": writer, "dir": tmp_path}
    writer.stop()


def captures(tmp_path: Path, stream: str) -> list[dict[str, Any]]:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        rows = cat.conn.execute(
            "SELECT * FROM captures WHERE stream = ? ORDER BY t_start_mono_ns", (stream,)
        ).fetchall()
        return [{**dict(r), "meta": json.loads(r["meta_json"])} for r in rows]


def audio_blocks(n: int, t0: int, channels: int = 2, start_index: int = 0) -> list[Sample]:
    out = []
    for k in range(n):
        idx = start_index + k * BLOCK
        data = (np.arange(idx, idx + BLOCK)[:, None] % 30000 + np.arange(channels)[None, :] * 7).astype(np.int16)
        t = t0 + round(idx * 1e9 / RATE)
        out.append(Sample("mic", "audio", k, t, idx, data, {"clock_segment": 0}))
    return out


def frame(i: int, t: int, stream: str = "cam") -> Sample:
    img = np.full((48, 64, 3), i % 256, dtype=np.uint8)
    return Sample(stream, "visible", i, t, i, img, {"frame_index": i})


def test_segments_are_streamed_exactly_and_contiguously(rig: dict[str, Any]) -> None:
    policy = CaptureSettings(policy="segment", segment_s=0.5)  # 4000 frames: 15.6 blocks
    rec = StreamRecorder("mic", "audio", policy, {"sample_rate": RATE}, rig["clock"], rig["writer"])
    blocks = audio_blocks(40, time.monotonic_ns())
    for b in blocks:
        rec.feed(b)
    rec.flush()
    rig["writer"].stop()
    caps = captures(rig["dir"], "mic")
    assert [c["meta"]["frames"] for c in caps] == [4000, 4000, 40 * BLOCK - 8000]
    whole = np.concatenate([b.payload for b in blocks if isinstance(b.payload, np.ndarray)])
    got = np.concatenate([sf.read(str(rig["dir"] / c["path"]), dtype="int16", always_2d=True)[0] for c in caps])
    assert np.array_equal(got, whole)
    assert [c["meta"]["sample_index_first"] for c in caps] == [0, 4000, 8000]
    assert all(c["meta"]["arrival_points"] for c in caps)
    assert not list(rig["dir"].rglob(".*.part*"))  # parts and sidecars are gone once committed


def test_a_sample_counter_jump_starts_a_new_segment(rig: dict[str, Any]) -> None:
    policy = CaptureSettings(policy="segment", segment_s=10.0)
    rec = StreamRecorder("mic", "audio", policy, {"sample_rate": RATE}, rig["clock"], rig["writer"])
    t0 = time.monotonic_ns()
    for b in audio_blocks(5, t0) + audio_blocks(5, t0, start_index=20 * BLOCK):  # 15 blocks never arrived
        rec.feed(b)
    rec.flush()
    rig["writer"].stop()
    caps = captures(rig["dir"], "mic")
    assert [(c["meta"]["sample_index_first"], c["meta"]["frames"]) for c in caps] == [
        (0, 5 * BLOCK),
        (20 * BLOCK, 5 * BLOCK),
    ]


def test_triggered_frames_keep_the_pre_and_post_window(rig: dict[str, Any]) -> None:
    policy = CaptureSettings(policy="triggered", pre_s=0.3, post_s=0.2)
    rec = StreamRecorder("cam", "visible", policy, {"fps": 10}, rig["clock"], rig["writer"])
    t0 = time.monotonic_ns()
    period = 100_000_000
    for i in range(10):
        rec.feed(frame(i, t0 + i * period))
    bus = TriggerBus()
    bus.subscribe("cam", rec.trigger)
    trig = bus.fire("operator", "look at this", t_mono_ns=t0 + 9 * period)
    for i in range(10, 20):
        rec.feed(frame(i, t0 + i * period))
    rec.flush()
    rig["writer"].stop()
    caps = captures(rig["dir"], "cam")
    frames = [c for c in caps if c["kind"] == "frame"]
    assert [c["seq_first"] for c in frames] == [6, 7, 8, 9, 10, 11]  # 0.3 s before, 0.2 s after
    assert all(c["meta"]["trigger"] == trig.trigger_id for c in caps)
    (clip,) = [c for c in caps if c["kind"] == "clip"]  # the window as one unit, like an audio clip
    assert clip["path"] is None and (clip["seq_first"], clip["seq_last"]) == (6, 11)
    assert clip["meta"]["frames"] == 6 and clip["meta"]["frames_missing"] == 0
    assert clip["meta"]["window_start_mono_ns"] == t0 + 6 * period


def test_a_sensor_threshold_opens_an_audio_clip_once(rig: dict[str, Any]) -> None:
    fired = []
    bus = TriggerBus(record=fired.append)
    rule = TriggerRule(source="sensor", stream="env", field="temperature_c", above=30.0, hysteresis=1.0)
    bus.add_rule(rule, "mic")
    live = LatestReadings()
    mic = StreamRecorder(
        "mic",
        "audio",
        CaptureSettings(policy="triggered", pre_s=0.1, post_s=0.1),
        {"sample_rate": RATE},
        rig["clock"],
        rig["writer"],
    )
    bus.subscribe("mic", mic.trigger)
    env = StreamRecorder(
        "env", "sensor", CaptureSettings(policy="readings"), {}, rig["clock"], rig["writer"], live=live, triggers=bus
    )
    t0 = time.monotonic_ns()
    blocks = audio_blocks(50, t0)  # 1.6 s of audio; the last reading comes at block 39
    temps = [25, 29, 31, 32, 29.5, 31, 28, 31]  # crosses at 31, re-arms only at 28 (hysteresis 1)
    for k, b in enumerate(blocks):
        mic.feed(b)
        if k % 5 == 4 and k // 5 < len(temps):
            j = k // 5
            env.feed(Sample("env", "sensor", j, b.t_mono_ns, j, {"temperature_c": float(temps[j])}, {}))
    mic.flush()
    env.flush()
    rig["writer"].stop()
    assert len(fired) == 2
    assert "temperature_c > 30" in fired[0].reason
    clips = captures(rig["dir"], "mic")
    assert [c["kind"] for c in clips] == ["clip", "clip"]
    assert [c["meta"]["trigger"] for c in clips] == [f.trigger_id for f in fired]
    for clip in clips:  # pre 0.1 s + post 0.1 s around the reading, at sample precision
        assert abs(clip["meta"]["frames"] - 0.2 * RATE) <= 2
    assert live.snapshot()["env"]["temperature_c"]["value"] == 31.0


def test_formats_jpeg_quality_png_and_16_bit_thermal(rig: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    thermal = rng.integers(27000, 33000, (120, 160), dtype=np.uint16)
    t = time.monotonic_ns()
    for name, fmt, q in (("lo", "jpeg", 40), ("hi", "jpeg", 95), ("png", "png", 92)):
        rec = StreamRecorder(
            name,
            "visible",
            CaptureSettings(policy="every", image_format=fmt, jpeg_quality=q),
            {},
            rig["clock"],
            rig["writer"],
        )
        rec.feed(Sample(name, "visible", 0, t, 0, img, {}))
    ir = StreamRecorder("ir", "thermal", CaptureSettings(policy="every"), {}, rig["clock"], rig["writer"])
    ir.feed(Sample("ir", "thermal", 0, t, 0, thermal, {}))
    rig["writer"].stop()
    lo, hi, png, th = (captures(rig["dir"], s)[0] for s in ("lo", "hi", "png", "ir"))
    assert lo["media_type"] == hi["media_type"] == "image/jpeg"
    assert lo["size"] < hi["size"]
    back = cv2.imread(str(rig["dir"] / png["path"]), cv2.IMREAD_UNCHANGED)
    assert png["media_type"] == "image/png" and np.array_equal(back, img)
    raw = cv2.imread(str(rig["dir"] / th["path"]), cv2.IMREAD_UNCHANGED)
    assert th["media_type"] == "image/png" and raw.dtype == np.uint16 and np.array_equal(raw, thermal)
    assert th["meta"]["clock"]["source"] == "ntp_adjtime"  # every record carries its clock health


def test_a_full_writer_queue_counts_the_drop(tmp_path: Path) -> None:
    clock = Clock(probe_daemons=False)
    writer = Writer(tmp_path / "catalog.sqlite", "dev", tmp_path, clock, queue_size=2)  # not started
    rec = StreamRecorder("cam", "visible", CaptureSettings(policy="every"), {}, clock, writer)
    t = time.monotonic_ns()
    for i in range(5):
        rec.feed(frame(i, t + i))
    assert writer.take_drops() == {"cam": 3}
    writer.start()
    writer.stop()
    assert len(captures(tmp_path, "cam")) == 2
