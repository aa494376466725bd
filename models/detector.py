"""Generic object detector for a site's own YOLO-style ONNX models (equipment, intrusion, ...).

The manifest's ``[detector]`` table says the output layout, the labels and the thresholds. Input
is the image letterboxed (aspect kept, grey padding) to the network size, RGB, scaled to 0-1,
NCHW float32; boxes are mapped back to the original image's pixels.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import ModelLoadError
from models.faces import nms
from models.registry import DetectorSpec
from models.runner import ModelSession


@dataclasses.dataclass(frozen=True)
class Detection:
    label: str
    score: float
    x: float
    y: float
    w: float
    h: float

    def geometry(self) -> dict[str, float]:
        return {
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "w": round(self.w, 1),
            "h": round(self.h, 1),
        }


def letterbox(bgr: npt.NDArray[np.uint8], width: int, height: int) -> tuple[npt.NDArray[np.float32], float, int, int]:
    """NCHW float32 input plus the scale and padding needed to map boxes back."""
    image = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR) if bgr.ndim == 2 else bgr[:, :, :3]
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, (width, height), (0, 0, 0), swapRB=True)
    return np.asarray(blob, dtype=np.float32), scale, pad_x, pad_y


def decode(
    output: npt.NDArray[np.float32], spec: DetectorSpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Raw output of one image → (boxes x1y1x2y2 in network pixels, scores, class ids)."""
    classes = len(spec.labels)
    rows = output[0] if output.ndim == 3 else output
    if spec.format == "yolov8":
        if rows.shape[0] != 4 + classes:
            raise ModelLoadError(f"yolov8 output has {rows.shape[0]} rows, expected 4 + {classes} labels")
        rows = rows.T
        class_scores = rows[:, 4:]
    else:
        if rows.shape[1] != 5 + classes:
            raise ModelLoadError(f"yolov5 output has {rows.shape[1]} columns, expected 5 + {classes} labels")
        class_scores = rows[:, 5:] * rows[:, 4:5]
    ids = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(rows.shape[0]), ids]
    keep = scores >= spec.score_threshold
    cx, cy, bw, bh = rows[keep, 0], rows[keep, 1], rows[keep, 2], rows[keep, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return boxes.astype(np.float32), scores[keep].astype(np.float32), ids[keep].astype(np.int64)


def detect(session: ModelSession, bgr: npt.NDArray[np.uint8]) -> list[Detection]:
    spec = getattr(session.manifest, "detector", None)
    if not isinstance(spec, DetectorSpec):
        raise ModelLoadError(f"model {session.manifest.name} has no [detector] table in its manifest")
    blob, scale, pad_x, pad_y = letterbox(bgr, spec.input_width, spec.input_height)
    (output, *_rest) = session.run({session.input_names[0]: blob})
    boxes, scores, ids = decode(np.asarray(output, dtype=np.float32), spec)
    if scores.size == 0:
        return []
    # class-aware NMS: shift each class's boxes apart so classes never suppress each other
    shift = (ids.astype(np.float32) * 4 * max(spec.input_width, spec.input_height))[:, None]
    keep = nms(boxes + shift, scores, spec.iou_threshold)[: spec.max_detections]
    h, w = bgr.shape[:2]
    found = []
    for i in keep:
        x1 = float(np.clip((boxes[i, 0] - pad_x) / scale, 0, w))
        y1 = float(np.clip((boxes[i, 1] - pad_y) / scale, 0, h))
        x2 = float(np.clip((boxes[i, 2] - pad_x) / scale, 0, w))
        y2 = float(np.clip((boxes[i, 3] - pad_y) / scale, 0, h))
        found.append(Detection(spec.labels[int(ids[i])], float(scores[i]), x1, y1, x2 - x1, y2 - y1))
    return found
