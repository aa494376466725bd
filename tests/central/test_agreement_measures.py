"""The agreement measures against values computed by hand (or published with the method)."""

from __future__ import annotations

import pytest

from central.datasets.agreement import (
    Box,
    Segment,
    as_box,
    boundary_deviation,
    box_iou,
    cer,
    cohen_kappa,
    fleiss_kappa,
    levenshtein,
    matched_agreement,
    segment_iou,
    wer,
)
from central.datasets.consistency import compare, parts


def test_cohen_kappa_by_hand() -> None:
    # agree on 7 of 10 (p_o 0.7); rater a says 1 six times, b five times: p_e = .6*.5 + .4*.5 = .5
    a = [1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    # systematic opposite: p_o 0, p_e .5 -> -1
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # everyone says the same single category: chance agreement 1, kappa undefined
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([1], [1, 0])


def test_fleiss_kappa_matches_the_published_example() -> None:
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa 0.210
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    kappa = fleiss_kappa(table)
    assert kappa is not None and round(kappa, 3) == 0.210
    # three raters, two categories, by hand: items (3,0),(0,3),(2,1),(1,2)
    # P_i = 1, 1, 1/3, 1/3 -> P = 2/3; p = (6/12, 6/12) -> P_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1], [1, 2]]) == pytest.approx(1 / 3)
    assert fleiss_kappa([[2, 0], [2, 0]]) is None


def test_box_and_segment_overlap_by_hand() -> None:
    assert box_iou(Box(0, 0, 10, 10), Box(5, 5, 10, 10)) == pytest.approx(25 / 175)
    assert box_iou(Box(0, 0, 10, 10), Box(20, 20, 5, 5)) == 0.0
    assert as_box({"x": 1, "y": 2, "w": 3, "h": 4}) == Box(1, 2, 3, 4)
    assert as_box({"x": "1", "y": 2, "w": 3, "h": 4}) is None and as_box({"x": 1}) is None
    assert as_box({"x": 0, "y": 0, "w": float("nan"), "h": 1}) is None
    # two faces vs one: the matched pair counts, the unmatched box counts as 0 over max(2, 1)
    two = [("face", Box(0, 0, 10, 10)), ("face", Box(100, 100, 10, 10))]
    assert matched_agreement(two, [("face", Box(5, 5, 10, 10))], box_iou) == pytest.approx(25 / 175 / 2)
    # a different label never matches
    assert matched_agreement([("face", Box(0, 0, 10, 10))], [("cat", Box(0, 0, 10, 10))], box_iou) == 0.0
    assert segment_iou(Segment(0, 2), Segment(1, 3)) == pytest.approx(1 / 3)
    assert boundary_deviation([("speech", Segment(0, 2))], [("speech", Segment(1, 3))]) == pytest.approx(1.0)
    assert boundary_deviation([("speech", Segment(0, 1))], [("speech", Segment(2, 3))]) is None


def test_cer_and_wer_by_hand() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert cer("kitten", "sitting") == pytest.approx(3 / 6)
    # sat -> sit (1 substitution) and "the " deleted (4): 5 edits over 22 characters
    assert cer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(5 / 22)
    # one word substituted, one deleted, of six
    assert wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    assert wer("", "") == 0.0 and wer("", "word") == 1.0


def test_compare_takes_the_weakest_measure_and_survives_garbage() -> None:
    a = parts(
        [
            {"kind": "speech", "label": "speech", "t_start_s": 0.5, "t_end_s": 2.5},
            {"kind": "transcript", "label": "the cat sat on the mat"},
        ]
    )
    b = parts(
        [
            {"kind": "speech", "label": "speech", "t_start_s": 1.0, "t_end_s": 3.0},
            {"kind": "transcript", "label": "the cat sit on mat"},
            {"kind": "box", "label": None, "geometry": "nonsense"},  # hostile entries are left out
            "not an annotation",
        ]
    )
    m = compare(a, b)
    assert m["labels"] == 1.0
    assert m["segment_overlap"] == pytest.approx(1.5 / 2.5) and m["boundary_s"] == pytest.approx(0.5)
    assert m["cer"] == pytest.approx(5 / 22) and m["wer"] == pytest.approx(2 / 6)
    assert m["disagreement"] == pytest.approx(1 - 0.6)
