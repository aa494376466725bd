"""Face redaction at capture: a real video file of a face through the ``video-file`` driver, the
daemon's capture path, and the stored JPEGs checked with the detector itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture
from agent.catalog.db import Catalog
from agent.config import parse_config
from agent.errors import ConfigError
from models import QcSettings, Screener, faces, registry
from tests.agent.waits import wait_until

MIN_SCORE = 0.4


@pytest.fixture(scope="module")
def model_dir() -> Path:
    folder = registry.default_cache_dir()
    statuses = registry.fetch(["centerface"], folder)
    assert all(s.state == "ok" for s in statuses), statuses
    return folder


@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of scikit-image's astronaut (one face), 10 fps, MJPEG in AVI."""
    bgr = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    path = tmp_path_factory.mktemp("video") / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (bgr.shape[1], bgr.shape[0]))
    for i in range(20):
        writer.write(np.roll(bgr, i, axis=1))  # a slowly moving scene, the face in every frame
    writer.release()
    return path


def _config(data_dir: Path, video: Path, model_dir: Path, **capture: Any) -> dict[str, Any]:
    return {
        "agent": {"device_id": "r-01", "data_dir": str(data_dir)},
        "devices": [{"name": "door", "type": "video-file", "path": str(video), "loop": True}],
        "capture": {"door": {"policy": "every", "redact_faces": True, "redact_min_score": MIN_SCORE, **capture}},
        "qc": {"model_dir": str(model_dir)},
    }


def _capture(config: dict[str, Any], frames: int) -> list[dict[str, Any]]:
    data_dir = Path(config["agent"]["data_dir"])
    cap = LocalCapture(parse_config(config), clock=Clock(probe_daemons=False))
    cap.start()
    try:
        assert cap.wait_open(60)

        def stored() -> int:
            with Catalog(data_dir / "catalog.sqlite", "r-01") as cat:
                return len(cat.conn.execute("SELECT 1 FROM captures WHERE kind = 'frame'").fetchall())

        wait_until("frames stored", lambda: stored() >= frames, 120)
    finally:
        cap.stop()
    with Catalog(data_dir / "catalog.sqlite", "r-01") as cat:
        rows = cat.conn.execute("SELECT path, meta_json FROM captures WHERE kind = 'frame'").fetchall()
        return [{"path": data_dir / r[0], "meta": json.loads(r[1])} for r in rows]


def test_stored_frames_hold_no_face_the_detector_finds(tmp_path: Path, face_video: Path, model_dir: Path) -> None:
    screener = Screener(QcSettings(model_dir=str(model_dir)))
    session = screener.session("centerface")
    source = cv2.VideoCapture(str(face_video))
    ok, first = source.read()
    source.release()
    assert ok and faces.detect_faces(session, first, MIN_SCORE), "the source video must show a face"

    rows = _capture(_config(tmp_path / "d", face_video, model_dir), frames=8)
    assert len(rows) >= 8
    for row in rows:
        stored = cv2.imread(str(row["path"]))
        assert stored is not None and stored.shape == first.shape
        assert faces.detect_faces(session, stored, MIN_SCORE) == [], f"{row['path']} still shows a face"
        red = row["meta"]["redaction"]
        assert red["model"] == "centerface" and red["sha256"] == session.sha256 and red["version"]
        assert red["faces"] >= 1 and red["min_score"] == MIN_SCORE
        # the rest of the picture is kept: redaction blurs faces, not the frame
        assert cv2.absdiff(stored, first).mean() < 60


def test_a_frame_whose_detection_fails_is_dropped_and_recorded(
    tmp_path: Path, face_video: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = faces.detect_faces

    def flaky(session: Any, bgr: Any, threshold: float, iou: float = 0.3) -> list[faces.Box]:
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("injected detector fault")
        return real(session, bgr, threshold, iou)

    monkeypatch.setattr(faces, "detect_faces", flaky)
    data_dir = tmp_path / "d"
    rows = _capture(_config(data_dir, face_video, model_dir), frames=4)
    assert all(r["meta"]["redaction"]["faces"] >= 1 for r in rows)
    with Catalog(data_dir / "catalog.sqlite", "r-01") as cat:
        events = cat.conn.execute("SELECT kind, message FROM events WHERE kind = 'redaction_failed'").fetchall()
    assert len(events) >= 3 and "injected detector fault" in events[0][1]
    # every file in the media folder belongs to a stored (redacted) capture: nothing else was written
    on_disk = {p for p in (data_dir / "media").rglob("*") if p.is_file()}
    assert on_disk == {r["path"] for r in rows}
    assert calls["n"] >= len(rows) + len(events)


def test_redaction_only_on_visible_cameras(tmp_path: Path) -> None:
    config = {
        "agent": {"device_id": "r-01", "data_dir": str(tmp_path)},
        "devices": [{"name": "ir", "type": "sim-thermal"}],
        "capture": {"ir": {"policy": "interval", "redact_faces": True}},
    }
    with pytest.raises(ConfigError, match=r"capture\.ir\.redact_faces: only a visible camera"):
        parse_config(config)


def test_a_missing_detector_never_lets_a_frame_through(tmp_path: Path, face_video: Path) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    data_dir = tmp_path / "d"
    cap = LocalCapture(parse_config(_config(data_dir, face_video, empty)), clock=Clock(probe_daemons=False))
    cap.start()
    try:
        state = cap.streams["door"]
        wait_until("the stream error", lambda: "face detector cannot be loaded" in (state.last_error or ""), 60)
        assert not state.open
    finally:
        cap.stop()
    media = data_dir / "media"
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
