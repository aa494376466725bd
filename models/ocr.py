"""Text on equipment nameplates with PP-OCR (detection + recognition), our own pre/post-processing.

Detection (PP-OCRv4 det, a DB "differentiable binarization" network) gives a per-pixel text
probability map. We threshold it, dilate a little so characters of a word join, take the external
contours (OpenCV), fit each with a rotated rectangle, score it by the mean probability inside the
contour, and grow ("unclip") it by ``area * unclip_ratio / perimeter`` on every side, because
DB's shrunk text kernels sit inside the real glyph outlines. Boxes are sorted into reading order.

Recognition (PP-OCRv4 rec, CRNN-style with CTC): each box is cut out with a perspective warp to an
upright strip, resized to height 48 keeping its aspect ratio, normalised to [-1, 1] and padded to
the widest strip of its batch. The output is a softmax over 1 + N + 1 classes per time step:
CTC blank, the N dictionary characters (stored in the rec model's ``character`` metadata), space.
Greedy decoding takes the best class per step, merges repeats and drops blanks; a line's score is
the mean probability of its kept characters.

The direction classifier shipped with the models (180° text) is not used: nameplates are
photographed upright. Vertical strips (height >= 1.5 x width) are turned 90° before recognition.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import ModelLoadError
from models.runner import ModelSession

REC_HEIGHT = 48
REC_MIN_WIDTH = 320  # PP-OCR's recognition strips are at least 48x320
REC_BATCH = 8
DET_STRIDE = 32
F32 = npt.NDArray[np.float32]


@dataclasses.dataclass(frozen=True)
class OcrOptions:
    """Knobs of the pipeline; defaults are PP-OCR's published post-processing values."""

    max_side: int = 960  # longer image side fed to the detector (multiple of 32 after resizing)
    threshold: float = 0.3  # pixel probability that counts as text
    box_threshold: float = 0.5  # mean probability inside a box to keep it
    unclip_ratio: float = 1.6  # growth of a box: area * ratio / perimeter on each side
    min_box_side: float = 3.0  # detector pixels; smaller boxes are noise
    text_threshold: float = 0.5  # recognition score below which a line is dropped
    max_boxes: int = 1000


@dataclasses.dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    points: tuple[tuple[float, float], ...]  # 4 corners, clockwise from top-left, image pixels

    def geometry(self) -> dict[str, Any]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return {
            "x": round(min(xs), 1),
            "y": round(min(ys), 1),
            "w": round(max(xs) - min(xs), 1),
            "h": round(max(ys) - min(ys), 1),
            "points": [[round(x, 1), round(y, 1)] for x, y in self.points],
        }


# --- detection ----------------------------------------------------------------------------------


def _det_input(bgr: npt.NDArray[np.uint8], max_side: int) -> tuple[F32, float, float]:
    """NCHW float32 in [-1, 1] with sides multiples of 32, and the x/y scale back to the image."""
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    h = max(DET_STRIDE, round(height * scale / DET_STRIDE) * DET_STRIDE)
    w = max(DET_STRIDE, round(width * scale / DET_STRIDE) * DET_STRIDE)
    resized = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    blob = (resized.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(blob), width / w, height / h


def _order_corners(points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Four corners as top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def _box_score(prob: F32, contour: npt.NDArray[np.int32]) -> float:
    """Mean text probability inside ``contour`` (within its bounding rectangle)."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - np.array([x, y])], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask)[0])


def boxes_from_probability(prob: F32, options: OcrOptions) -> list[tuple[npt.NDArray[np.float32], float]]:
    """DB post-processing of one probability map (H, W) → [(4x2 corners in map pixels, score)]."""
    bitmap = cv2.dilate((prob > options.threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[npt.NDArray[np.float32], float]] = []
    for contour in contours[: options.max_boxes]:
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if min(w, h) < options.min_box_side:
            continue
        score = _box_score(prob, np.asarray(contour, dtype=np.int32))
        if score < options.box_threshold:
            continue
        # offsetting a w x h rectangle outwards by d gives a (w + 2d) x (h + 2d) rectangle
        d = w * h * options.unclip_ratio / (2.0 * (w + h))
        grown = ((cx, cy), (w + 2 * d, h + 2 * d), angle)
        if min(w, h) + 2 * d < options.min_box_side + 2:
            continue
        found.append((_order_corners(cv2.boxPoints(grown).astype(np.float32)), score))
    return found


def reading_order(boxes: Sequence[npt.NDArray[np.float32]]) -> list[int]:
    """Indices of ``boxes`` top to bottom; boxes whose centres are within half a box height of
    each other vertically form one line, read left to right."""
    if not boxes:
        return []
    centres = [(float(b[:, 0].mean()), float(b[:, 1].mean()), float(np.ptp(b[:, 1]))) for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: centres[i][1])
    lines: list[list[int]] = []
    for i in order:
        if lines:
            anchor = lines[-1][0]
            if abs(centres[i][1] - centres[anchor][1]) < 0.5 * max(1.0, min(centres[i][2], centres[anchor][2])):
                lines[-1].append(i)
                continue
        lines.append([i])
    return [i for line in lines for i in sorted(line, key=lambda j: centres[j][0])]


def detect(
    session: ModelSession, bgr: npt.NDArray[np.uint8], options: OcrOptions
) -> list[tuple[npt.NDArray[np.float32], float]]:
    """Text boxes in image pixels, in reading order: [(4x2 corners, detection score)]."""
    blob, sx, sy = _det_input(bgr, options.max_side)
    (prob,) = session.run({session.input_names[0]: blob})[:1]
    boxes = boxes_from_probability(np.asarray(prob[0, 0], dtype=np.float32), options)
    height, width = bgr.shape[:2]
    scaled = []
    for corners, score in boxes:
        pts = corners * np.array([sx, sy], dtype=np.float32)
        pts[:, 0] = np.clip(pts[:, 0], 0, width - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, height - 1)
        scaled.append((pts, score))
    return [scaled[i] for i in reading_order([b for b, _ in scaled])]


# --- recognition --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _charset_cached(text: str) -> tuple[str, ...]:
    return ("", *text.split("\n"), " ")


def charset(session: ModelSession) -> tuple[str, ...]:
    """CTC classes of the rec model: blank, its ``character`` metadata lines, space."""
    meta = session.session.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ModelLoadError(f"{session.manifest.name} has no 'character' metadata: not a PP-OCR rec model")
    classes = _charset_cached(meta["character"])
    width = session.session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != len(classes):
        raise ModelLoadError(f"{session.manifest.name}: {len(classes)} characters for {width} output classes")
    return classes


def crop(bgr: npt.NDArray[np.uint8], corners: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The quadrilateral ``corners`` (tl, tr, br, bl) warped to an upright strip."""
    tl, tr, br, bl = corners
    width = max(2, round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
    height = max(2, round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    strip = cv2.warpPerspective(bgr, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if height >= 1.5 * width:  # vertical text: read it turned
        strip = np.rot90(strip)
    return np.ascontiguousarray(strip)


def _rec_batch(strips: Sequence[npt.NDArray[np.uint8]]) -> F32:
    ratios = [s.shape[1] / s.shape[0] for s in strips]
    batch_width = max(REC_MIN_WIDTH, math.ceil(REC_HEIGHT * max(ratios)))
    batch = np.zeros((len(strips), 3, REC_HEIGHT, batch_width), dtype=np.float32)  # 0 = mid grey
    for i, (strip, ratio) in enumerate(zip(strips, ratios, strict=True)):
        width = min(batch_width, max(1, math.ceil(REC_HEIGHT * ratio)))
        resized = cv2.resize(strip, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        batch[i, :, :, :width] = (resized.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)
    return batch


def ctc_greedy(probs: F32, classes: Sequence[str]) -> tuple[str, float]:
    """(T, C) per-step class probabilities → text and mean probability of its characters."""
    best = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    chars = [classes[i] for i in best[keep]]
    score = float(confidence[keep].mean()) if keep.any() else 0.0
    return "".join(chars), score


def recognise(session: ModelSession, strips: Sequence[npt.NDArray[np.uint8]]) -> list[tuple[str, float]]:
    """Text and score of each strip; strips of similar aspect ratio are batched together."""
    classes = charset(session)
    order = sorted(range(len(strips)), key=lambda i: strips[i].shape[1] / strips[i].shape[0])
    results: list[tuple[str, float]] = [("", 0.0)] * len(strips)
    name = session.input_names[0]
    for start in range(0, len(order), REC_BATCH):
        chunk = order[start : start + REC_BATCH]
        (probs,) = session.run({name: _rec_batch([strips[i] for i in chunk])})[:1]
        for row, index in enumerate(chunk):
            results[index] = ctc_greedy(np.asarray(probs[row], dtype=np.float32), classes)
    return results


def read_text(
    det: ModelSession, rec: ModelSession, bgr: npt.NDArray[np.uint8], options: OcrOptions | None = None
) -> list[TextLine]:
    """Every text line found in a BGR uint8 image, in reading order."""
    opts = options or OcrOptions()
    if bgr.ndim == 2:
        bgr = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    boxes = detect(det, bgr, opts)
    if not boxes:
        return []
    texts = recognise(rec, [crop(bgr, corners) for corners, _ in boxes])
    lines = []
    for (corners, _), (text, score) in zip(boxes, texts, strict=True):
        if text.strip() and score >= opts.text_threshold:
            points = tuple((float(x), float(y)) for x, y in corners)
            lines.append(TextLine(text=text.strip(), score=score, points=points))
    return lines
