"""Pre-annotation exports: Praat TextGrid and Label Studio predictions."""

from __future__ import annotations

import json
import re

import pytest

from models import Annotation
from models.exports import label_studio_task, textgrid


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


def test_label_studio_boxes_in_percent_and_segments_in_seconds() -> None:
    face = Annotation(
        kind="face",
        label="face",
        model="centerface",
        model_version="1",
        score=0.8,
        geometry={"x": 100, "y": 50, "w": 200, "h": 100},
    )
    task = label_studio_task([face], {"image": "/data/a.jpg"}, width=1000, height=500)
    json.dumps(task)
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "centerface@1"
    value = prediction["result"][0]["value"]
    assert value == {
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 20.0,
        "rotation": 0,
        "rectanglelabels": ["face"],
    }
    assert prediction["result"][0]["to_name"] == "image"
    audio = label_studio_task([_speech(0.5, 1.0)], {"audio": "/data/a.wav"})
    assert audio["predictions"][0]["result"][0]["value"] == {
        "start": 0.5,
        "end": 1.0,
        "labels": ["speech"],
    }
    with pytest.raises(ValueError, match="width and height"):
        label_studio_task([face], {"image": "x"})
