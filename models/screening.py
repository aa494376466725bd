"""Result types of a screening: metrics, verdict with reasons, annotations and provenance."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

Modality = Literal["audio", "visible", "thermal"]
Verdict = Literal["pass", "fail", "review"]
MetricValue = float | int | None


@dataclasses.dataclass(frozen=True)
class AnalyzerInfo:
    """Which analyzer produced a result; stored with every verdict so results can be traced."""

    name: str
    version: str
    model_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Annotation:
    """One pre-annotation with its provenance (a catalog ``annotations`` row).

    Times are seconds from the start of the take; ``geometry`` holds pixel boxes
    (``{"x": .., "y": .., "w": .., "h": ..}``) for image annotations.
    """

    kind: str
    label: str
    model: str
    model_version: str
    score: float | None = None
    t_start_s: float | None = None
    t_end_s: float | None = None
    geometry: dict[str, Any] | None = None
    model_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Screening:
    """Outcome of screening one capture.

    ``reasons`` are sentences an operator can act on; they are empty only when the verdict is
    ``pass``. ``profile_version`` changes whenever any threshold of the profile changes.
    """

    modality: Modality
    metrics: dict[str, MetricValue]
    verdict: Verdict
    reasons: list[str]
    profile: str
    profile_version: str
    annotations: list[Annotation] = dataclasses.field(default_factory=list)
    analyzers: list[AnalyzerInfo] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite floats become ``None``)."""
        return {
            "modality": self.modality,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "profile": self.profile,
            "profile_version": self.profile_version,
            "annotations": [a.to_dict() for a in self.annotations],
            "analyzers": [a.to_dict() for a in self.analyzers],
        }


def _json_number(value: MetricValue) -> MetricValue:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
