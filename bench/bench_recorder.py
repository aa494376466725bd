"""The recorder under the issue's load: 1080p30 visible + 160x120 Y16 at 9 fps + 2 x 48 kHz audio +
2 serial sensors at 10 Hz, for 60 s, through the production path (``LocalCapture``: drivers →
``StreamRecorder`` → ``Writer`` → catalog with outbox rows, synchronous=FULL).

Reports, per stream: samples, what the drivers and the writer lost, capture-thread CPU (which for
the simulated devices includes rendering the frames, work a real camera does itself), writer CPU
(encoding, hashing, writing, committing), and capture→committed latency p50/p99 (from the unit's
last sample to its catalog commit).

    .venv/bin/python bench/bench_recorder.py [--seconds 60] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.clock import Clock  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.local_capture import LocalCapture  # noqa: E402
from agent.writer import latency_percentiles  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(native_id: int | None) -> float:
    if native_id is None:
        return 0.0
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def config(data_dir: Path) -> Any:
    return parse_config(
        {
            "agent": {"device_id": "bench-01", "site": "bench", "station": "bench", "data_dir": str(data_dir)},
            "devices": [
                {"name": "vis", "type": "sim-camera", "width": 1920, "height": 1080, "fps": 30},
                {"name": "ir", "type": "sim-thermal", "width": 160, "height": 120, "fps": 9},
                {"name": "mic-near", "type": "sim-microphone", "channels": 1, "speech_like": True},
                {"name": "mic-mid", "type": "sim-microphone", "channels": 1, "speech_like": True, "seed": 1},
                {"name": "env", "type": "sim-serial", "rate_hz": 10},
                {"name": "power", "type": "sim-serial", "rate_hz": 10, "fields": ["voltage_v", "current_a"]},
            ],
            "capture": {
                "vis": {"policy": "every", "image_format": "jpeg", "jpeg_quality": 90},
                "ir": {"policy": "every"},
                "mic-near": {"policy": "segment", "segment_s": 10.0},
                "mic-mid": {"policy": "segment", "segment_s": 10.0},
                "env": {"policy": "readings", "batch_s": 1.0},
                "power": {"policy": "readings", "batch_s": 1.0},
            },
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fieldcap-bench-"))
    cap = LocalCapture(config(workdir / "data"), clock=Clock(probe_daemons=False))
    cpu0, wall0 = time.process_time(), time.monotonic()
    cap.start()
    cap.wait_open(60)
    time.sleep(args.seconds)
    threads = {n: thread_cpu_s(s.native_id) for n, s in cap.streams.items()}
    writer_threads = sum(thread_cpu_s(t.native_id) for t in cap.writer._threads)
    cap.stop()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    losses = cap.losses()
    rows = {}
    for name, s in cap.streams.items():
        rows[name] = {
            "samples": s.samples,
            "lost": {k: v for k, v in losses[name].items() if v},
            "capture_thread_cpu_pct": round(100 * threads[name] / args.seconds, 1),
            "writer_cpu_pct": round(100 * cap.writer.cpu_ns.get(name, 0) / 1e9 / args.seconds, 1),
            "latency": latency_percentiles(cap.writer.latency_ns.get(name, [])),
        }
    result = {
        "seconds": args.seconds,
        "streams": rows,
        "writer_threads_cpu_pct": round(100 * writer_threads / args.seconds, 1),
        "process_cpu_pct": round(100 * cpu / wall, 1),
        "lost_total": sum(sum(v.values()) for v in losses.values()),
        "written": cap.writer.written,
        "write_errors": cap.writer.errors,
        "loadavg_after": os.getloadavg(),
        "workdir": str(workdir),
    }
    print(json.dumps(result, indent=2))
    print("\n| stream | samples | lost | capture thread CPU % | writer CPU % | latency p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        lat = r["latency"]
        print(
            f"| {name} | {r['samples']} | {sum(r['lost'].values())} | {r['capture_thread_cpu_pct']} |"
            f" {r['writer_cpu_pct']} | {lat.get('p50_ms', '-')} / {lat.get('p99_ms', '-')} |"
        )
    return 0 if result["lost_total"] == 0 and not result["write_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
