"""Anti-alias resampling to 16 kHz; integer decimation runs as one banded matrix product.

``scipy.signal.resample_poly(x, 1, d)`` computes ``y[k] = sum_j h[j] * x[k*d + j - 10*d]`` with
``h = firwin(20*d + 1, 1/d, window=("kaiser", 5.0))``: a proper low-pass before dropping samples.
Its polyphase loop runs at scalar speed (~8 ms for 10 s at 48 kHz on the reference machine, a
quarter of the audio QC budget). Grouping ``ROW_OUTPUTS`` consecutive outputs per row turns the
same sums into ``X @ H``: X holds one window of input per row (rows overlap by the filter length),
H is the banded matrix of the same taps. onnxruntime's GEMM does this ~5x faster, one thread, in
blocks that bound memory. The results equal ``resample_poly``'s within float32 rounding
(tests/models/test_qc_speed.py). The taps are built here with numpy (``firwin``'s windowed sinc)
and ratios that are not integer decimations (44.1 kHz) go through soxr, so the agent never
imports ``scipy.signal`` (~80 MB of RSS, see ``models.iir``).
"""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import soxr

from models import graph_build

TARGET_RATE = 16000
ROW_OUTPUTS = 32  # outputs per GEMM row: fastest of 16/32/64/128 measured at d = 3
BLOCK_ROWS = 2048  # rows per call: 65536 outputs (4 s at 16 kHz), ~1.2 MB of input copy at 48 kHz
MAX_FACTOR = 12  # 192 kHz → 16 kHz; larger factors go through soxr

F32 = npt.NDArray[np.float32]
_lock = threading.Lock()
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def taps(factor: int) -> npt.NDArray[np.float64]:
    """resample_poly's default anti-alias filter for down-sampling by ``factor`` (up = 1):
    ``firwin(20 * factor + 1, 1 / factor, window=("kaiser", 5.0))``, a Kaiser-windowed sinc
    with unit gain at DC."""
    half = 10 * factor
    m = np.arange(-half, half + 1, dtype=np.float64)
    h = np.sinc(m / factor) / factor * np.kaiser(2 * half + 1, 5.0)
    return np.asarray(h / h.sum(), dtype=np.float64)


def _window(factor: int) -> int:
    """Input samples that one row of ``ROW_OUTPUTS`` outputs depends on."""
    return factor * (ROW_OUTPUTS - 1) + len(taps(factor))


@functools.lru_cache(maxsize=8)
def _band(factor: int) -> F32:
    """The banded matrix H: column ``c`` holds the taps shifted by ``factor * c`` (read-only)."""
    h = taps(factor).astype(np.float32)
    band = np.zeros((_window(factor), ROW_OUTPUTS), dtype=np.float32)
    for col in range(ROW_OUTPUTS):
        band[factor * col : factor * col + len(h), col] = h
    band.setflags(write=False)
    return band


def decimation_model(factor: int) -> bytes:
    """The banded-matrix graph for ``factor`` (built by ``models.graph_build`` in a child)."""
    from onnx import TensorProto, helper, numpy_helper  # the graph-building child only

    band = _band(factor)
    length = band.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["windows", "band"], ["out"])],
        f"decimate_{factor}",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["rows", length])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", ROW_OUTPUTS])],
        [numpy_helper.from_array(band, "band")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@functools.lru_cache(maxsize=8)
def _session(factor: int) -> ort.InferenceSession | None:
    """The GEMM session for ``factor``, or None (cached, with one warning) when its graph cannot be
    built: then numpy multiplies by the same matrix, slower, instead of every take retrying."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # ~1 ms of GEMM: threads would cost more than they save
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # an arena would keep the largest output ever (an hour-long take's) for good
    try:
        model = graph_build.build("decimate", str(factor))
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # GraphBuildError, or onnxruntime's several exception types
        log.warning("resampling by %d with numpy (the onnxruntime graph is unavailable: %s)", factor, exc)
        return None


def decimate(x: F32, factor: int) -> F32:
    """(n, ch) float32 → (ceil(n / factor), ch): ``resample_poly(x, 1, factor, axis=0)``."""
    n, channels = x.shape
    out_len = -(-n // factor)
    half = 10 * factor
    rows = -(-out_len // ROW_OUTPUTS)
    length = _window(factor)
    hop = factor * ROW_OUTPUTS
    padded = np.zeros((channels, rows * hop + length), dtype=np.float32)
    padded[:, half : half + n] = x.T
    windows = np.lib.stride_tricks.as_strided(
        padded,
        shape=(channels, rows, length),
        strides=(padded.strides[0], hop * padded.strides[1], padded.strides[1]),
        writeable=False,
    )
    with _lock:  # first use builds the session
        session = _session(factor)
    out = np.empty((channels, rows * ROW_OUTPUTS), dtype=np.float32)
    for ch in range(channels):
        for start in range(0, rows, BLOCK_ROWS):
            part = np.ascontiguousarray(windows[ch, start : start + BLOCK_ROWS])
            y = part @ _band(factor) if session is None else session.run(None, {"windows": part})[0]
            out[ch, start * ROW_OUTPUTS : (start + len(part)) * ROW_OUTPUTS] = y.reshape(-1)
    return np.ascontiguousarray(out[:, :out_len].T)


def to_16k(x: F32, sample_rate: int) -> F32:
    """(n, ch) float32 at ``sample_rate`` → (m, ch) float32 at 16 kHz, anti-aliased."""
    if sample_rate == TARGET_RATE:
        return x
    if sample_rate % TARGET_RATE == 0 and sample_rate // TARGET_RATE <= MAX_FACTOR:
        return decimate(x, sample_rate // TARGET_RATE)
    out = soxr.resample(x, sample_rate, TARGET_RATE, quality="HQ")
    return np.asarray(out, dtype=np.float32).reshape(-1, x.shape[1])
