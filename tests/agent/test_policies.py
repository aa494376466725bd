"""The ``interval`` policy keeps one frame per interval on a schedule, whatever the frame rate."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from agent.capture.policies import IntervalFrames


def kept_times(stamps: list[int], interval_s: float) -> list[int]:
    kept: list[int] = []
    rec: Any = SimpleNamespace(
        policy=SimpleNamespace(interval_s=interval_s),
        frame_job=lambda sample, _ctx: sample.t_mono_ns,
        submit=kept.append,
    )
    policy = IntervalFrames(rec)
    for t in stamps:
        policy.feed(SimpleNamespace(t_mono_ns=t))  # type: ignore[arg-type]
    return kept


def camera(fps: float, seconds: float, *, seed: int = 0, late_ms: float = 20.0) -> list[int]:
    """Host stamps of a camera: on its own clock, each delivered up to ``late_ms`` late (never early)."""
    n = int(fps * seconds)
    lateness = np.random.default_rng(seed).exponential(late_ms / 4, n).clip(0, late_ms)
    return [round((i / fps + late / 1000) * 1e9) for i, late in enumerate(lateness)]


def test_a_9_fps_camera_keeps_one_frame_a_second_in_step() -> None:
    """Nine 9 fps periods are a hair under 1 s: the schedule keeps every ninth frame, it does not
    drift to every tenth (which kept a frame every 1.11 s, out of step with a 15 fps camera)."""
    kept = kept_times(camera(9, 120), 1.0)
    assert len(kept) in (120, 121)
    due = np.arange(len(kept)) * 1e9
    assert np.abs(np.array(kept) - due).max() < 1e9 / 9  # each within a frame period of its second
    visible = kept_times(camera(15, 120, seed=1), 1.0)
    skew = np.abs(np.array(kept[: len(visible)]) - np.array(visible[: len(kept)]))
    assert np.percentile(skew, 99) < 1e9 / 9, np.percentile(skew, 99)


def test_after_a_gap_the_schedule_restarts_without_a_burst() -> None:
    stamps = camera(10, 10) + [t + 15 * 10**9 for t in camera(10, 10, seed=2)]  # a 5 s stall
    kept = np.array(kept_times(stamps, 1.0))
    assert np.diff(kept).min() > 0.85e9  # never two frames in one interval, also after the gap
    assert 19 <= len(kept) <= 21
