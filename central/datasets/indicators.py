"""The dataset card's numbers, after the usual data-quality dimensions.

completeness (script coverage — computed by ``booth_coverage`` with the device's own rule —,
missing fields), uniqueness (identical and near-duplicate media),
balance (per class, device, site, subject, microphone, and the environment: time of day, weather,
temperature, humidity, light), accuracy proxies (QC pass rates and metric
distributions), timeliness (capture → central latency), traceability (full lineage) and
accessibility (license, documentation, open media formats). Every number is computed from the
selected samples only, so the card describes exactly what an export with the same filters holds.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from central.datasets import duplicates
from central.datasets.environment import facets
from central.datasets.lineage import REQUIRED, missing
from central.datasets.samples import Sample

OPEN_MEDIA = {"image/jpeg", "image/png", "audio/wav", "audio/x-wav", "audio/flac"}
QUANTILES = (("min", 0), ("p5", 5), ("p50", 50), ("p95", 95), ("max", 100))


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean and quantiles of finite values (None where there are none)."""
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    out["mean"] = float(arr.mean()) if arr.size else None
    for name, q in QUANTILES:
        out[name] = float(np.percentile(arr, q)) if arr.size else None
    if arr.size:
        out["p90"], out["p99"] = float(np.percentile(arr, 90)), float(np.percentile(arr, 99))
    return out


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# ---------------------------------------------------------------------------- completeness


def missing_fields(samples: Sequence[Sample]) -> dict[str, dict[str, float | int]]:
    checks: dict[str, tuple[bool, Callable[[Sample], bool]]] = {
        # field: (applies only to samples with media, is missing)
        "media_stored": (True, lambda s: s.blob is not None and not s.blob.stored),
        "qc_verdict": (True, lambda s: s.verdict is None),
        "session": (False, lambda s: not s.capture.get("session_id")),
        "stream_settings": (False, lambda s: s.stream is None),
        "clock_health": (False, lambda s: not isinstance(s.meta.get("clock"), dict)),
        "utc_time": (False, lambda s: s.t_start_utc_ns is None),
        "site": (False, lambda s: s.site is None),
    }
    out: dict[str, dict[str, float | int]] = {}
    for name, (media_only, lacks) in checks.items():
        pool = [s for s in samples if s.blob is not None or not media_only]
        n = sum(1 for s in pool if lacks(s))
        out[name] = {"applicable": len(pool), "missing": n, "share": _share(n, len(pool))}
    return out


# ---------------------------------------------------------------------------- balance

ENVIRONMENT_DIMENSIONS = ("time_of_day", "weather", "temperature", "humidity", "light")


def _balance(counts: Counter[str]) -> dict[str, Any]:
    values = [v for v in counts.values() if v > 0]
    total = sum(values)
    entropy = -sum(v / total * math.log(v / total) for v in values) if total else 0.0
    return {
        "counts": dict(sorted(counts.items())),
        "groups": len(values),
        "imbalance_ratio": max(values) / min(values) if values else None,
        "normalized_entropy": entropy / math.log(len(values)) if len(values) > 1 else None,
    }


def balance(samples: Sequence[Sample]) -> dict[str, Any]:
    dims: dict[str, Counter[str]] = {
        k: Counter() for k in ("class", "device", "site", "subject", "microphone", "modality", *ENVIRONMENT_DIMENSIONS)
    }
    for s in samples:
        for label in s.labels:
            dims["class"][label] += 1
        dims["device"][s.device] += 1
        dims["site"][s.site or "(unknown)"] += 1
        dims["modality"][s.modality] += 1
        if s.session is not None and s.session.get("subject_pseudonym"):
            dims["subject"][str(s.session["subject_pseudonym"])[:12]] += 1
        if s.channel_verdicts:  # a multi-channel take: one count per microphone it recorded
            for ch in s.channel_verdicts:
                dims["microphone"][f"{s.device}/{ch.get('mic')}"] += 1
        elif s.modality == "audio":
            dims["microphone"][f"{s.device}/{s.stream_name}"] += 1
        for dim, group in facets(s.environment).items():  # only samples whose environment is known
            dims[dim][group] += 1
    return {k: _balance(v) for k, v in dims.items()}


# ---------------------------------------------------------------------------- accuracy, time, lineage


def _reason_key(reason: str) -> str:
    """A reason with its numbers blanked, so 'snr 11.8 dB < 20 dB' and 'snr 9.1 dB < 20 dB' group."""
    return re.sub(r"-?\d+(\.\d+)?", "#", reason)


def accuracy(samples: Sequence[Sample]) -> dict[str, Any]:
    profiles: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.verdict is not None:
            profiles[str(s.profile)].append(s)
    out: dict[str, Any] = {}
    for name, group in sorted(profiles.items()):
        verdicts = Counter(str(s.verdict_name) for s in group)
        reasons = Counter(_reason_key(str(r)) for s in group for r in (s.verdict or {}).get("reasons") or [])
        metrics: dict[str, list[float]] = defaultdict(list)
        for s in group:
            for k, v in ((s.verdict or {}).get("metrics") or {}).items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    metrics[k].append(float(v))
        out[name] = {
            "samples": len(group),
            "verdicts": dict(sorted(verdicts.items())),
            "pass_rate": _share(verdicts["pass"], len(group)),
            "top_reasons": [[r, n] for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:10]],
            "metrics": {k: distribution(v) for k, v in sorted(metrics.items())},
        }
    return out


def microphones(samples: Sequence[Sample]) -> dict[str, Any]:
    """QC per microphone (``device/mic``) from the channel verdicts of multi-channel takes: a take's
    own verdict is its worst channel's, so only these say which microphone failed."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        for ch in s.channel_verdicts:
            per[f"{s.device}/{ch.get('mic')}"][str(ch.get("verdict"))] += 1
    return {
        mic: {
            "samples": sum(c.values()),
            "verdicts": dict(sorted(c.items())),
            "pass_rate": _share(c["pass"], sum(c.values())),
        }
        for mic, c in sorted(per.items())
    }


def latency_s(s: Sample) -> float | None:
    """Seconds from capture (UTC) to arrival in the central store."""
    try:
        received = datetime.fromisoformat(s.received_utc).timestamp()
    except ValueError:
        return None
    if s.t_start_utc_ns is not None:
        return received - s.t_start_utc_ns / 1e9
    created = s.capture.get("created_utc")
    try:
        return received - datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return None


def timeliness(samples: Sequence[Sample]) -> dict[str, Any]:
    per_device: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        lat = latency_s(s)
        if lat is not None:
            per_device[s.device].append(lat)
    every = [v for vs in per_device.values() for v in vs]
    return {"latency_s": distribution(every), "per_device": {d: distribution(v) for d, v in sorted(per_device.items())}}


def traceability(samples: Sequence[Sample]) -> dict[str, Any]:
    lacking = Counter(f for s in samples for f in missing(s))
    full = sum(1 for s in samples if not missing(s))
    return {
        "required": list(REQUIRED),
        "full_lineage": full,
        "share": _share(full, len(samples)),
        "missing": {f: lacking[f] for f in REQUIRED if lacking[f]},
    }


def accessibility(samples: Sequence[Sample], license: str | None, description: str | None) -> dict[str, Any]:
    media_types = Counter(s.blob.media_type for s in samples if s.blob is not None)
    open_n = sum(n for t, n in media_types.items() if t in OPEN_MEDIA)
    checks = {
        "license": bool(license),
        "description": bool(description),
        "lineage_per_sample": True,
        "open_media_formats": open_n == sum(media_types.values()),
    }
    return {
        "license": license,
        "description": description,
        "media_types": dict(sorted(media_types.items())),
        "open_format_share": _share(open_n, sum(media_types.values())),
        "checks": checks,
        "score": _share(sum(checks.values()), len(checks)),
    }


def compute(
    samples: Sequence[Sample],
    blob_path: Callable[[Sample], Path | None],
    *,
    coverage: Sequence[dict[str, Any]] = (),
    license: str | None = None,
    description: str | None = None,
    near_duplicate_bits: int = duplicates.DEFAULT_MAX_BITS,
) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "modalities": dict(sorted(Counter(s.modality for s in samples).items())),
        "completeness": {"coverage": list(coverage), "missing_fields": missing_fields(samples)},
        "uniqueness": {
            "identical": duplicates.identical(samples),
            "near_duplicates": duplicates.near_duplicates(samples, blob_path, near_duplicate_bits),
        },
        "balance": balance(samples),
        "accuracy": accuracy(samples),
        "microphones": microphones(samples),
        "timeliness": timeliness(samples),
        "traceability": traceability(samples),
        "accessibility": accessibility(samples, license, description),
    }
