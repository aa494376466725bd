"""Paired visible + IR frames (``pair_with``) against the simulators' ground truth."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture as Capture
from agent.capture.pairing import FrameClock
from agent.catalog.db import Catalog
from agent.config import parse_config
from agent.errors import ConfigError
from agent.sessions.mcap import export_session
from drivers import Sample

IR_FPS = 9
VIS_FPS = 15


def _config(data_dir: Path, ir: dict[str, Any], vis: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "agent": {"device_id": "p-01", "data_dir": str(data_dir)},
        "devices": [
            {"name": "vis", "type": "sim-camera", "width": 160, "height": 120, "fps": VIS_FPS},
            {"name": "ir", "type": "sim-thermal", "width": 80, "height": 60, "fps": IR_FPS},
            {"name": "mic", "type": "sim-microphone", "channels": 1},
        ],
        "capture": {"vis": vis or {"policy": "interval", "interval_s": 1.0, "image_format": "png"}, "ir": ir},
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """~30 s of both cameras on a 1 s interval, IR paired with visible."""
    data_dir = tmp_path_factory.mktemp("pair") / "d"
    config = parse_config(_config(data_dir, {"policy": "interval", "interval_s": 1.0, "pair_with": "vis"}))
    cap = Capture(config, clock=Clock(probe_daemons=False))
    cap.start()
    assert cap.wait_open(30)
    time.sleep(30)
    session = cap.recording.background
    assert session is not None
    cap.stop()
    with Catalog(data_dir / "catalog.sqlite", "p-01") as cat:
        frames = {
            r[0]: (r[1], json.loads(r[2]))
            for r in cat.conn.execute("SELECT record_id, stream, meta_json FROM captures WHERE kind = 'frame'")
        }
        rows = [dict(r) for r in cat.conn.execute("SELECT * FROM alignments WHERE session_id = ?", (session,))]
        summaries = [json.loads(r[0]) for r in cat.conn.execute("SELECT summary_json FROM alignment_runs")]
        out = data_dir.parent / "s.mcap"
        export_session(cat, session, out)
    return {"frames": frames, "rows": rows, "summaries": summaries, "mcap": out}


def test_every_kept_visible_frame_has_exactly_one_ir_partner(recorded: dict[str, Any]) -> None:
    frames = recorded["frames"]
    vis = {m["pair"]["id"]: m for s, m in frames.values() if s == "vis" and "pair" in m}
    ir = [m for s, m in frames.values() if s == "ir"]
    assert len(vis) >= 20
    # Only a frame kept while the IR recorder was still starting may lack a partner.
    alone = [m for s, m in frames.values() if s == "vis" and "pair" not in m]
    assert len(alone) <= 1 and all(m["t_truth_ns"] < min(i["t_truth_ns"] for i in ir) for m in alone)
    assert sorted(m["pair"]["id"] for m in ir) == sorted(vis)  # one IR frame per visible frame, no other
    assert all(m["pair"]["with"] == "vis" for m in ir)
    # Placed by the frame counters, except while a camera's stamps have not yet spanned a second
    assert sum(m["pair"]["time"] == "settling" for m in ir) <= 2
    assert all(m["pair"]["time"] in ("device", "settling") for m in ir)


def test_skew_p99_within_half_the_ir_period_against_truth(recorded: dict[str, Any]) -> None:
    frames = recorded["frames"]
    vis = {m["pair"]["id"]: m for s, m in frames.values() if s == "vis" and "pair" in m}
    ir = [m for s, m in frames.values() if s == "ir"]
    period_ns = 1e9 / IR_FPS
    # The IR device's frame k was exposed at t_ir0 + k * period (the simulator's ground truth).
    t_ir0 = ir[0]["t_truth_ns"] - ir[0]["frame_index"] * period_ns
    truth, steady, chosen_vs_nearest = [], [], []
    for m in ir:
        t_vis = vis[m["pair"]["id"]]["t_truth_ns"]
        truth.append((m["t_truth_ns"] - t_vis) / 1e6)
        nearest = max(0, round((t_vis - t_ir0) / period_ns))  # the nearest frame the IR camera produced
        chosen_vs_nearest.append(abs(m["frame_index"] - nearest))
        if t_vis >= t_ir0 + period_ns / 2:  # after the IR camera started delivering
            steady.append(abs(truth[-1]))
    # Each partner is the IR frame nearest the visible one (a tie may go either way: off by one at
    # most, and then only within a couple of ms of the midpoint)...
    assert all(d == 0 or abs(abs(t) - period_ns / 2e6) <= 2.0 for d, t in zip(chosen_vs_nearest, truth, strict=True))
    assert max(chosen_vs_nearest) <= 1
    # ... so the promise holds: |skew| p99 at most half the IR period (55.6 ms), with 2 ms of tolerance
    assert len(steady) >= len(ir) - 1 and np.percentile(steady, 99) <= period_ns / 2e6 + 2.0
    # ... and the skew written down is the true one (the counter-placed times remove the jitter),
    # once both cameras' stamps have settled
    settled = [m["pair"]["time"] == "device" for m in ir]
    written = np.array([m["pair"]["skew_ns"] / 1e6 for m in ir])
    assert np.percentile(np.abs(written - np.array(truth))[settled], 99) <= 2.0


def test_the_index_treats_the_pair_as_one_sample(recorded: dict[str, Any]) -> None:
    frames = recorded["frames"]
    rows = [r for r in recorded["rows"] if r["stream_a"] in ("vis", "ir") and r["stream_b"] in ("vis", "ir")]
    assert rows and all(r["kind"] == "frame_pair" for r in rows)  # no nearest-frame search beside the pairs
    assert all(r["stream_a"] == "vis" for r in rows)
    assert sorted(r["record_a"] for r in rows) == sorted(k for k, (s, _) in frames.items() if s == "vis")
    alone = [r for r in rows if not r["matched"]]  # a frame kept before IR was running, at most
    assert len(alone) <= 1 and all("was not running" in json.loads(r["detail_json"])["reason"] for r in alone)
    rows = [r for r in rows if r["matched"]]
    for r in rows:
        assert frames[r["record_b"]][1]["pair"]["id"] == frames[r["record_a"]][1]["pair"]["id"]
        assert json.loads(r["detail_json"])["skew_ns"] == frames[r["record_b"]][1]["pair"]["skew_ns"]
    (summary,) = [p for s in recorded["summaries"] for p in s["pairs"] if p["kind"] == "frame_pair"]
    assert summary["matched"] == len(rows) and summary["unmatched_a"] == len(alone)
    assert summary["recorded_abs_skew_p99_ns"] <= 1e9 / IR_FPS / 2 + 2e6
    # Other streams still line up with each frame of the pair on its own.
    assert any(r["kind"] == "frame_audio" and r["stream_a"] == "ir" and r["matched"] for r in recorded["rows"])


def test_mcap_export_names_the_pairing(recorded: dict[str, Any]) -> None:
    with recorded["mcap"].open("rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary is not None
        topics = {c.topic: c for c in summary.channels.values()}
        assert topics["/ir"].metadata["pair_with"] == "vis" and "pair_with" not in topics["/vis"].metadata
        kinds = {
            json.loads(message.data)["kind"]
            for _s, channel, message in reader.iter_messages()
            if channel.topic == "/alignment"
        }
    assert "frame_pair" in kinds


@pytest.mark.parametrize(
    ("ir", "vis", "match"),
    [
        ({"policy": "interval", "pair_with": "cam"}, None, r"capture\.ir\.pair_with: 'cam' names no device"),
        ({"policy": "interval", "pair_with": "ir"}, None, r"capture\.ir\.pair_with: .*itself"),
        ({"policy": "interval", "pair_with": "mic"}, None, r"capture\.ir\.pair_with: 'mic' is audio, not a camera"),
        ({"policy": "triggered", "pair_with": "vis"}, None, r"capture\.ir\.pair_with: .*must be 'every' or 'interval'"),
        (
            {"policy": "interval", "pair_with": "vis"},
            {"policy": "take"},
            r"capture\.ir\.pair_with: 'vis' has policy 'take'",
        ),
        (
            {"policy": "interval", "pair_with": "vis"},
            {"policy": "interval", "pair_with": "ir"},
            r"capture\.(ir|vis)\.pair_with: .*is itself paired.*no chains or cycles",
        ),
    ],
)
def test_a_bad_pair_with_is_a_config_error(
    tmp_path: Path, ir: dict[str, Any], vis: dict[str, Any] | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(_config(tmp_path, ir, vis))


def test_frame_clock_places_jittered_stamps_on_the_counter() -> None:
    rng = np.random.default_rng(1)
    clock = FrameClock(IR_FPS)
    period = 1e9 / IR_FPS
    t0 = 5_000_000_000
    errors = []
    for n in range(200):
        late = int(rng.exponential(3e6)) if rng.random() < 0.9 else int(rng.uniform(0, 40e6))
        sample = Sample("ir", "thermal", n, t0 + round(n * period) + late, n, np.zeros((1, 1), np.uint16), {})
        clock.note(sample)
        t, placed = clock.time_of(sample)
        assert t <= sample.t_mono_ns
        if n < IR_FPS:  # under a second of stamps
            assert placed == "settling"
        elif n > IR_FPS:
            assert placed == "device"
        if n >= 20:
            errors.append(abs(t - (t0 + n * period)) / 1e6)
    assert max(errors) <= 1.0
    restarted = Sample("ir", "thermal", 201, t0 + round(201 * period), 0, np.zeros((1, 1), np.uint16), {})
    clock.note(restarted)  # a counter that went back starts a new edge instead of placing it 22 s early
    assert clock.time_of(restarted)[0] == restarted.t_mono_ns
    assert FrameClock(None).time_of(restarted) == (restarted.t_mono_ns, "stamps")


class _Jobs:
    """Stands in for the writer: keeps the submitted jobs."""

    media_root = Path("/nonexistent")

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def submit(self, job: Any) -> bool:
        self.jobs.append(job)
        return True


def test_the_follower_keeps_its_nearest_frame_by_counter_not_by_jittered_stamp() -> None:
    """Crafted streams, fed in arrival order: stamps up to 40 ms late, one frame in ten on time.

    Whatever the jitter, the follower frame kept is the one whose true time is nearest the leader
    frame's, including when the nearest frame arrives after the leader's (a pending request)."""
    from agent.capture.recorder import StreamRecorder
    from agent.config import CaptureSettings

    rng = np.random.default_rng(7)
    jobs = _Jobs()
    clock = Clock(probe_daemons=False)
    lead = StreamRecorder(
        "vis", "visible", CaptureSettings(policy="interval", interval_s=1.0), {"fps": VIS_FPS}, clock, jobs
    )  # type: ignore[arg-type]
    follow = StreamRecorder(
        "ir", "thermal", CaptureSettings(policy="interval", pair_with="vis"), {"fps": IR_FPS}, clock, jobs
    )  # type: ignore[arg-type]
    lead.lead(lambda: [follow])
    t0, seconds = 10_000_000_000, 30
    events = []
    for stream, fps, phase in (("vis", VIS_FPS, 0), ("ir", IR_FPS, 37_000_000)):
        for n in range(seconds * fps):
            truth = t0 + phase + round(n * 1e9 / fps)
            late = 0 if n % 10 == 0 else int(rng.uniform(0, 40e6))
            events.append((truth + late, stream, n, truth))
    payload = np.zeros((2, 2), np.uint16)
    truth_of: dict[tuple[str, int], int] = {}
    for stamp, stream, n, truth in sorted(events):
        truth_of[(stream, n)] = truth
        rec = lead if stream == "vis" else follow
        rec.feed(Sample(stream, "visible" if stream == "vis" else "thermal", n, stamp, n, payload, {}))
    follow.flush()
    vis = {j.meta["pair"]["id"]: j for j in jobs.jobs if j.stream == "vis"}
    ir = [j for j in jobs.jobs if j.stream == "ir"]
    assert len(vis) >= seconds - 1 and sorted(j.meta["pair"]["id"] for j in ir) == sorted(vis)
    ir_truth = np.array(sorted(t for (s, _), t in truth_of.items() if s == "ir"))
    for j in ir:
        t_lead = truth_of[("vis", vis[j.meta["pair"]["id"]].seq_first)]
        nearest = int(ir_truth[np.argmin(np.abs(ir_truth - t_lead))])
        assert abs(truth_of[("ir", j.seq_first)] - nearest) <= 1_000_000  # the nearest frame (ties aside)
        assert abs(j.meta["pair"]["skew_ns"] - (truth_of[("ir", j.seq_first)] - t_lead)) <= 1_000_000
