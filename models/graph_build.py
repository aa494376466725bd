"""Derived ONNX graphs are built in a short-lived child process, so the daemon never imports onnx.

Several analyzers run graphs derived from a verified model file (Silero VAD as one sequence
graph, DNSMOS in time tiles, fixed sizes made free) or built from numbers (the resampler's
banded matrix). Building them needs the ``onnx`` package, which stays resident once imported:
~15 MB of the agent's 250 MB RSS budget for work done once per start. A child process
(``python -m models.graph_build KIND ARG``) builds the graph, writes its bytes to stdout and exits;
the parent hands the bytes to onnxruntime. A failure comes back as ``GraphBuildError`` (a
``ModelLoadError``) carrying the child's message, so callers fall back as they did before.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Callable

from models.errors import ModelLoadError

KINDS = ("silero-sequence", "dnsmos-features", "dnsmos-trunk", "dnsmos-head", "free-dims", "decimate")
TIMEOUT_S = 300.0
EXIT_REFUSED = 3  # the builder understood the input and refused it (wrong structure)


class GraphBuildError(ModelLoadError):
    """The child could not build the graph; the message is the child's own."""


def build(kind: str, arg: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """Serialized graph ``kind`` for ``arg`` (a model path, or the decimation factor)."""
    if kind not in KINDS:
        raise ValueError(f"unknown graph kind {kind!r}")
    command = [sys.executable, "-m", "models.graph_build", kind, arg]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphBuildError(f"building the {kind} graph from {arg} failed: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise GraphBuildError(f"building the {kind} graph from {arg} failed: {why}")
    return done.stdout


def from_path(kind: str) -> Callable[[pathlib.Path], bytes]:
    """``build`` for a graph derived from a model file, in the shape ``ModelSession.derived`` takes."""

    def run(path: pathlib.Path) -> bytes:
        return build(kind, str(path))

    return run


def _build_here(kind: str, arg: str) -> bytes:
    """The child's side: import the builder (and with it onnx) and run it."""
    from models import dnsmos_tiles, resample, runner, silero_graph  # here, not at the top: the child alone loads onnx

    if kind == "silero-sequence":
        return silero_graph.build_sequence_model(pathlib.Path(arg))
    if kind == "free-dims":
        return runner.free_dims(pathlib.Path(arg))
    if kind == "decimate":
        return resample.decimation_model(int(arg))
    return dnsmos_tiles.build(pathlib.Path(arg), kind)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in KINDS:
        sys.stderr.write(f"usage: python -m models.graph_build {{{','.join(KINDS)}}} ARG\n")
        return 2
    kind, arg = argv
    try:
        data = _build_here(kind, arg)
    except (ModelLoadError, ValueError, OSError) as exc:  # structure refused, unreadable file
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return EXIT_REFUSED
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
