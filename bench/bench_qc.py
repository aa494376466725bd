"""QC screening cost against the plain-library floors, measured in the same process.

    python bench/bench_qc.py [--model-dir DIR] [--repeat N]

1. image screen of a 1080p BGR frame (camera-visible, no faces) vs the 16-bit Laplacian +
   meanStdDev on the 1080p gray frame (bench/baselines/vision_raw.py's floor);
2. audio QC of a 10 s 48 kHz take without DNSMOS (target < 50 ms), with its parts, min and median
   (the Silero VAD sequence graph and banded-GEMM resampler next to the reference paths);
3. each ONNX analyzer vs the same model run bare with onnxruntime (1 intra-op thread for both,
   as bench/baselines/audio_raw.py does): Silero VAD over 10 s, DNSMOS over 30 s, CenterFace
   on a 640x480 frame.

Prints one line per figure, ratios last. Needs fetched models (``fieldcap models fetch``) for
parts 2-3; part 1 runs without them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from scipy.signal import resample_poly

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from agent.cli.local import _tune_malloc
from models import QcSettings, Screener, audio_metrics, registry, resample
from models import dnsmos as dnsmos_analyzer
from models import faces as face_analyzer
from models import vad as vad_analyzer


def bench(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


CLOCK: dict[str, Callable[[], float]] = {"now": time.perf_counter}  # --clock cpu: time.process_time


def paired(floor: Callable[[], Any], ours: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Interleaved timing (floor, ours, floor, ours, ...) so load changes on a shared machine hit
    both alike; returns the medians in ms and the median of the per-pair ratios."""
    floor()
    ours()
    pairs = []
    for _ in range(repeat):
        t0 = CLOCK["now"]()
        floor()
        t1 = CLOCK["now"]()
        ours()
        t2 = CLOCK["now"]()
        pairs.append((t1 - t0, t2 - t1))
    f = statistics.median(p[0] for p in pairs) * 1e3
    o = statistics.median(p[1] for p in pairs) * 1e3
    return f, o, statistics.median(p[1] / p[0] for p in pairs)


def image_part(repeat: int) -> None:
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8), (0, 0), 2)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    screener = Screener(model_dir=pathlib.Path("/nonexistent"))
    floor, ours, ratio = paired(
        lambda: cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S)),
        lambda: screener.image(frame),
        repeat * 5,
    )
    slow = bench(lambda: cv2.Laplacian(gray, cv2.CV_64F).var(), repeat)
    print(
        f"image 1080p: floor laplacian CV_16S+meanStdDev {floor:.2f} ms | "
        f"float64 laplacian var {slow:.2f} ms | fieldcap image screen {ours:.2f} ms"
    )
    print(f"RATIO image screen / 16-bit laplacian floor: {ratio:.2f}x (target <= 1.3x)")


def spread(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(min, median) wall time of ``fn`` in ms after one warm-up call: on a shared machine the
    minimum is the least disturbed run, the median what a capture typically sees."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, statistics.median(times) * 1e3


def audio_part(model_dir: pathlib.Path, repeat: int) -> None:
    def screener(**profile: Any) -> Screener:
        overrides = {"booth-speech": {"use_dnsmos": False, **profile}}
        return Screener(QcSettings.model_validate({"profiles": overrides, "threads": 1}), model_dir=model_dir)

    full, signal_only = screener(), screener(use_vad=False)
    rng = np.random.default_rng(1)
    take = (rng.standard_normal(480_000) * 0.05).astype(np.float32)
    take[100_000:300_000] *= 8  # a louder "speech" stretch so VAD/SNR paths run fully
    x = take[:, None]
    session = full.session("silero-vad")
    audio16 = resample.to_16k(x, 48000)
    sequence = vad_analyzer.sequence_session(session)
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("audio QC total", lambda: full.audio(take, 48000)),
        ("without VAD", lambda: signal_only.audio(take, 48000)),
        ("resample 48k->16k (banded GEMM)", lambda: resample.to_16k(x, 48000)),
        ("resample 48k->16k (resample_poly)", lambda: resample_poly(x, 1, 3, axis=0)),
        ("loudness", lambda: audio_metrics.loudness_lufs(x, 48000)),
        ("silero-vad sequence graph", lambda: vad_analyzer.speech_probabilities(session, audio16)),
        ("silero-vad chunk by chunk", lambda: vad_analyzer.chunkwise_probabilities(session, audio16)),
    ]
    print(f"audio QC of a 10 s 48 kHz mono take, no DNSMOS, 1 ORT thread (sequence graph: {sequence is not None}):")
    for label, fn in parts:
        low, mid = spread(fn, repeat)
        target = " (target < 50 ms)" if label == "audio QC total" else ""
        print(f"  {label:<36} min {low:7.1f} ms | median {mid:7.1f} ms{target}")


def onnx_part(model_dir: pathlib.Path, repeat: int) -> None:
    runner_threads = 1
    settings = QcSettings.model_validate({"threads": runner_threads})
    screener = Screener(settings, model_dir=model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = runner_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    rng = np.random.default_rng(2)

    # Silero VAD, 10 s at 16 kHz: the baseline's loop
    audio16 = (rng.standard_normal(160_000) * 0.05).astype(np.float32)
    vad_path = registry.model_path(registry.get_manifest("silero-vad", model_dir), model_dir)
    bare_vad = ort.InferenceSession(str(vad_path), options, providers=cpu)

    def vad_bare() -> None:
        state = np.zeros((2, 1, 128), np.float32)
        sr = np.array(16000, np.int64)
        ctx = np.zeros(64, np.float32)
        for i in range(0, len(audio16) - 512 + 1, 512):
            chunk = np.concatenate([ctx, audio16[i : i + 512]])[None, :]
            _, state = bare_vad.run(None, {"input": chunk, "state": state, "sr": sr})
            ctx = chunk[0, -64:]

    session = screener.session("silero-vad")
    vad_floor, vad_ours, ratio = paired(
        vad_bare, lambda: vad_analyzer.speech_probabilities(session, audio16[:, None]), repeat
    )
    print(
        f"silero-vad 10 s: bare ORT {vad_floor:.1f} ms | fieldcap analyzer {vad_ours:.1f} ms "
        f"| RATIO {ratio:.2f}x (target <= 1.2x)"
    )

    # DNSMOS, 30 s at 16 kHz: non-overlapping 9.01 s windows
    audio30 = (rng.standard_normal(480_000) * 0.05).astype(np.float32)
    mos_path = registry.model_path(registry.get_manifest("dnsmos", model_dir), model_dir)
    bare_mos = ort.InferenceSession(str(mos_path), options, providers=cpu)
    windows = dnsmos_analyzer.windows(audio30)

    def mos_bare() -> None:
        for window in windows:
            bare_mos.run(None, {"input_1": window[None, :]})

    mos_session = screener.session("dnsmos")
    mos_floor, mos_ours, ratio = paired(mos_bare, lambda: dnsmos_analyzer.score(mos_session, audio30[:, None]), repeat)
    print(
        f"dnsmos 30 s ({len(windows)} windows): bare ORT {mos_floor:.1f} ms | fieldcap "
        f"{mos_ours:.1f} ms | RATIO {ratio:.2f}x (target <= 1.3x)"
    )

    # CenterFace on 640x480: bare = blob + run on a session with free dims
    frame = np.asarray(cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 2), np.uint8)
    face_session = screener.session("centerface")
    bare_face = face_session.session  # same graph; the bare path skips only our pre/post code

    def face_bare() -> None:
        blob = cv2.dnn.blobFromImage(frame, 1.0, (640, 480), (0, 0, 0), swapRB=True)
        bare_face.run(None, {"input.1": blob})

    face_floor, face_ours, ratio = paired(
        face_bare, lambda: face_analyzer.detect_faces(face_session, frame, 0.5), repeat
    )
    print(
        f"centerface 640x480: bare ORT {face_floor:.1f} ms | fieldcap {face_ours:.1f} ms | "
        f"RATIO {ratio:.2f}x (target <= 1.2x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=pathlib.Path, default=registry.default_cache_dir())
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or the process's CPU time (steadier on a loaded machine; counts every thread)",
    )
    args = parser.parse_args()
    CLOCK["now"] = time.process_time if args.clock == "cpu" else time.perf_counter
    _tune_malloc()  # the daemon's allocator settings: DNSMOS's cost depends on them
    tunables = os.environ.get("GLIBC_TUNABLES", "") or "none"
    print(f"cv2 threads {cv2.getNumThreads()}, onnxruntime {ort.__version__}, clock {args.clock}")
    print(f"glibc tunables: {tunables}")
    image_part(args.repeat)
    missing = [s.name for s in registry.verify(None, args.model_dir) if s.state != "ok"]
    if missing:
        print(f"skipping ONNX parts: models {missing} not in {args.model_dir} (run: fieldcap models fetch)")
        return
    audio_part(args.model_dir, args.repeat)
    onnx_part(args.model_dir, max(3, args.repeat // 4))


if __name__ == "__main__":
    main()
