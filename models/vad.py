"""Silero VAD analyzer: speech probability per 32 ms chunk → speech segments.

Audio is resampled to 16 kHz with ``scipy.signal.resample_poly`` (a polyphase FIR with an
anti-alias low-pass), never by dropping samples. The model is stateful: each chunk is fed with the
previous 64 samples as context plus its 512 new samples, and the recurrent state carried forward.
All channels go through the model together as one batch.
"""

from __future__ import annotations

import dataclasses
from math import gcd

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from models.runner import ModelSession

VAD_RATE = 16000
CHUNK = 512
CONTEXT = 64


def to_16k(x: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    """(n, ch) float32 at ``sample_rate`` → (m, ch) float32 at 16 kHz."""
    if sample_rate == VAD_RATE:
        return x
    g = gcd(VAD_RATE, sample_rate)
    out = resample_poly(x, VAD_RATE // g, sample_rate // g, axis=0)
    return np.asarray(out, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class VadResult:
    probabilities: npt.NDArray[np.float32]  # one per 32 ms chunk, max over channels
    segments: list[tuple[float, float]]  # seconds


def speech_probabilities(session: ModelSession, audio16: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-chunk speech probability for each channel of 16 kHz audio (n, ch) → (chunks, ch)."""
    n, channels = audio16.shape
    chunks = max(1, -(-n // CHUNK))
    padded = np.zeros((channels, CONTEXT + chunks * CHUNK), dtype=np.float32)
    padded[:, CONTEXT : CONTEXT + n] = audio16.T
    # frame i = 64 samples of context + chunk i; a strided view, no copy
    stride = padded.strides
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(chunks, channels, CONTEXT + CHUNK),
        strides=(CHUNK * stride[1], stride[0], stride[1]),
        writeable=False,
    )
    state = np.zeros((2, channels, 128), dtype=np.float32)
    sr = np.array(VAD_RATE, dtype=np.int64)
    sess = session.session
    outputs = session.output_names
    probs = np.empty((chunks, channels), dtype=np.float32)
    for i in range(chunks):
        prob, state = sess.run(outputs, {"input": np.ascontiguousarray(frames[i]), "state": state, "sr": sr})
        probs[i] = prob[:, 0]
    return probs


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
