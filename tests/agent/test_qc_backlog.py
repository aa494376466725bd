"""QC that cannot fall behind unseen: the backlog is measured, reported and, past its limit, sampled.

A catalog already holds photos captured 20 minutes ago and never screened (QC was behind, or the
agent was down). With ``[qc] max_backlog_s = 60`` the agent is behind from its first look: status
is degraded and says why, and with ``when_behind = "sample"`` one photo in four is screened while
the others get a ``review`` verdict saying they were not screened, counted in a ``qc_unscreened``
event. With ``when_behind = "queue"`` every photo is screened, however late.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
from skimage import data as photos
from waits import wait_until

from agent.catalog.db import Catalog
from agent.config import parse_config
from agent.daemon import Agent
from agent.ops.metrics import AgentCollector
from agent.ops.status import problems_of
from agent.qc import Backlog
from sync.outbox import BlobRef

pytestmark = pytest.mark.timeout(300)

PHOTOS = 24


def _old_photos(data: Path, device_id: str) -> list[str]:
    """``PHOTOS`` committed, unscreened photo captures dated 20 minutes ago."""
    (data / "media").mkdir(parents=True)
    image = cv2.cvtColor(photos.astronaut(), cv2.COLOR_RGB2BGR)
    then = time.time_ns() - 20 * 60 * 1_000_000_000
    ids = []
    with Catalog(data / "catalog.sqlite", device_id) as cat:
        for i in range(PHOTOS):
            rel = f"media/cam-{i:03d}.jpg"
            ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80 + i % 10])
            assert ok
            (data / rel).write_bytes(jpg.tobytes())
            blob = jpg.tobytes()
            media = BlobRef(hashlib.sha256(blob).hexdigest(), len(blob), data / rel, "image/jpeg")
            ids.append(
                cat.add_capture(
                    stream="cam",
                    kind="frame",
                    modality="visible",
                    t_start_mono_ns=i,
                    t_end_mono_ns=i,
                    t_start_utc_ns=then + i * 1_000_000,
                    seq_first=i,
                    seq_last=i,
                    media=media,
                    media_rel=rel,
                    meta={"width": 512, "height": 512},
                )
            )
    return ids


def _run(tmp_path: Path, model_dir: Path, when_behind: str) -> dict[str, Any]:
    data = tmp_path / "data"
    ids = _old_photos(data, "qc-01")
    config = parse_config(
        {
            "agent": {"device_id": "qc-01", "data_dir": str(data)},
            "qc": {"model_dir": str(model_dir), "max_backlog_s": 60, "when_behind": when_behind, "sample_one_in": 4},
            "sync": {"enabled": False},
        }
    )
    agent = Agent(config)
    agent.start()
    try:
        assert agent.wait_screened(240)
        # the QC loop measures its backlog before each batch: once more after the last one
        snap = wait_until("an empty QC backlog", lambda: (s := agent.snapshot())["qc_backlog"]["captures"] == 0 and s)
        metrics = {m.name: m for m in AgentCollector(agent.snapshot).collect()}
    finally:
        agent.stop()
    with Catalog(data / "catalog.sqlite", "qc-01") as cat:
        verdicts = {r["capture_id"]: r for r in cat.conn.execute("SELECT * FROM verdicts")}
        events = cat.conn.execute("SELECT count, detail_json FROM events WHERE kind = 'qc_unscreened'").fetchall()
    return {"ids": ids, "snap": snap, "verdicts": verdicts, "events": events, "metrics": metrics}


def test_behind_with_sampling_screens_one_in_four_and_marks_the_rest(tmp_path: Path, model_dir: Path) -> None:
    r = _run(tmp_path, model_dir, "sample")
    verdicts = r["verdicts"]
    assert set(verdicts) == set(r["ids"])  # every capture has a verdict: nothing skipped silently
    unscreened = [v for v in verdicts.values() if json.loads(v["metrics_json"]).get("unscreened")]
    screened = [v for v in verdicts.values() if not json.loads(v["metrics_json"]).get("unscreened")]
    assert len(unscreened) == PHOTOS - PHOTOS // 4 and len(screened) == PHOTOS // 4
    for v in unscreened:
        (reason,) = json.loads(v["reasons_json"])
        assert v["verdict"] == "review" and reason.startswith("unscreened: "), reason
        assert "> [qc] max_backlog_s 60 s; screening 1 in 4" in reason  # measured: oldest ~1200 s
    assert all(json.loads(v["analyzers_json"]) for v in screened)  # really screened, by the analyzers
    assert sum(n for n, _ in r["events"]) == len(unscreened)
    marked = {rid for _, d in r["events"] for rid in json.loads(d)["record_ids"]}
    assert marked == {v["capture_id"] for v in unscreened}
    after = r["snap"]["qc_backlog"]
    assert after["captures"] == 0 and not after["behind"] and after["unscreened"] == len(unscreened)
    assert not [p for p in problems_of(r["snap"])[0] if p.startswith("QC behind")]
    assert r["metrics"]["fieldcap_qc_unscreened"].samples[0].value == len(unscreened)
    assert r["metrics"]["fieldcap_qc_backlog_captures"].samples[0].value == 0


def test_behind_with_queueing_screens_everything(tmp_path: Path, model_dir: Path) -> None:
    r = _run(tmp_path, model_dir, "queue")
    assert set(r["verdicts"]) == set(r["ids"])
    assert not [v for v in r["verdicts"].values() if json.loads(v["metrics_json"]).get("unscreened")]
    assert not r["events"]


def test_status_says_qc_is_behind_and_by_how_much() -> None:
    behind = {"qc_backlog": Backlog(captures=10_000, capped=True, oldest_age_s=1234.0, max_age_s=600.0).as_dict()}
    problems, _ = problems_of(behind)
    assert problems == [
        "QC behind: 10000+ capture(s) waiting, oldest 1234 s (limit 600 s); screening a sample, the rest marked"
        " unscreened"
    ]
    fine = {"qc_backlog": Backlog(captures=3, oldest_age_s=2.0, max_age_s=600.0).as_dict()}
    assert problems_of(fine) == ([], [])
