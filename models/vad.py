"""Silero VAD analyzer: speech probability per 32 ms chunk → speech segments.

Audio is resampled to 16 kHz with ``models.resample.to_16k`` (resample_poly's anti-alias FIR, run
as a banded GEMM for integer ratios), never by dropping samples. The model is stateful: each chunk
is fed with the previous 64 samples as context plus its 512 new samples, and the recurrent state carried forward.
All channels go through the model together as one batch.

Speed: the published graph takes one chunk per call (313 calls for 10 s). We run a rebuilt graph
with the same weights that scores all chunks of a take in one call (``models.silero_graph``, built in
a child process by ``models.graph_build``);
it is checked against the published graph on a probe signal the first time, and the per-chunk
path remains as the reference and the fallback.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import numpy.typing as npt

from models import graph_build
from models.errors import ModelLoadError
from models.runner import ModelSession

VAD_RATE = 16000
CHUNK = 512
CONTEXT = 64
SEQUENCE_VARIANT = "sequence"
PROBE_TOLERANCE = 1e-4  # max |p_sequence - p_published| accepted by the self-check
SEQUENCE_BLOCK = 128  # frames (chunks x channels) per sequence call: ~4 s of mono audio, ~3 MB peak

log = logging.getLogger(__name__)
# keyed by (model sha256, providers): a graph that runs on CPU may still fail on another provider
_verified: set[tuple[str, tuple[str, ...]]] = set()  # sequence graph passed the probe check
_unavailable: dict[tuple[str, tuple[str, ...]], str] = {}  # why the sequence graph is not used
_check_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class VadResult:
    probabilities: npt.NDArray[np.float32]  # one per 32 ms chunk, max over channels
    segments: list[tuple[float, float]]  # seconds


def frames_of(audio16: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(n, ch) 16 kHz audio → read-only view (chunks, ch, 64 + 512): each chunk with the previous
    64 samples as context (zeros before the start), the last chunk zero-padded."""
    n, channels = audio16.shape
    chunks = max(1, -(-n // CHUNK))
    padded = np.zeros((channels, CONTEXT + chunks * CHUNK), dtype=np.float32)
    padded[:, CONTEXT : CONTEXT + n] = audio16.T
    stride = padded.strides
    return np.lib.stride_tricks.as_strided(
        padded,
        shape=(chunks, channels, CONTEXT + CHUNK),
        strides=(CHUNK * stride[1], stride[0], stride[1]),
        writeable=False,
    )


def chunkwise_probabilities(session: ModelSession, audio16: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The published graph, one call per 32 ms chunk (all channels as one batch): the reference
    that the sequence graph is checked against, and the fallback when it cannot be built."""
    frames = frames_of(audio16)
    chunks, channels, _ = frames.shape
    state = np.zeros((2, channels, 128), dtype=np.float32)
    sr = np.array(VAD_RATE, dtype=np.int64)
    sess = session.session
    outputs = session.output_names
    probs = np.empty((chunks, channels), dtype=np.float32)
    for i in range(chunks):
        prob, state = sess.run(outputs, {"input": np.ascontiguousarray(frames[i]), "state": state, "sr": sr})
        probs[i] = prob[:, 0]
    return probs


def sequence_probabilities(
    sequence: ModelSession, audio16: npt.NDArray[np.float32], block: int = SEQUENCE_BLOCK
) -> npt.NDArray[np.float32]:
    """The sequence graph (``models.silero_graph``): one call per ``block`` frames (chunks x
    channels) instead of one per chunk; blocks bound memory on long takes."""
    frames = frames_of(audio16)
    chunks, channels, _ = frames.shape
    hidden = int(sequence.session.get_inputs()[1].shape[2])
    h = np.zeros((1, channels, hidden), dtype=np.float32)
    c = np.zeros_like(h)
    probs = np.empty((chunks, channels), dtype=np.float32)
    step = max(1, block // channels)
    for start in range(0, chunks, step):
        part = np.ascontiguousarray(frames[start : start + step])
        p, h, c = sequence.session.run(None, {"frames": part, "h0": h, "c0": c})
        probs[start : start + step] = p
    return probs


def probe_difference(session: ModelSession, sequence: ModelSession) -> float:
    """Largest |p_sequence - p_published| over ``probe_signal`` (2 channels, 1.5 s)."""
    probe = probe_signal()
    return float(np.max(np.abs(sequence_probabilities(sequence, probe) - chunkwise_probabilities(session, probe))))


def probe_signal(seconds: float = 1.5) -> npt.NDArray[np.float32]:
    """A deterministic test signal with speech-like and silent parts: (n, 2) at 16 kHz."""
    n = int(seconds * VAD_RATE)
    t = np.arange(n) / VAD_RATE
    rng = np.random.default_rng(5)
    voiced = 0.3 * np.sin(2 * np.pi * 140 * t * (1 + 0.5 * t)) * (np.sin(2 * np.pi * 3 * t) > 0)
    noise = 0.02 * rng.standard_normal(n)
    left = voiced + noise
    right = 0.5 * voiced[::-1] + 0.05 * rng.standard_normal(n)
    return np.stack([left, right], axis=1).astype(np.float32)


_build_sequence = graph_build.from_path("silero-sequence")


def sequence_session(session: ModelSession) -> ModelSession | None:
    """The checked sequence-graph session for ``session``'s model, or None (with one warning)
    when the file cannot be rebuilt or the rebuilt graph disagrees with it on a probe signal."""
    key = (session.sha256, tuple(session.providers))
    if key in _verified:
        return session.derived(SEQUENCE_VARIANT, _build_sequence)
    if key in _unavailable:
        return None
    with _check_lock:
        if key in _verified:
            return session.derived(SEQUENCE_VARIANT, _build_sequence)
        if key in _unavailable:
            return None
        try:
            sequence = session.derived(SEQUENCE_VARIANT, _build_sequence)
            diff = probe_difference(session, sequence)
            if not diff <= PROBE_TOLERANCE:
                raise ModelLoadError(f"differs from the original graph by {diff:.2g} on the probe")
        except ModelLoadError as exc:
            _unavailable[key] = str(exc)
            log.warning("%s: sequence graph not used (%s); scoring chunk by chunk, slower", session.manifest.name, exc)
            return None
        _verified.add(key)
        return sequence


def speech_probabilities(session: ModelSession, audio16: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-chunk speech probability for each channel of 16 kHz audio (n, ch) → (chunks, ch)."""
    sequence = sequence_session(session)
    if sequence is None:
        return chunkwise_probabilities(session, audio16)
    return sequence_probabilities(sequence, audio16)


def segments_from_probabilities(
    probs: npt.NDArray[np.float32],
    threshold: float,
    min_speech_s: float,
    min_silence_s: float,
    duration_s: float,
) -> list[tuple[float, float]]:
    """Hysteresis (on at ``threshold``, off below ``threshold - 0.15``), then pauses shorter than
    ``min_silence_s`` are bridged and bursts shorter than ``min_speech_s`` dropped."""
    step = CHUNK / VAD_RATE
    off = max(0.01, threshold - 0.15)
    raw: list[list[float]] = []
    active = False
    for i, p in enumerate(probs):
        if not active and p >= threshold:
            active = True
            raw.append([i * step, (i + 1) * step])
        elif active:
            if p < off:
                active = False
            else:
                raw[-1][1] = (i + 1) * step
    merged: list[list[float]] = []
    for seg in raw:
        if merged and seg[0] - merged[-1][1] < min_silence_s:
            merged[-1][1] = seg[1]
        else:
            merged.append(seg)
    return [(round(s, 3), round(min(e, duration_s), 3)) for s, e in merged if e - s >= min_speech_s and s < duration_s]


def detect(
    session: ModelSession,
    audio16: npt.NDArray[np.float32],
    duration: float,
    *,
    threshold: float,
    min_speech_s: float,
    min_silence_s: float,
) -> VadResult:
    """Speech segments of (n, ch) 16 kHz audio lasting ``duration`` seconds at its own rate."""
    probs = speech_probabilities(session, audio16)
    combined = probs.max(axis=1)  # speech in any channel (near and mid mic hear the same speaker)
    segments = segments_from_probabilities(combined, threshold, min_speech_s, min_silence_s, duration)
    return VadResult(probabilities=combined, segments=segments)
