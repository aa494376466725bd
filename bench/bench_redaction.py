"""Face redaction at capture: cost per 1080p frame against bare CenterFace, and a 5 fps stream.

    python bench/bench_redaction.py [--model-dir DIR] [--frames N] [--stream-s S]

1. Per frame, in the same process: the floor is bare onnxruntime on CenterFace (the same size-free
   graph, default session options, the frame resized into the same input blob) — what any face
   redaction must run. fieldcap's ``FaceRedactor`` adds the box decoding, NMS and the blur. Target:
   ≤ 1.2× the floor.
2. A simulated 1920x1080 camera at 5 fps captured with ``redact_faces = true`` for ``--stream-s``
   seconds through the daemon's capture path: frames produced, stored, and dropped (writer queue,
   redaction failures) — whether redaction keeps up on this machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from skimage import data as skdata

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.capture.clock import Clock  # noqa: E402
from agent.capture.local import LocalCapture  # noqa: E402
from agent.capture.redaction import FaceRedactor  # noqa: E402
from agent.catalog.db import Catalog  # noqa: E402
from agent.config import parse_config  # noqa: E402
from models import QcSettings, graph_build, registry  # noqa: E402
from models.faces import _input_size  # noqa: E402


def frame_1080p() -> np.ndarray[Any, Any]:
    """The astronaut (one face) placed on a 1080p photo background."""
    bg = cv2.resize(cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR), (1920, 1080))
    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    bg[200:712, 700:1212] = face
    return bg


def per_frame(model_dir: pathlib.Path, frames: int) -> dict[str, float]:
    frame = frame_1080p()
    redactor = FaceRedactor(QcSettings(model_dir=str(model_dir)), 0.4)
    spec = redactor._session.manifest
    graph = graph_build.build("free-dims", str(model_dir / spec.file))
    bare = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    name = bare.get_inputs()[0].name
    in_h, in_w = _input_size(1080, 1920, int(spec.preprocessing.get("max_side", 640)), 32)

    def floor() -> None:
        blob = cv2.dnn.blobFromImage(frame, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
        bare.run(None, {name: blob})

    def ours() -> None:
        meta: dict[str, Any] = {}
        redactor(frame, meta)
        assert meta["redaction"]["faces"] >= 1

    for fn in (floor, ours):  # warm up
        fn()
    times: dict[str, list[float]] = {"floor": [], "fieldcap": []}
    for _ in range(frames):  # interleaved: both see the same machine
        for key, fn in (("floor", floor), ("fieldcap", ours)):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    f, o = statistics.median(times["floor"]), statistics.median(times["fieldcap"])
    return {"floor_ms": round(f * 1e3, 1), "fieldcap_ms": round(o * 1e3, 1), "ratio": round(o / f, 3)}


def stream(model_dir: pathlib.Path, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp)
        config = parse_config(
            {
                "agent": {"device_id": "bench-01", "data_dir": str(data_dir)},
                "devices": [{"name": "cam", "type": "sim-camera", "width": 1920, "height": 1080, "fps": 5}],
                "capture": {"cam": {"policy": "every", "redact_faces": True}},
                "qc": {"model_dir": str(model_dir)},
            }
        )
        cap = LocalCapture(config, clock=Clock(probe_daemons=False))
        cap.start()
        if not cap.wait_open(60):
            raise SystemExit(f"the camera did not open: {cap.streams['cam'].last_error}")
        time.sleep(seconds)
        produced = cap.streams["cam"].samples
        cap.stop()
        losses = cap.losses()["cam"]
        with Catalog(data_dir / "catalog.sqlite", "bench-01") as cat:
            stored = cat.conn.execute("SELECT COUNT(*) FROM captures WHERE kind = 'frame'").fetchone()[0]
            failed = cat.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'redaction_failed'").fetchone()[0]
        return {
            "seconds": seconds,
            "frames_produced": produced,
            "frames_stored": stored,
            "writer_drops": losses["writer_drops"],
            "redaction_failed": failed,
            "kept_up": stored + 2 >= produced and losses["writer_drops"] == 0,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=pathlib.Path, default=registry.default_cache_dir())
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--stream-s", type=float, default=30.0)
    args = ap.parse_args()
    registry.fetch(["centerface"], args.model_dir)
    result = {
        "per_frame_1080p": per_frame(args.model_dir, args.frames),
        "stream_5fps_1080p": stream(args.model_dir, args.stream_s),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
