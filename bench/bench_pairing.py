"""Paired visible + IR frames: how far apart the kept frames are, with and without ``pair_with``.

Both simulated cameras (visible 160x120 at 15 fps, IR 80x60 at 9 fps) keep one frame a second
(``interval``); once as two independent policies, once with IR paired to visible. The skew is
measured against the simulators' ground truth (``t_truth_ns``, the instant each frame was
"exposed"): without pairing, for each kept visible frame the nearest *kept* IR frame; with it, the
IR partner the recorder kept, beside the skew the recorder wrote down. Target: |skew| p99 at most
half the IR frame period (55.6 ms).

    python bench/bench_pairing.py [--seconds 90]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture
from agent.catalog.db import Catalog
from agent.config import parse_config


def run(seconds: float, paired: bool) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-pair-")) / "d"
    ir: dict[str, Any] = {"policy": "interval", "interval_s": 1.0}
    if paired:
        ir["pair_with"] = "vis"
    config = parse_config(
        {
            "agent": {"device_id": "bench-pair", "data_dir": str(data_dir)},
            "devices": [
                {"name": "vis", "type": "sim-camera", "width": 160, "height": 120, "fps": 15},
                {"name": "ir", "type": "sim-thermal", "width": 80, "height": 60, "fps": 9},
            ],
            "capture": {"vis": {"policy": "interval", "interval_s": 1.0, "image_format": "png"}, "ir": ir},
        }
    )
    cap = LocalCapture(config, clock=Clock(probe_daemons=False))
    cap.start()
    assert cap.wait_open(30)
    time.sleep(seconds)
    cap.stop()
    with Catalog(data_dir / "catalog.sqlite", "bench-pair") as cat:
        frames = [
            (r[0], json.loads(r[1]))
            for r in cat.conn.execute("SELECT stream, meta_json FROM captures WHERE kind = 'frame'")
        ]
    vis = [m for s, m in frames if s == "vis"]
    irs = [m for s, m in frames if s == "ir"]
    if paired:
        by_id = {m["pair"]["id"]: m for m in irs}
        truth = [by_id[v["pair"]["id"]]["t_truth_ns"] - v["t_truth_ns"] for v in vis if v["pair"]["id"] in by_id]
        written = [m["pair"]["skew_ns"] for m in irs]
    else:
        t_ir = np.array(sorted(m["t_truth_ns"] for m in irs), dtype=np.int64)
        truth = [int(t_ir[np.argmin(np.abs(t_ir - v["t_truth_ns"]))]) - v["t_truth_ns"] for v in vis]
        written = []
    out: dict[str, Any] = {"paired": paired, "visible_kept": len(vis), "ir_kept": len(irs), "pairs": len(truth)}
    a = np.abs(np.array(truth, dtype=np.float64)) / 1e6
    out["truth_abs_skew_ms"] = {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
    }
    if written:
        err = (
            np.abs(
                np.array(written, dtype=np.float64)
                - np.array(
                    [
                        m["t_truth_ns"] - next(v for v in vis if v["pair"]["id"] == m["pair"]["id"])["t_truth_ns"]
                        for m in irs
                    ]
                )
            )
            / 1e6
        )
        out["written_vs_truth_ms"] = {
            "p50": round(float(np.percentile(err, 50)), 2),
            "p99": round(float(np.percentile(err, 99)), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {args.seconds:g} s each")
    for paired in (False, True):
        print(json.dumps(run(args.seconds, paired)))
    print(f"# load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
