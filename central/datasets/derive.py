"""Derived takes in an export: speech trimmed to the VAD's trim points and loudness-normalised.

``fieldcap export --derive trim,normalize`` adds, beside every speech take's original (always
exported unchanged), ``derived/KEY.trim+normalize.wav``:

- ``trim`` cuts the take to the trim points the device's QC stored in the take's verdict metrics
  (``trim_start_s``/``trim_end_s``: Silero VAD speech with the profile's padding);
- ``normalize`` applies one gain to all channels so the integrated BS.1770 loudness (channel
  powers summed, as pyloudnorm measures a file) is the target (-23 LUFS, EBU R128, by default),
  then a linked look-ahead peak limiter (5 ms attack and release, a minimum filter smoothed by a
  moving average, so the gain is always at or under what each sample needs) keeps every sample at
  or under the peak limit; the gain is re-fitted after limiting, along the slope the rounds measure
  (on a peaky take a dB of gain adds far less than 1 LU once the limiter works), until the loudness
  is within 0.05 LU; the manifest records the loudness reached.

A speech take is an audio capture whose verdict has trim points (the VAD found speech). Each
derived file is screened again by ``models.Screener`` with the take's QC profile; the lineage of
each (source sha256, every transform and its parameters) and the new QC verdict and metrics go in
the manifest under ``derived``. The audio is computed at plan time (for its sha256 and metrics)
and again when written; both are deterministic, and the write checks the sha256.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile

from central.datasets.errors import DatasetError
from central.datasets.plan import DERIVATIONS, ExportContext
from central.datasets.samples import Sample
from central.datasets.snapshot import FileSpec, fingerprint
from models import audio_metrics
from models.errors import ModelError, ProfileError
from models.screener import Screener

METHOD = "fieldcap.derive/1"  # part of the fingerprints: a new method rewrites derived files
LIMITER_S = 0.005
ROUNDS = 16
MAX_STEP_DB = 12.0
TOLERANCE_LU = 0.05

Audio = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Derived:
    """One derived take: its audio and what was done to make it."""

    audio: Audio
    sample_rate: int
    subtype: str
    transforms: list[dict[str, Any]]


def trim_points(s: Sample) -> tuple[float, float] | None:
    """The take's trim points from its verdict, if the VAD found speech and they make sense."""
    metrics = (s.verdict or {}).get("metrics")
    if not isinstance(metrics, dict):
        return None
    start, end = metrics.get("trim_start_s"), metrics.get("trim_end_s")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (start, end))
    if not ok or not 0 <= float(start) < float(end):  # type: ignore[arg-type]
        return None
    return float(start), float(end)  # type: ignore[arg-type]


def is_speech_take(s: Sample) -> bool:
    return s.modality == "audio" and s.blob is not None and trim_points(s) is not None


def _limit(x: Audio, ceiling: float, sample_rate: int) -> tuple[Audio, int]:
    """Linked look-ahead limiter: (limited audio, samples that needed gain reduction)."""
    peak = np.max(np.abs(x), axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    over = int(np.count_nonzero(need < 1.0))
    if not over:
        return x, 0
    w = max(1, int(LIMITER_S * sample_rate))
    padded = np.pad(need, (w, w), constant_values=1.0)
    floor = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1).min(axis=1)  # needs of ±w
    half = w // 2
    smooth_in = np.pad(floor, (half, half), mode="edge")
    sums = np.concatenate([[0.0], np.cumsum(smooth_in)])
    gain = (sums[2 * half + 1 :] - sums[: -(2 * half + 1)]) / (2 * half + 1)  # each term <= need here
    out = x * np.minimum(gain, need)[:, None]
    return out, over


def normalize(x: Audio, sample_rate: int, target_lufs: float, peak_dbfs: float) -> tuple[Audio, dict[str, Any]]:
    """``x`` at ``target_lufs`` (all channels, one gain) with no sample over ``peak_dbfs``."""
    before = audio_metrics.programme_loudness_lufs(x.astype(np.float32), sample_rate)
    if not math.isfinite(before):
        raise DatasetError("silent: no loudness to normalise")
    ceiling = 10 ** (peak_dbfs / 20)
    gain_db = target_lufs - before
    limited, out, reached, applied = 0, x, before, gain_db
    previous: tuple[float, float] | None = None  # (gain, loudness reached) of the round before
    for _ in range(ROUNDS):
        applied = gain_db
        out, limited = _limit(x * 10 ** (applied / 20), ceiling, sample_rate)
        reached = audio_metrics.programme_loudness_lufs(out.astype(np.float32), sample_rate)
        if abs(reached - target_lufs) < TOLERANCE_LU or not limited:
            break
        # The more the limiter works, the less a dB of gain adds (a peaky take: far less than 1 LU):
        # step along the slope the last two rounds measured (secant), not 1 LU per dB; at most
        # MAX_STEP_DB a round.
        slope = 1.0
        if previous is not None and applied != previous[0]:
            slope = min(1.0, max(0.05, (reached - previous[1]) / (applied - previous[0])))
        previous = (applied, reached)
        gain_db = applied + max(-MAX_STEP_DB, min(MAX_STEP_DB, (target_lufs - reached) / slope))
    out = np.clip(out, -ceiling, ceiling)
    return out, {
        "op": "normalize",
        "target_lufs": target_lufs,
        "peak_limit_dbfs": peak_dbfs,
        "measure": "BS.1770-4 integrated, channels summed",
        "loudness_before_lufs": round(before, 3),
        "gain_db": round(applied, 3),
        "loudness_after_lufs": round(reached, 3),
        "limiter": {"attack_release_s": LIMITER_S, "samples_limited": limited},
    }


def derive(path: Path, s: Sample, ops: Sequence[str], target_lufs: float, peak_dbfs: float) -> Derived:
    """The derived take of ``s`` (media at ``path``); a DatasetError says why it cannot be made."""
    try:
        info = soundfile.info(str(path))
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"not readable as audio: {exc}") from None
    transforms: list[dict[str, Any]] = []
    x: Audio = data
    if "trim" in ops:
        points = trim_points(s)
        if points is None:
            raise DatasetError("no trim points in the take's verdict")
        first, last = round(points[0] * rate), min(round(points[1] * rate), x.shape[0])
        if last - first <= 0:
            raise DatasetError(f"trim points {points} lie outside the take ({x.shape[0] / rate:.3f} s)")
        x = x[first:last]
        transforms.append(
            {
                "op": "trim",
                "start_s": points[0],
                "end_s": points[1],
                "start_sample": first,
                "end_sample": last,
                "from": "verdict metrics trim_start_s/trim_end_s (Silero VAD speech + profile padding)",
            }
        )
    if "normalize" in ops:
        x, step = normalize(x, rate, target_lufs, peak_dbfs)
        transforms.append(step)
    subtype = "PCM_16" if info.subtype == "PCM_16" else "FLOAT"
    return Derived(x, int(rate), subtype, transforms)


def _stored(d: Derived) -> npt.NDArray[Any]:
    """The samples as the file holds them; PCM_16 rounds toward zero so no sample passes the limit."""
    return np.trunc(d.audio * 32767).astype(np.int16) if d.subtype == "PCM_16" else d.audio.astype(np.float32)


def encode(d: Derived) -> bytes:
    """The derived take as WAV bytes (16-bit if the original was, else 32-bit float)."""
    buf = io.BytesIO()
    soundfile.write(buf, _stored(d), d.sample_rate, subtype=d.subtype, format="WAV")
    return buf.getvalue()


def path_of(s: Sample, ops: Sequence[str]) -> str:
    return f"derived/{s.key}.{'+'.join(ops)}.wav"


def plan(samples: Sequence[Sample], ctx: ExportContext) -> tuple[list[FileSpec], dict[str, Any]]:
    """The derived files of the speech takes in ``samples`` and the manifest's ``derived`` section."""
    o = ctx.options
    ops = [op for op in DERIVATIONS if op in o.derive]
    screener = Screener()
    specs: list[FileSpec] = []
    items: list[dict[str, Any]] = []
    not_derived: list[dict[str, str]] = []
    for s in samples:
        if not is_speech_take(s):
            continue
        assert s.blob is not None
        source = ctx.blobs.local_path(s.blob.sha256)
        try:
            made = derive(source, s, ops, o.target_lufs, o.peak_dbfs)
        except DatasetError as exc:
            not_derived.append({"key": s.key, "reason": str(exc)})
            continue
        data = encode(made)
        digest = hashlib.sha256(data).hexdigest()
        qc = _screen(screener, made, s.profile)
        path = path_of(s, ops)
        items.append(
            {
                "key": s.key,
                "path": path,
                "sha256": digest,
                "size": len(data),
                "lineage": {
                    "source": {"key": s.key, "sha256": s.blob.sha256, "media_type": s.blob.media_type},
                    "method": METHOD,
                    "transforms": made.transforms,
                },
                "duration_s": round(made.audio.shape[0] / made.sample_rate, 4),
                "qc": qc,
            }
        )

        def write(dest: Path, source: Path = source, s: Sample = s) -> None:
            dest.write_bytes(encode(derive(source, s, ops, o.target_lufs, o.peak_dbfs)))

        specs.append(
            FileSpec(
                path,
                fingerprint("derived", METHOD, s.blob.sha256, ops, o.target_lufs, o.peak_dbfs, made.transforms),
                write,
                len(data),
                digest,
            )
        )
    section = {
        "transforms": ops,
        "target_lufs": o.target_lufs if "normalize" in ops else None,
        "peak_limit_dbfs": o.peak_dbfs if "normalize" in ops else None,
        "method": METHOD,
        "items": items,
        "not_derived": not_derived,
    }
    return specs, section


def _screen(screener: Screener, d: Derived, profile: str | None) -> dict[str, Any]:
    """The derived take's QC with the original's profile (the default audio profile if unknown here)."""
    try:
        screener.settings.profile(profile, "audio")
    except ProfileError:
        profile = None
    try:
        result = screener.audio(_stored(d), d.sample_rate, profile).to_dict()
    except ModelError as exc:
        return {"verdict": None, "error": str(exc)}
    return {k: result[k] for k in ("verdict", "reasons", "metrics", "profile", "profile_version", "analyzers")}
