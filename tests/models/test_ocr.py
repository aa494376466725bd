"""PP-OCR on nameplates rendered with OpenCV: our DB post-processing, crops and CTC decoding."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from models import QcSettings, Screener, ocr

PLATE_LINES = ["MODEL XR-200", "SN 48213", "400V 50Hz"]
PUMP_LINES = ["PUMP P-17 3.5kW", "IP55 2900rpm"]


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def nameplate(lines: list[str], corners: list[tuple[int, int]], seed: int) -> npt.NDArray[np.uint8]:
    """A grey plate with a border and dark text, sensor noise, warped in perspective onto a
    1280x720 background and slightly defocused, like a handheld photo of a nameplate."""
    rng = np.random.default_rng(seed)
    plate = np.full((120 + 100 * len(lines), 1000, 3), (188, 192, 196), np.uint8)
    height, width = plate.shape[:2]
    cv2.rectangle(plate, (12, 12), (width - 13, height - 13), (60, 60, 60), 4)
    for row, text in enumerate(lines):
        cv2.putText(plate, text, (50, 100 + 100 * row), cv2.FONT_HERSHEY_DUPLEX, 2.0, (30, 30, 30), 3, cv2.LINE_AA)
    noisy = np.clip(plate + rng.normal(0, 8, plate.shape), 0, 255).astype(np.uint8)
    photo = np.full((720, 1280, 3), (70, 90, 80), np.uint8)
    source = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(source, np.array(corners, dtype=np.float32))
    cv2.warpPerspective(noisy, matrix, (1280, 720), dst=photo, borderMode=cv2.BORDER_TRANSPARENT)
    return np.asarray(cv2.GaussianBlur(photo, (3, 3), 0.8), dtype=np.uint8)


@pytest.fixture(scope="module")
def reader(model_dir: pathlib.Path) -> Screener:
    settings = QcSettings.model_validate({"profiles": {"camera-visible": {"detect_text": True}}})
    return Screener(settings, model_dir=model_dir)


def test_nameplate_lines_are_read_in_order_with_provenance(reader: Screener) -> None:
    photo = nameplate(PLATE_LINES, [(170, 160), (1110, 190), (1090, 540), (185, 560)], seed=1)
    result = reader.image(photo)
    lines = [a for a in result.annotations if a.kind == "ocr_text"]
    assert [a.label for a in lines] == [a.label for a in lines if a.label]  # no empty lines
    assert len(lines) == len(PLATE_LINES), [a.label for a in lines]
    for found, expected in zip(lines, PLATE_LINES, strict=True):
        assert edit_distance(found.label.replace(" ", ""), expected.replace(" ", "")) <= 2, (found.label, expected)
        assert found.score is not None and found.score >= 0.5
        assert found.model == "ppocr-rec" and found.model_sha256 and found.model_version == "PP-OCRv4"
        geometry = found.geometry or {}
        assert geometry["box_model"] == "ppocr-det" and geometry["box_model_sha256"]
        assert len(geometry["points"]) == 4
        # the box lies on the plate (warped into x 170..1110, y 160..560)
        assert geometry["x"] >= 160 and geometry["x"] + geometry["w"] <= 1110
        assert geometry["y"] >= 160 and geometry["y"] + geometry["h"] <= 560
    tops = [(a.geometry or {})["y"] for a in lines]
    assert tops == sorted(tops)
    assert result.metrics["text_lines"] == len(PLATE_LINES)
    assert {"ppocr-det", "ppocr-rec"} <= {a.name for a in result.analyzers}


def test_a_rotated_plate_with_other_text(reader: Screener) -> None:
    photo = nameplate(PUMP_LINES, [(260, 250), (1150, 140), (1180, 420), (290, 530)], seed=2)  # ~7° tilt
    lines = [a.label for a in reader.image(photo).annotations if a.kind == "ocr_text"]
    assert len(lines) == len(PUMP_LINES), lines
    for found, expected in zip(lines, PUMP_LINES, strict=True):
        assert edit_distance(found.replace(" ", ""), expected.replace(" ", "")) <= 2, (found, expected)


def test_blank_and_noise_images_give_no_text(reader: Screener) -> None:
    rng = np.random.default_rng(3)
    blank = np.full((480, 640, 3), 128, np.uint8)
    noise = np.clip(rng.normal(128, 12, (480, 640, 3)), 0, 255).astype(np.uint8)
    for image in (blank, noise):
        result = reader.image(image)
        assert [a for a in result.annotations if a.kind == "ocr_text"] == []
        assert result.metrics["text_lines"] == 0


def test_text_reading_is_off_by_default(model_dir: pathlib.Path) -> None:
    photo = nameplate(PLATE_LINES[:1], [(100, 100), (1100, 100), (1100, 320), (100, 320)], seed=4)
    result = Screener(model_dir=model_dir).image(photo)
    assert "text_lines" not in result.metrics
    assert not any(a.kind == "ocr_text" for a in result.annotations)
    assert not any(a.name.startswith("ppocr") for a in result.analyzers)


def test_missing_ocr_models_give_review_with_the_fix(tmp_path: pathlib.Path) -> None:
    settings = QcSettings.model_validate({"profiles": {"camera-visible": {"detect_text": True}}})
    photo = nameplate(PLATE_LINES[:1], [(100, 100), (1100, 100), (1100, 320), (100, 320)], seed=5)
    result = Screener(settings, model_dir=tmp_path).image(photo)
    assert result.verdict == "review"
    assert any("ppocr-det" in r and "fieldcap models fetch" in r for r in result.reasons), result.reasons


# --- the pieces, on inputs whose answer is known -----------------------------------------------


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    classes = ("", "A", "B", " ")
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]  # A A _ A B B _ _ ' ' B → "AAB B"
    probs = np.full((len(steps), len(classes)), 0.01, np.float32)
    probs[np.arange(len(steps)), steps] = 0.9
    text, score = ocr.ctc_greedy(probs, classes)
    assert text == "AAB B"
    assert score == pytest.approx(0.9)
    only_blanks = np.zeros((5, len(classes)), np.float32)
    only_blanks[:, 0] = 1.0
    assert ocr.ctc_greedy(only_blanks, classes) == ("", 0.0)


def test_db_boxes_are_grown_by_the_unclip_distance_and_read_in_order() -> None:
    prob = np.zeros((200, 400), np.float32)
    prob[120:140, 30:130] = 0.9  # second line, left word
    prob[120:140, 200:330] = 0.8  # second line, right word
    prob[40:60, 50:350] = 0.95  # first line
    prob[180:181, 10:12] = 0.99  # a speck: below the minimum box side
    boxes = ocr.boxes_from_probability(prob, ocr.OcrOptions())
    assert len(boxes) == 3
    order = ocr.reading_order([b for b, _ in boxes])
    xs = [(float(boxes[i][0][:, 0].min()), float(boxes[i][0][:, 1].min())) for i in order]
    assert xs[0][1] < 40 and xs[1][0] < xs[2][0]  # first line on top, then left before right
    first = boxes[order[0]][0]
    w, h = 300 + 1, 20 + 1  # the blob after the 2x2 dilation
    d = w * h * 1.6 / (2 * (w + h))
    assert float(np.ptp(first[:, 0])) == pytest.approx(w - 1 + 2 * d, abs=2.0)
    assert float(np.ptp(first[:, 1])) == pytest.approx(h - 1 + 2 * d, abs=2.0)
    # score: mean probability over the (dilated) contour, 300x20 text pixels in 301x21
    assert boxes[order[0]][1] == pytest.approx(0.95 * 300 * 20 / (w * h), abs=0.002)
