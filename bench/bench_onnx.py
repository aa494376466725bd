"""Per-model latency and throughput of fieldcap's ONNX runner against bare onnxruntime.

    python bench/bench_onnx.py --provider cpu|cuda --model-dir DIR [--repeat N] [--threads N]

Both sides use the same execution provider list and session options; the difference is only what
``models.runner`` adds (session cache, feed dicts, batching). Needs numpy, onnxruntime (or
onnxruntime-gpu) and this repository's ``models`` package; nothing else from it is imported.
CenterFace's fixed 32x32 graph is made size-free with the ``onnx`` package; without it that model
is skipped. Model files are the verified ones in ``--model-dir`` (``fieldcap models fetch``).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import silero_graph  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.runner import ModelSession, OnnxRunner, free_dims  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Named:
    name: str


@dataclasses.dataclass(frozen=True)
class Spec:
    """The fields of a manifest the runner needs (read with tomllib: no pydantic here)."""

    name: str
    version: str
    file: str
    sha256: str
    free_dims: bool
    inputs: Sequence[Named]
    preprocessing: Mapping[str, Any]
    postprocessing: Mapping[str, Any]


def read_spec(name: str) -> Spec:
    data = tomllib.loads((ROOT / "models" / "manifests" / f"{name}.toml").read_text("utf-8"))
    return Spec(
        name=data["name"],
        version=data["version"],
        file=data["file"],
        sha256=data["sha256"],
        free_dims=bool(data.get("free_dims", False)),
        inputs=[Named(i["name"]) for i in data.get("inputs", [])],
        preprocessing=data.get("preprocessing", {}),
        postprocessing=data.get("postprocessing", {}),
    )


def paired_ms(
    bare: Callable[[], Any], ours: Callable[[], Any], repeat: int, warmup: int = 3
) -> tuple[float, float, float]:
    """Interleaved timing (bare, ours, bare, ours, ...) so that load from other processes hits
    both alike: medians in ms and the median of the per-pair ratios."""
    for _ in range(warmup):
        bare()
        ours()
    pairs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        bare()
        t1 = time.perf_counter()
        ours()
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    return (
        statistics.median(p[0] for p in pairs) * 1e3,
        statistics.median(p[1] for p in pairs) * 1e3,
        statistics.median(p[1] / p[0] for p in pairs),
    )


def feeds_for(name: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray[Any, Any]]:
    if name == "silero-vad":
        return {
            "input": (rng.standard_normal((batch, 576)) * 0.05).astype(np.float32),
            "state": np.zeros((2, batch, 128), np.float32),
            "sr": np.array(16000, np.int64),
        }
    if name == "dnsmos":
        return {"input_1": (rng.standard_normal((batch, 144160)) * 0.05).astype(np.float32)}
    return {"input.1": rng.uniform(0, 255, (batch, 3, 480, 640)).astype(np.float32)}


BATCHES = {"silero-vad": (1, 64), "dnsmos": (1, 8), "centerface": (1, 8)}
UNITS = {"silero-vad": "chunks", "dnsmos": "windows", "centerface": "frames"}


def bench_model(name: str, runner: OnnxRunner, model_dir: pathlib.Path, repeat: int) -> list[str]:
    spec = read_spec(name)
    ours: ModelSession = runner.load(spec, model_dir)
    path = model_dir / spec.file
    source: bytes | str = free_dims(path) if spec.free_dims else str(path)
    bare = ort.InferenceSession(source, runner.session_options(), providers=runner.providers)
    rng = np.random.default_rng(0)
    lines = []
    first = ours.input_names[0]
    for batch in BATCHES[name]:
        feeds = feeds_for(name, batch, rng)
        extra = {k: v for k, v in feeds.items() if k != first}

        def run_bare(feeds: dict[str, Any] = feeds) -> None:
            bare.run(None, feeds)

        def run_ours(feeds: dict[str, Any] = feeds, extra: dict[str, Any] = extra, batch: int = batch) -> None:
            if batch == 1:
                ours.run(feeds)
            else:  # the runner's batching path: one slice of ``batch`` items
                ours.run_batched(first, feeds[first], batch, extra)

        bare_ms, ours_ms, ratio = paired_ms(run_bare, run_ours, repeat)
        rate = batch / (ours_ms / 1e3)
        lines.append(
            f"{name:<11} batch {batch:>3}: bare {bare_ms:8.2f} ms | runner {ours_ms:8.2f} ms | "
            f"ratio {ratio:5.2f}x | {rate:9.1f} {UNITS[name]}/s"
        )
    return lines


def bench_vad_sequence(runner: OnnxRunner, model_dir: pathlib.Path, repeat: int) -> list[str]:
    """10 s of 16 kHz audio: the published Silero graph called once per 32 ms chunk (313 calls,
    what a bare onnxruntime user does) against fieldcap's rebuilt sequence graph (one call)."""
    ours = runner.load(read_spec("silero-vad"), model_dir)
    sequence = ours.derived("sequence", silero_graph.build_sequence_model)
    rng = np.random.default_rng(0)
    chunks = 313
    audio = np.concatenate([np.zeros(64, np.float32), (rng.standard_normal(chunks * 512) * 0.05).astype(np.float32)])
    frames = np.stack([audio[i * 512 : i * 512 + 576] for i in range(chunks)])[:, None, :]  # [T, 1, 576]
    sr = np.array(16000, np.int64)

    def chunk_calls() -> None:
        state = np.zeros((2, 1, 128), np.float32)
        for i in range(chunks):
            _, state = ours.session.run(None, {"input": frames[i], "state": state, "sr": sr})

    zeros = np.zeros((1, 1, 128), np.float32)

    def one_call() -> None:
        sequence.session.run(None, {"frames": frames, "h0": zeros, "c0": zeros})

    bare_ms, ours_ms, ratio = paired_ms(chunk_calls, one_call, repeat)
    return [
        f"silero-vad 10 s: {chunks} chunk calls {bare_ms:8.2f} ms | sequence graph {ours_ms:8.2f} ms | "
        f"ratio {ratio:5.2f}x | {chunks / (ours_ms / 1e3):9.1f} chunks/s"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=["cpu", "cuda"], required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (CPU)")
    args = parser.parse_args()
    try:
        runner = OnnxRunner(args.provider, args.threads)
        providers = runner.providers
    except ModelError as exc:
        sys.exit(f"error: {exc}")
    print(
        f"python {sys.version.split()[0]}, onnxruntime {ort.__version__}, "
        f"providers {providers}, device {ort.get_device()}"
    )
    for name in ("silero-vad", "dnsmos", "centerface"):
        try:
            for line in bench_model(name, runner, args.model_dir, args.repeat):
                print(line, flush=True)
        except ModelError as exc:
            print(f"{name:<11} skipped: {exc}", flush=True)
    try:
        for line in bench_vad_sequence(runner, args.model_dir, args.repeat):
            print(line, flush=True)
    except (ModelError, silero_graph.SequenceGraphError) as exc:
        print(f"silero-vad sequence graph skipped: {exc}", flush=True)


if __name__ == "__main__":
    main()
