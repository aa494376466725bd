"""``sim-camera``: a visible camera twin with its frame index and capture time drawn in the frame.

Cheap on purpose: a real camera hands over a finished frame, so the twin must not turn the
benchmark of the recorder into a benchmark of drawing. The moving colour bars are a diagonal
pattern, so every row is a slice of one precomputed strip: a frame is one strided copy of that
strip plus the ground-truth text stamped into a band at the top (~1.5 ms at 1080p instead of ~16 ms
for per-pixel arithmetic).
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

from drivers.base import RawSample
from drivers.settings.sim import SimCameraSettings
from drivers.sim.faults import PacedTwin

__all__ = ["SimCamera", "render_frame"]


@functools.lru_cache(maxsize=8)
def _strip(length: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """BGR values of the diagonal pattern along ``x + y + shift`` (read-only, shared by frames)."""
    v = (np.arange(length, dtype=np.uint32) % 256).astype(np.uint8)
    strip = np.stack([v, 255 - v, v * np.uint8(3)], axis=1)  # uint8 wraps on purpose: more edges for focus metrics
    strip.setflags(write=False)
    return strip


def _stamp_height(width: int) -> int:
    """Rows at the top of a frame that hold the ground-truth text (black band)."""
    return int(70 * max(0.4, width / 640))


def render_frame(
    width: int, height: int, index: int, t_truth_ns: int, seed: int = 0
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A BGR frame: diagonal colour bars moving 4 px per frame, with index and time as text.

    The text makes a recorded frame self-describing: alignment can be checked by reading it back.
    Pixel ``(y, x)`` of the bars is ``(x + y + shift) % 256`` (blue), its complement (green) and
    three times it (red, wrapping), ``shift = (4 * index + 37 * seed) % 256``.
    """
    shift = (index * 4 + seed * 37) % 256
    flat = _strip(width + height + 256).reshape(-1)
    # Row y of the frame is strip[shift + y : shift + y + width]: a view with a row stride of one pixel.
    rows = as_strided(flat[3 * shift :], shape=(height, 3 * width), strides=(3, 1), writeable=False)
    frame = np.ascontiguousarray(rows).reshape(height, width, 3)
    scale = max(0.4, width / 640)
    thick = max(1, round(2 * scale))
    frame[: min(height, _stamp_height(width) + 1)] = 0
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


class SimCamera(PacedTwin[SimCameraSettings]):
    """Frames at ``fps`` in real time; a reader late by whole periods skips (counted as drops).

    ``meta``: ``frame_index`` and ``t_truth_ns`` (the monotonic instant the frame was "exposed");
    ``device_time`` is the frame counter. ``faults`` inject drops, stalls, disconnects, a clock
    jump and drift (``drivers.sim.faults``).
    """

    modality = "visible"

    def __init__(self, settings: SimCameraSettings) -> None:
        super().__init__(settings, settings.fps, settings.faults)

    def describe(self) -> str:
        s = self.settings
        return f"simulated camera {s.width}x{s.height}@{s.fps:g}"

    def _prepare(self) -> None:
        s = self.settings
        render_frame(s.width, s.height, 0, 0, s.seed)  # one-time costs (strip, font) before frame 0 is due

    def _sample(self, index: int, t_truth_ns: int, t_mono_ns: int) -> RawSample:
        s = self.settings
        frame = render_frame(s.width, s.height, index, t_truth_ns, s.seed)
        return RawSample(t_mono_ns=t_mono_ns, payload=frame, meta={"frame_index": index, "t_truth_ns": t_truth_ns})

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {"width": s.width, "height": s.height, "fps": s.fps, "pixel_format": "BGR24"}
