"""The recorder under the issue's load: 1080p30 visible + 160x120 Y16 at 9 fps + 2 x 48 kHz audio +
2 serial sensors at 10 Hz, for 60 s, through the production path (``LocalCapture``: the daemon's capture threads →
``StreamRecorder`` → ``Writer`` → catalog with outbox rows, synchronous=FULL).

Reports, per stream: samples, what the drivers and the writer lost, capture-thread CPU (which for
the simulated devices includes rendering the frames, work a real camera does itself), writer CPU
(encoding, hashing, writing, committing), and capture→committed latency p50/p99 (from the unit's
last sample to its catalog commit).

The floor (``bench/baselines/``: ``vision_raw.py``'s JPEG q90 at 1080p, ``sqlite_raw.py``'s
WAL commit with synchronous=FULL) is measured in the same process just before and just after the
run (the mean of both: the machine is shared), on the same frames and disk: per unit (a frame, a
segment, a readings batch) plain OpenCV encode + hashlib sha256 + write/fsync/rename/fsync-dir +
one plain sqlite3 INSERT+COMMIT. The ratios are the recorder's writer CPU per unit and its
capture→committed p50 over that floor. An audio segment's latency also holds the wait for the
block that carries its last sample (up to one block, 21 ms at 1024 frames), which no floor has.

    .venv/bin/python bench/bench_recorder.py [--seconds 60] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.capture.clock import Clock  # noqa: E402
from agent.capture.local import LocalCapture  # noqa: E402
from agent.catalog.writer import latency_percentiles  # noqa: E402
from agent.config import parse_config  # noqa: E402
from drivers.sim.camera import render_frame  # noqa: E402

JPEG_QUALITY = 90
SEGMENT_S = 10.0

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
                "vis": {"policy": "every", "image_format": "jpeg", "jpeg_quality": JPEG_QUALITY},
                "ir": {"policy": "every"},
                "mic-near": {"policy": "segment", "segment_s": SEGMENT_S},
                "mic-mid": {"policy": "segment", "segment_s": SEGMENT_S},
                "env": {"policy": "readings", "batch_s": 1.0},
                "power": {"policy": "readings", "batch_s": 1.0},
            },
        }
    )


def floor(workdir: Path) -> dict[str, dict[str, float]]:
    """Plain-library cost of making one unit of each kind durable: CPU ms and wall p50 ms per unit."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(workdir / "floor.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE captures(id INTEGER PRIMARY KEY, stream TEXT, sha256 TEXT, size INTEGER, meta TEXT)")
    rng = np.random.default_rng(0)
    frames = [render_frame(1920, 1080, i, i * 33_333_333) for i in range(30)]  # the camera's work, not timed
    thermal = rng.integers(29000, 31000, (120, 160), dtype=np.uint16)
    audio = rng.integers(-3000, 3000, round(SEGMENT_S * 48000), dtype=np.int16).tobytes()
    units: dict[str, tuple[int, Callable[[int], bytes | None]]] = {
        "1080p jpeg": (
            60,
            lambda i: cv2.imencode(".jpg", frames[i % 30], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes(),
        ),
        "y16 png": (30, lambda i: cv2.imencode(".png", thermal + i, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes()),
        "wav segment": (4, lambda _: audio),
        "readings batch": (30, lambda _: None),
    }
    out: dict[str, dict[str, float]] = {}
    n_file = 0
    for kind, (n, make) in units.items():
        cpu, wall = [], []
        for i in range(n):
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            data = make(i)
            meta = json.dumps({"i": i, "kind": kind})
            sha, size = None, 0
            if data is not None:
                sha, size = hashlib.sha256(data).hexdigest(), len(data)
                n_file += 1
                tmp, final = workdir / f".{n_file}.part", workdir / f"{n_file}.bin"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                tmp.rename(final)
                dfd = os.open(workdir, os.O_RDONLY)
                os.fsync(dfd)
                os.close(dfd)
            # A readings batch: 1 s of a 10 Hz sensor with 3 fields, plus the batch's own row.
            rows = [("s", sha, size, meta)] * (1 if data is not None else 31)
            db.execute("BEGIN")
            db.executemany("INSERT INTO captures(stream, sha256, size, meta) VALUES (?,?,?,?)", rows)
            db.execute("COMMIT")
            cpu.append(time.thread_time_ns() - c0)
            wall.append(time.perf_counter_ns() - t0)
        out[kind] = {"cpu_ms": float(np.mean(cpu)) / 1e6, "wall_p50_ms": float(np.median(wall)) / 1e6}
    db.close()
    return out


def mean_floor(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {k: {m: float(np.mean([r[k][m] for r in runs])) for m in runs[0][k]} for k in runs[0]}


FLOOR_OF = {"visible": "1080p jpeg", "thermal": "y16 png", "audio": "wav segment", "sensor": "readings batch"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fieldcap-bench-"))
    cap = LocalCapture(config(workdir / "data"), clock=Clock(probe_daemons=False))
    floor_before = floor(workdir / "floor-before")  # before and after the run: the machine is shared
    load_before = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.monotonic()
    cap.start()
    cap.wait_open(60)
    time.sleep(args.seconds)
    threads = {n: thread_cpu_s(s.native_id) for n, s in cap.streams.items()}
    writer_threads = sum(thread_cpu_s(t.native_id) for t in cap.writer._threads)
    cap.stop()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    losses = cap.losses()
    load_after = os.getloadavg()
    floors = mean_floor([floor_before, floor(workdir / "floor-after")])
    rows = {}
    for name, s in cap.streams.items():
        committed = len(cap.writer.latency_ns.get(name, []))
        writer_ns = cap.writer.cpu_ns.get(name, 0)
        lat = latency_percentiles(cap.writer.latency_ns.get(name, []))
        base = floors[FLOOR_OF[s.modality]]
        cpu_per_unit = writer_ns / 1e6 / committed if committed else None
        rows[name] = {
            "samples": s.samples,
            "lost": {k: v for k, v in losses[name].items() if v},
            "capture_thread_cpu_pct": round(100 * threads[name] / args.seconds, 1),
            "writer_cpu_pct": round(100 * writer_ns / 1e9 / args.seconds, 1),
            "latency": lat,
            "units": committed,
            "writer_cpu_ms_per_unit": round(cpu_per_unit, 3) if cpu_per_unit is not None else None,
            "floor": {k: round(v, 3) for k, v in base.items()},
            "cpu_ratio": round(cpu_per_unit / base["cpu_ms"], 2) if cpu_per_unit else None,
            "latency_p50_ratio": round(lat["p50_ms"] / base["wall_p50_ms"], 2) if "p50_ms" in lat else None,
        }
    result = {
        "seconds": args.seconds,
        "streams": rows,
        "writer_threads_cpu_pct": round(100 * writer_threads / args.seconds, 1),
        "process_cpu_pct": round(100 * cpu / wall, 1),
        "lost_total": sum(sum(v.values()) for v in losses.values()),
        "written": cap.writer.written,
        "write_errors": cap.writer.errors,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "workdir": str(workdir),
    }
    print(json.dumps(result, indent=2))
    print(
        "\n| stream | samples | lost | capture thread CPU % | writer CPU % | latency p50 / p99 ms |"
        " writer CPU/unit vs floor | latency p50 vs floor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lat, base = r["latency"], r["floor"]
        print(
            f"| {name} | {r['samples']} | {sum(r['lost'].values())} | {r['capture_thread_cpu_pct']} |"
            f" {r['writer_cpu_pct']} | {lat.get('p50_ms', '-')} / {lat.get('p99_ms', '-')} |"
            f" {r['writer_cpu_ms_per_unit']} / {base['cpu_ms']} ms = {r['cpu_ratio']}× |"
            f" {lat.get('p50_ms', '-')} / {base['wall_p50_ms']} ms = {r['latency_p50_ratio']}× |"
        )
    print(f"\nload average before {load_before}, after {load_after}; process CPU {result['process_cpu_pct']} %")
    return 0 if result["lost_total"] == 0 and not result["write_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
