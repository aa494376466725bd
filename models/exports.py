"""Speech segments as a Praat TextGrid (long text format), a pre-annotation annotators already use.

One interval tier covers the whole take, speech intervals labelled, gaps left empty: it opens in
Praat and imports into most ASR/TTS tools. Label Studio tasks are written by the dataset export
(``fieldcap export --format labelstudio``).
"""

from __future__ import annotations

from collections.abc import Iterable

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
