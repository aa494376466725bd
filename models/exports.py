"""Pre-annotations in the formats annotators already use.

- Speech segments → Praat TextGrid (long text format), one interval tier covering the whole take,
  speech intervals labelled, gaps left empty: opens in Praat and imports into most ASR/TTS tools.
- Image boxes and audio segments → a Label Studio task with ``predictions``: boxes in percent of
  the image size (``rectanglelabels``), segments in seconds (``labels``), each with its score.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from models.screening import Annotation


def _escape(text: str) -> str:
    return text.replace('"', '""')


Span = tuple[float, float, str]


def _merged_spans(segments: Iterable[Annotation | tuple[float, float]], duration_s: float, label: str) -> list[Span]:
    spans: list[Span] = []
    for seg in segments:
        if isinstance(seg, Annotation):
            if seg.t_start_s is None or seg.t_end_s is None:
                continue
            start, end, text = seg.t_start_s, seg.t_end_s, seg.label or label
        else:
            start, end = seg
            text = label
        start, end = max(0.0, float(start)), min(duration_s, float(end))
        if end > start:
            spans.append((start, end, text))
    spans.sort()
    merged: list[Span] = []
    for start, end, text in spans:
        if merged and start <= merged[-1][1]:
            prev = merged[-1]
            merged[-1] = (prev[0], max(prev[1], end), prev[2])
        else:
            merged.append((start, end, text))
    return merged


def _fill_gaps(spans: list[Span], duration_s: float) -> list[Span]:
    """TextGrid interval tiers must tile the whole take: gaps become empty intervals."""
    intervals: list[Span] = []
    cursor = 0.0
    for start, end, text in spans:
        if start > cursor:
            intervals.append((cursor, start, ""))
        intervals.append((start, end, text))
        cursor = end
    if cursor < duration_s:
        intervals.append((cursor, duration_s, ""))
    return intervals


def textgrid(
    segments: Iterable[Annotation | tuple[float, float]],
    duration_s: float,
    tier: str = "speech",
    label: str = "speech",
) -> str:
    """A TextGrid for ``segments`` (annotations with times, or (start, end) pairs) in a take of
    ``duration_s`` seconds. Overlapping or out-of-range segments are merged and clipped."""
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    intervals = _fill_gaps(_merged_spans(segments, duration_s, label), duration_s)
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {duration_s:.6g}",
        "tiers? <exists>",
        "size = 1",
        "item []:",
        "    item [1]:",
        '        class = "IntervalTier"',
        f'        name = "{_escape(tier)}"',
        "        xmin = 0",
        f"        xmax = {duration_s:.6g}",
        f"        intervals: size = {len(intervals)}",
    ]
    for i, (start, end, text) in enumerate(intervals, 1):
        lines += [
            f"        intervals [{i}]:",
            f"            xmin = {start:.6g}",
            f"            xmax = {end:.6g}",
            f'            text = "{_escape(text)}"',
        ]
    return "\n".join(lines) + "\n"


def label_studio_task(
    annotations: Sequence[Annotation],
    data: dict[str, Any],
    *,
    width: int | None = None,
    height: int | None = None,
    from_name: str = "label",
    to_name: str | None = None,
) -> dict[str, Any]:
    """A Label Studio task (``{"data": ..., "predictions": [...]}``) with one prediction per model.

    ``data`` is the task data, e.g. ``{"image": "s3://bucket/frame.jpg"}`` or ``{"audio": ...}``;
    ``to_name`` defaults to its first key. Image boxes need ``width``/``height`` (pixels) because
    Label Studio stores boxes in percent.
    """
    if not data:
        raise ValueError("task data must name the media, e.g. {'image': URL}")
    target = to_name or next(iter(data))
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    scores: dict[tuple[str, str], list[float]] = {}
    for ann in annotations:
        result = _result(ann, width, height, from_name, target)
        if result is None:
            continue
        key = (ann.model, ann.model_version)
        by_model.setdefault(key, []).append(result)
        if ann.score is not None:
            scores.setdefault(key, []).append(ann.score)
    predictions = []
    for (model, version), results in by_model.items():
        model_scores = scores.get((model, version), [])
        predictions.append(
            {
                "model_version": f"{model}@{version}",
                "score": round(sum(model_scores) / len(model_scores), 4) if model_scores else None,
                "result": results,
            }
        )
    return {"data": dict(data), "predictions": predictions}


def _result(
    ann: Annotation, width: int | None, height: int | None, from_name: str, to_name: str
) -> dict[str, Any] | None:
    base: dict[str, Any] = {"id": uuid.uuid4().hex[:10], "from_name": from_name, "to_name": to_name}
    if ann.score is not None:
        base["score"] = ann.score
    geometry = ann.geometry or {}
    if {"x", "y", "w", "h"} <= geometry.keys():
        if not width or not height:
            raise ValueError("image annotations need the image width and height")
        base.update(
            type="rectanglelabels",
            original_width=width,
            original_height=height,
            image_rotation=0,
            value={
                "x": 100.0 * geometry["x"] / width,
                "y": 100.0 * geometry["y"] / height,
                "width": 100.0 * geometry["w"] / width,
                "height": 100.0 * geometry["h"] / height,
                "rotation": 0,
                "rectanglelabels": [ann.label],
            },
        )
        return base
    if ann.t_start_s is not None and ann.t_end_s is not None and ann.kind != "trim":
        base.update(type="labels", value={"start": ann.t_start_s, "end": ann.t_end_s, "labels": [ann.label]})
        return base
    return None
