"""``sim-camera``: a visible camera twin with its frame index and capture time drawn in the frame."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from drivers.base import Driver, RawSample
from drivers.pacing import Pacer
from drivers.settings.sim import SimCameraSettings

__all__ = ["SimCamera", "render_frame"]


def render_frame(
    width: int, height: int, index: int, t_truth_ns: int, seed: int = 0
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A BGR frame: diagonal colour bars moving 4 px per frame, with index and time as text.

    The text makes a recorded frame self-describing: alignment can be checked by reading it back.
    """
    shift = (index * 4 + seed * 37) % 256
    xs = np.arange(width, dtype=np.uint16)[None, :] + np.arange(height, dtype=np.uint16)[:, None]
    base = ((xs + shift) % 256).astype(np.uint8)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = base
    frame[..., 1] = 255 - base
    frame[..., 2] = base * 3  # uint8 wraps on purpose: more edges for focus metrics
    scale = max(0.4, width / 640)
    thick = max(1, round(2 * scale))
    cv2.rectangle(frame, (0, 0), (width, int(70 * scale)), (0, 0, 0), -1)
    cv2.putText(
        frame, f"#{index}", (8, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA
    )
    cv2.putText(
        frame,
        f"t={t_truth_ns / 1e9:.6f}",
        (8, int(60 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )
    return frame


class SimCamera(Driver[SimCameraSettings]):
    """Frames at ``fps`` in real time; a reader late by whole periods skips (counted as drops).

    ``meta``: ``frame_index`` and ``t_truth_ns`` (the monotonic instant the frame was "exposed");
    ``device_time`` is the frame counter.
    """

    modality = "visible"

    def __init__(self, settings: SimCameraSettings) -> None:
        super().__init__(settings)
        self._pacer: Pacer | None = None
        self._next = 0

    def describe(self) -> str:
        s = self.settings
        return f"simulated camera {s.width}x{s.height}@{s.fps:g}"

    def _open(self) -> None:
        if self._pacer is None:  # a reopen keeps the timeline, like a camera that kept running
            self._pacer = Pacer(self.settings.fps)

    def _read_raw(self, timeout: float) -> RawSample | None:
        assert self._pacer is not None
        index, skipped = self._pacer.next_index(self._next)
        if not self._pacer.wait(index, timeout):
            return None
        t_mono = time.monotonic_ns()  # acquisition: stamped before the (slow) rendering
        t_truth = self._pacer.due_ns(index)
        s = self.settings
        frame = render_frame(s.width, s.height, index, t_truth, s.seed)
        self._next = index + 1
        return RawSample(
            t_mono_ns=t_mono,
            payload=frame,
            device_time=index,
            device_seq=index,
            skipped=skipped,
            meta={"frame_index": index, "t_truth_ns": t_truth},
        )

    def _close(self) -> None:
        pass

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {"width": s.width, "height": s.height, "fps": s.fps, "pixel_format": "BGR24"}
