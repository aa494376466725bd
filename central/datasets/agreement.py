"""Agreement measures between annotators, as small pure functions (no store, no I/O).

- labels: Cohen's kappa for two raters, Fleiss' kappa for more (both chance-corrected);
- boxes: intersection over union, and a greedy one-to-one matching of two box lists;
- time segments: temporal IoU (overlap), boundary deviation in seconds, the same matching;
- transcripts: character and word error rate (Levenshtein distance over the reference length).

A kappa is ``None`` where it is undefined: every rating falls in one category, so chance agreement
is already 1 (the raters agree, but nothing can be said about agreement beyond chance).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' categorical ratings of the same items (in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"two raters rated {len(a)} and {len(b)} items; kappa needs the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa; ``counts[i][j]`` = raters who put item ``i`` in category ``j``.

    Items may have different numbers of raters (each at least 2): the per-item agreement is
    ``sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))`` and category shares are pooled over all ratings,
    which is Fleiss' formula exactly when every item has the same number of raters.
    """
    rows = [list(r) for r in counts if sum(r) >= 2]
    if not rows:
        return None
    total = sum(sum(r) for r in rows)
    per_item = [sum(c * (c - 1) for c in r) / (sum(r) * (sum(r) - 1)) for r in rows]
    observed = sum(per_item) / len(rows)
    width = max(len(r) for r in rows)
    shares = [sum(r[j] for r in rows if j < len(r)) / total for j in range(width)]
    expected = sum(p * p for p in shares)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


# ---------------------------------------------------------------------------- boxes


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    h: float


def as_box(geometry: Any) -> Box | None:
    """A box from an annotation's ``geometry`` (``x, y, w, h`` in pixels); ``None`` if it is not one."""
    if not isinstance(geometry, dict):
        return None
    values = [geometry.get(k) for k in ("x", "y", "w", "h")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    x, y, w, h = (float(v) for v in values)  # type: ignore[arg-type]
    return Box(x, y, w, h) if w >= 0 and h >= 0 else None


def box_iou(a: Box, b: Box) -> float:
    """Area of the intersection over area of the union (0 for two empty boxes)."""
    iw = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def match(a: Sequence[tuple[str, Any]], b: Sequence[tuple[str, Any]], iou: Any) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of same-label shapes by descending IoU (pairs with IoU > 0 only).

    ``a`` and ``b`` are (label, shape) lists; returns (index in a, index in b, IoU)."""
    pairs = sorted(
        ((iou(sa, sb), i, j) for i, (la, sa) in enumerate(a) for j, (lb, sb) in enumerate(b) if la == lb),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value > 0 and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j, value))
    return out


def matched_agreement(a: Sequence[tuple[str, Any]], b: Sequence[tuple[str, Any]], iou: Any) -> float:
    """Sum of matched IoUs over the larger count: 1 only when every shape has an identical partner."""
    if not a and not b:
        return 1.0
    return sum(v for _, _, v in match(a, b, iou)) / max(len(a), len(b))


# ---------------------------------------------------------------------------- time segments


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float


def segment_iou(a: Segment, b: Segment) -> float:
    """Temporal overlap: length of the intersection over length of the union."""
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = (a.end - a.start) + (b.end - b.start) - inter
    return inter / union if union > 0 else 0.0


def boundary_deviation(a: Sequence[tuple[str, Segment]], b: Sequence[tuple[str, Segment]]) -> float | None:
    """Mean absolute start and end difference (s) of matched segments; ``None`` if none match."""
    pairs = match(a, b, segment_iou)
    if not pairs:
        return None
    total = sum(abs(a[i][1].start - b[j][1].start) + abs(a[i][1].end - b[j][1].end) for i, j, _ in pairs)
    return total / (2 * len(pairs))


# ---------------------------------------------------------------------------- transcripts


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Edits (insertions, deletions, substitutions) that turn ``a`` into ``b``."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _rate(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    return levenshtein(ref, hyp) / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference`` (may exceed 1)."""
    return _rate(reference, hypothesis)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (words split on whitespace) of ``hypothesis`` against ``reference``."""
    return _rate(reference.split(), hypothesis.split())
