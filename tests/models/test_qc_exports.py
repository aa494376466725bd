"""Pre-annotation export: Praat TextGrid."""

from __future__ import annotations

import re

import pytest

from models import Annotation
from models.exports import textgrid


def _speech(start: float, end: float) -> Annotation:
    return Annotation(
        kind="speech_segment",
        label="speech",
        model="silero-vad",
        model_version="6.2.3",
        score=0.9,
        t_start_s=start,
        t_end_s=end,
    )


def test_textgrid_tiles_the_take() -> None:
    text = textgrid([_speech(0.5, 1.2), _speech(1.1, 2.0), (2.5, 9.0)], duration_s=3.0)
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"')
    bounds = [float(v) for v in re.findall(r"x(?:min|max) = ([0-9.]+)", text)][4:]
    pairs = list(zip(bounds[::2], bounds[1::2], strict=True))
    assert pairs == [(0, 0.5), (0.5, 2.0), (2.0, 2.5), (2.5, 3.0)]
    assert re.findall(r'text = "(.*)"', text) == ["", "speech", "", "speech"]
    assert "intervals: size = 4" in text


def test_textgrid_rejects_bad_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        textgrid([], 0)
