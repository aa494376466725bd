"""DNSMOS P.835 analyzer: SIG / BAK / OVRL mean opinion scores (1-5) without a reference.

The model scores fixed 9.01 s windows of 16 kHz audio (~0.5 s of CPU per window here). Longer
input is cut into non-overlapping windows; a remainder of at least half a window gets one more
window aligned to the end, a shorter one is left out (a 10 s take costs one window, not two, which
keeps the booth's verdict within a second). The scores are averaged. Shorter input is looped
(repeated end to end) up to one window, which is what the model's authors do too: zero padding
would read as silence and pull BAK up and SIG down. For
prompts much shorter than a window, scoring the concatenated takes of a session
(``score_concatenated``) gives a steadier figure than looping one syllable.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models import dnsmos_tiles, graph_build
from models.errors import ModelLoadError
from models.resample import to_16k
from models.runner import ModelSession

log = logging.getLogger(__name__)
_unavailable: dict[str, str] = {}  # model sha256 → why its graph cannot be tiled
_tiles_lock = threading.Lock()

WINDOW = 144160  # 9.01 s at 16 kHz


@dataclasses.dataclass(frozen=True)
class MosScores:
    sig: float
    bak: float
    ovrl: float


def windows(audio16: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One channel of 16 kHz audio → (k, 144160) windows as described in the module docstring."""
    n = audio16.shape[0]
    if n == 0:
        raise ValueError("empty audio")
    if n <= WINDOW:
        looped = np.tile(audio16, -(-WINDOW // n))[:WINDOW]
        return looped[None, :].astype(np.float32, copy=False)
    starts = list(range(0, n - WINDOW + 1, WINDOW))
    if n - (starts[-1] + WINDOW) >= WINDOW // 2:
        starts.append(n - WINDOW)  # a long remainder gets its own window, aligned to the end
    return np.stack([audio16[s : s + WINDOW] for s in starts]).astype(np.float32, copy=False)


def _calibrate(raw: npt.NDArray[np.float32], coefficients: Sequence[float]) -> float:
    return float(np.mean(np.polyval(np.asarray(coefficients, dtype=np.float64), raw)))


def tiled_sessions(session: ModelSession) -> tuple[ModelSession, ModelSession, ModelSession] | None:
    """The features / trunk / head sessions of ``models.dnsmos_tiles`` for this model, or None
    (with one warning) when its graph cannot be split."""
    if session.sha256 in _unavailable:
        return None
    with _tiles_lock:
        try:
            parts = [
                session.derived(v, graph_build.from_path(v), _reuse_activations if v == "dnsmos-trunk" else None)
                for v in dnsmos_tiles.VARIANTS
            ]
        except ModelLoadError as exc:  # TileGraphError from the child, or onnxruntime refusing
            if session.sha256 not in _unavailable:
                log.warning("%s: not run in tiles (%s); the whole graph needs ~110 MB more", session.manifest.name, exc)
            _unavailable[session.sha256] = str(exc)
            return None
    return parts[0], parts[1], parts[2]


def _reuse_activations(options: ort.SessionOptions) -> None:
    """The trunk keeps its activations in onnxruntime's arena between tiles and windows.

    Without an arena (the runner's default, which keeps RSS flat) every tile's activations are a
    fresh mapping, faulted in page by page at every run: ~15 % of DNSMOS's CPU. With the arena and
    without the memory pattern (one block per run, which the arena would round up to the next power
    of two), the arena settles at ~15 MB for 6-row tiles and ~32 MB for 19-row ones and stays there
    (measured over 60 windows of mixed lengths).
    """
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False


def _raw_tiled(parts: tuple[ModelSession, ...], batch: npt.NDArray[np.float32], rows: int) -> npt.NDArray[np.float32]:
    """Raw [k, 3] outputs for k windows, one window at a time through the tiled trunk."""
    features, trunk, head = parts
    pooled = []
    for window in batch:
        (spectrogram,) = features.run({features.input_names[0]: window[None, :]})
        pooled.append(
            dnsmos_tiles.pooled_max(lambda part: trunk.run({trunk.input_names[0]: part})[0], spectrogram, rows)
        )
    (raw,) = head.run({head.input_names[0]: np.concatenate(pooled, axis=0)})
    return np.asarray(raw, dtype=np.float32)


def score(
    session: ModelSession,
    audio16: npt.NDArray[np.float32],
    batch_size: int = 8,
    rows_per_tile: int = dnsmos_tiles.ROWS_PER_TILE,
) -> list[MosScores]:
    """Scores per channel of (n, ch) float32 audio at 16 kHz (see ``resample.to_16k``).

    On the CPU it runs the tiled graphs when the model splits (the same scores in ~15-32 MB of
    activations instead of ~96 MB of the process's memory per window); on an accelerator, whose
    memory holds the activations, and for a model that does not split, the published graph,
    ``batch_size`` windows a call.
    """
    post = session.manifest.postprocessing
    parts = tiled_sessions(session) if session.providers[0] == "CPUExecutionProvider" else None
    results = []
    for ch in range(audio16.shape[1]):
        batch = windows(np.clip(audio16[:, ch], -1.0, 1.0))
        if parts is not None:
            raw = _raw_tiled(parts, batch, rows_per_tile)
        else:
            (raw,) = session.run_batched(session.input_names[0], batch, batch_size)
        results.append(
            MosScores(
                sig=_calibrate(raw[:, 0], post["sig"]),
                bak=_calibrate(raw[:, 1], post["bak"]),
                ovrl=_calibrate(raw[:, 2], post["ovrl"]),
            )
        )
    return results


def score_concatenated(
    session: ModelSession,
    takes: Sequence[npt.NDArray[np.float32]],
    sample_rate: int,
    rows_per_tile: int = dnsmos_tiles.ROWS_PER_TILE,
) -> MosScores:
    """One score for several short mono takes of a session, joined end to end."""
    if not takes:
        raise ValueError("no takes to score")
    joined = np.concatenate([np.asarray(t, dtype=np.float32).reshape(-1) for t in takes])
    return score(session, to_16k(joined[:, None], sample_rate), rows_per_tile=rows_per_tile)[0]
