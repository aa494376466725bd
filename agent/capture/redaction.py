"""Face redaction at capture: a visible frame is blurred before it is encoded, so the unredacted
frame never reaches the disk or the broker.

The detector is CenterFace from the model registry (the QC screener's loader, so one ONNX session
serves both). A frame whose detection fails is never written: the writer drops it and records a
``redaction_failed`` event. The capture's metadata says which model ran and how many faces it
blurred, so a dataset can show that redaction was on and what it found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agent.catalog.writer import FrameDropped
from agent.errors import FieldcapError
from models import faces
from models.screener import Screener
from models.settings import QcSettings

MODEL = "centerface"


class RedactionFailed(FrameDropped):
    """The face detector failed on a frame; the frame is dropped, never written unredacted."""

    event = "redaction_failed"


class FaceRedactor:
    """Blurs the faces in visible frames; shared by the writer threads (ONNX runs are thread-safe)."""

    def __init__(self, qc: QcSettings, min_score: float) -> None:
        self.min_score = min_score
        self._screener = Screener(qc)
        try:
            self._session = self._screener.session(MODEL)  # now: a missing model stops the stream, loudly
        except Exception as exc:
            raise FieldcapError(
                f"redact_faces is on but the face detector cannot be loaded: {exc}. Fetch the models "
                f"(fieldcap models fetch) or turn redact_faces off for this camera."
            ) from None
        spec = self._session.manifest
        self.info: dict[str, Any] = {"model": spec.name, "version": spec.version, "sha256": self._session.sha256}

    def __call__(self, frame: npt.NDArray[np.uint8], meta: dict[str, Any]) -> npt.NDArray[np.uint8]:
        """The frame with its faces blurred; ``meta['redaction']`` records the model and the count."""
        try:
            boxes = faces.detect_faces(self._session, frame, self.min_score)
            out = faces.redact(frame, boxes)
        except Exception as exc:  # any failure: the frame must not be written as it is
            raise RedactionFailed(f"face detection failed: {exc}") from exc
        meta["redaction"] = {**self.info, "faces": len(boxes), "min_score": self.min_score}
        return out
