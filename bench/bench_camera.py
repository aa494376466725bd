"""Camera drain path vs the bare ``cv2.VideoCapture.read()`` loop, same source, same run.

    python bench/bench_camera.py [--seconds S] [--width W --height H --fps F] [--rounds N]

Source: a local gst-rtsp-server (system python3 + python3-gi + gir1.2-gst-rtsp-server-1.0, the
same peer the tests use) streaming MJPEG over RTSP/TCP. Both sides decode every frame the camera
sends, so the figure compared is this process's CPU time (all threads: FFmpeg, drain thread,
consumer) per frame. Rounds alternate bare/driver to cancel drift in machine load.
Target (issue 3): driver <= 1.15x bare.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import time

import cv2

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers import DriverTimeout, open_driver, parse_device_settings  # noqa: E402

PEER = ROOT / "tests" / "drivers" / "peers" / "rtsp_server.py"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare(url: str, seconds: float) -> tuple[float, int]:
    """CPU seconds and frames of the plain read loop."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    for _ in range(10):  # warm up: probing and the first keyframes are not steady state
        cap.read()
    cpu0, end, frames = time.process_time(), time.monotonic() + seconds, 0
    while time.monotonic() < end:
        ok, _ = cap.read()
        frames += ok
    cpu = time.process_time() - cpu0
    cap.release()
    del os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
    return cpu, frames


def driver(url: str, seconds: float) -> tuple[float, int, int]:
    """CPU seconds, frames delivered and frames dropped by the drain path."""
    settings = parse_device_settings({"name": "bench", "type": "rtsp", "url": url})
    with open_driver(settings) as cam:
        for _ in range(10):
            cam.read(5)
        start = cam.stats
        cpu0, end = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(DriverTimeout):
                cam.read(1)
        cpu = time.process_time() - cpu0
        stats = cam.stats
    return cpu, stats.samples - start.samples, stats.drops - start.drops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=30)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            "/usr/bin/python3",
            str(PEER),
            str(port),
            str(args.width),
            str(args.height),
            str(args.fps),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "READY":
        sys.exit("RTSP server did not start (apt install python3-gi gir1.2-gst-rtsp-server-1.0)")
    url = f"rtsp://127.0.0.1:{port}/test"
    print(f"source: {url} {args.width}x{args.height}@{args.fps} MJPEG, {os.cpu_count()} CPUs")
    ratios = []
    try:
        for rnd in range(args.rounds):
            b_cpu, b_frames = bare(url, args.seconds)
            d_cpu, d_frames, d_drops = driver(url, args.seconds)
            b_pf = b_cpu / max(1, b_frames) * 1e3
            d_pf = d_cpu / max(1, d_frames + d_drops) * 1e3  # every decoded frame costs
            ratios.append(d_pf / b_pf)
            print(
                f"round {rnd}: bare {b_frames} frames {b_pf:.2f} ms CPU/frame | driver "
                f"{d_frames} frames (+{d_drops} dropped) {d_pf:.2f} ms CPU/frame | "
                f"ratio {d_pf / b_pf:.3f}"
            )
    finally:
        server.kill()
        server.wait()
    print(f"drain path / bare read loop CPU per frame: median {statistics.median(ratios):.3f}x (target <= 1.15x)")


if __name__ == "__main__":
    main()
