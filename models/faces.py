"""Face detection with CenterFace and face redaction before media leaves the device.

CenterFace predicts, on a grid 4x coarser than its input, a face-centre heatmap, the log of box
height and width, and a sub-cell offset of the centre. A face is a heatmap cell above the score
threshold; overlapping boxes are reduced by non-maximum suppression. The image is resized so its
longer side is at most ``max_side`` (manifest preprocessing) and both sides are multiples of 32.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from models.runner import ModelSession


@dataclasses.dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    score: float

    def geometry(self) -> dict[str, float]:
        return {
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "w": round(self.w, 1),
            "h": round(self.h, 1),
        }


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression (boxes as x1, y1, x2, y2)."""
    order = np.argsort(-scores)
    keep: list[int] = []
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[overlap <= iou]
    return keep


def _input_size(height: int, width: int, max_side: int, stride: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    h = max(stride, round(height * scale / stride) * stride)
    w = max(stride, round(width * scale / stride) * stride)
    return h, w


def detect_faces(session: ModelSession, bgr: npt.NDArray[np.uint8], threshold: float, iou: float = 0.3) -> list[Box]:
    """Face boxes in the pixel coordinates of ``bgr`` (uint8 HxWx3 or HxW)."""
    image = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR) if bgr.ndim == 2 else bgr[:, :, :3]
    height, width = image.shape[:2]
    prep = session.manifest.preprocessing
    in_h, in_w = _input_size(height, width, int(prep.get("max_side", 640)), int(prep.get("stride", 32)))
    blob = cv2.dnn.blobFromImage(image, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
    heat, scale, offset, _landmarks = session.run({session.input_names[0]: blob})
    ys, xs = np.nonzero(heat[0, 0] > threshold)
    if ys.size == 0:
        return []
    scores = heat[0, 0, ys, xs]
    bh = np.exp(scale[0, 0, ys, xs]) * 4
    bw = np.exp(scale[0, 1, ys, xs]) * 4
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, in_w) * (width / in_w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, in_h) * (height / in_h)
    keep = nms(boxes.astype(np.float32), scores.astype(np.float32), iou)
    return [
        Box(
            float(boxes[i, 0]),
            float(boxes[i, 1]),
            float(boxes[i, 2] - boxes[i, 0]),
            float(boxes[i, 3] - boxes[i, 1]),
            float(scores[i]),
        )
        for i in keep
    ]


def redact(bgr: npt.NDArray[np.uint8], boxes: list[Box], margin: float = 0.2) -> npt.NDArray[np.uint8]:
    """A copy of ``bgr`` with every box (grown by ``margin`` of its size) blurred beyond
    recognition (``bgr`` itself when there is no box); the caller stores this instead of the original."""
    if not boxes:
        return bgr
    out = bgr.copy()
    height, width = out.shape[:2]
    for box in boxes:
        mx, my = box.w * margin, box.h * margin
        x1, y1 = max(0, int(box.x - mx)), max(0, int(box.y - my))
        x2, y2 = min(width, int(box.x + box.w + mx) + 1), min(height, int(box.y + box.h + my) + 1)
        if x2 <= x1 or y2 <= y1:
            continue
        region = out[y1:y2, x1:x2]
        # An 8x smaller copy blurred by a kernel of half the face (at that scale), then scaled back:
        # removes identity, unlike a light blur that can be undone, at a fraction of a full-size blur.
        small = cv2.resize(region, (max(1, (x2 - x1) // 8), max(1, (y2 - y1) // 8)), interpolation=cv2.INTER_AREA)
        k = max(3, (max(small.shape[:2]) // 2) | 1)
        small = cv2.GaussianBlur(small, (k, k), 0, borderType=cv2.BORDER_REPLICATE)
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return out
