"""The dataset card's headline: what the selection holds, in the units people ask about first.

Date range, hours of audio, frames, sessions, participants (subject pseudonyms), sites, bytes of
media, the fieldcap version that made the card and when. Computed from the selected samples only.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from central.datasets.samples import Sample


def fieldcap_version() -> str:
    try:
        return importlib.metadata.version("fieldcap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _is_frame(s: Sample) -> bool:
    return s.blob is not None and s.blob.media_type.startswith("image/")


def headline(samples: Sequence[Sample], *, generated_utc: str | None = None) -> dict[str, Any]:
    """The headline numbers of the selected samples (JSON-ready)."""
    times = [t for t in (s.t_start_utc_ns for s in samples) if t is not None]
    audio_s = sum(s.duration_s or 0.0 for s in samples if s.modality == "audio")
    frames = sum(1 for s in samples if _is_frame(s))
    sessions = {(s.device, str(s.capture["session_id"])) for s in samples if s.capture.get("session_id")}
    participants = {
        str(s.session["subject_pseudonym"]) for s in samples if s.session and s.session.get("subject_pseudonym")
    }
    return {
        "first_utc": _utc(min(times)) if times else None,
        "last_utc": _utc(max(times)) if times else None,
        "audio_hours": audio_s / 3600.0,
        "audio_seconds": audio_s,
        "frames": frames,
        "frames_by_modality": dict(sorted(Counter(s.modality for s in samples if _is_frame(s)).items())),
        "sessions": len(sessions),
        "participants": len(participants),
        "sites": len({s.site for s in samples if s.site}),
        "devices": len({s.device for s in samples}),
        "media_bytes": sum(s.blob.size for s in samples if s.blob is not None),
        "fieldcap_version": fieldcap_version(),
        "generated_utc": generated_utc or datetime.now(UTC).isoformat(timespec="seconds"),
    }


def human_bytes(n: int) -> str:
    """1234567 → '1.2 MB' (SI units, as file managers show)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
