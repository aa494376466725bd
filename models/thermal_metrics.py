"""Sanity metrics of a radiometric thermal frame: temperatures, flat/frozen frames, bad pixels.

Raw frames are uint16. ``meta["units"]`` says how to read them: ``"centikelvin"`` (K x 100, what
FLIR Lepton/Boson TLinear output gives) or ``"centicelsius"`` (°C x 100). A raw value of 0 is a
dead pixel; ``meta["saturation_raw"]`` (default 65535) is the saturation code. A stuck pixel is
one that differs from the median of its 3x3 neighbourhood by more than ``stuck_delta_c``: single
hot/cold pixels, which a real scene at thermal-camera resolution does not produce.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import MediaError

UNITS = ("centikelvin", "centicelsius")


@dataclasses.dataclass(frozen=True)
class ThermalMetrics:
    width: int
    height: int
    min_c: float | None
    max_c: float | None
    mean_c: float | None
    flat: float | None
    frozen: int | None
    frame_diff_c: float | None
    dead_pixel_ratio: float
    stuck_pixel_ratio: float
    saturated_ratio: float
    ffc_age_s: float | None


def _check(raw: Any, what: str) -> npt.NDArray[np.uint16]:
    if not isinstance(raw, np.ndarray):
        raise MediaError(f"{what}: expected a numpy array, got {type(raw).__name__}")
    if raw.dtype != np.uint16:
        raise MediaError(f"{what}: expected a uint16 radiometric frame, got dtype {raw.dtype}")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim != 2 or raw.shape[0] < 3 or raw.shape[1] < 3:
        raise MediaError(f"{what}: expected an HxW frame of at least 3x3, got shape {raw.shape}")
    return np.ascontiguousarray(raw)


def celsius(frame: npt.NDArray[np.uint16], units: str) -> npt.NDArray[np.float32]:
    """Raw radiometric counts → °C (float32)."""
    if units not in UNITS:
        raise MediaError(f"thermal meta units {units!r} unknown; use one of {', '.join(UNITS)}")
    offset = -273.15 if units == "centikelvin" else 0.0
    return frame.astype(np.float32) / np.float32(100.0) + np.float32(offset)


def checked_frame(raw: Any) -> npt.NDArray[np.uint16]:
    """``raw`` as a contiguous HxW uint16 frame, or MediaError saying what is wrong."""
    return _check(raw, "thermal frame")


def measure(
    raw: Any,
    meta: Mapping[str, Any],
    default_units: str,
    stuck_delta_c: float,
    previous: Any | None = None,
) -> ThermalMetrics:
    frame = _check(raw, "thermal frame")
    units = str(meta.get("units", default_units))
    temps = celsius(frame, units)
    saturation = int(meta.get("saturation_raw", 65535))
    n = frame.size
    dead = frame == 0
    saturated = frame >= saturation
    valid = ~(dead | saturated)
    if valid.any():
        values = temps[valid]
        min_c: float | None = float(values.min())
        max_c: float | None = float(values.max())
        mean_c: float | None = float(values.mean())
        flat: float | None = float(values.std())
    else:
        min_c = max_c = mean_c = flat = None
    median = cv2.medianBlur(frame, 3)
    delta = np.abs(frame.astype(np.int32) - median.astype(np.int32))
    stuck = (delta > stuck_delta_c * 100.0) & valid
    frozen: int | None = None
    diff_c: float | None = None
    if previous is not None:
        prev = _check(previous, "previous thermal frame")
        if prev.shape != frame.shape:
            raise MediaError(
                f"previous frame is {prev.shape[1]}x{prev.shape[0]}, this one {frame.shape[1]}x{frame.shape[0]}"
            )
        diff_c = float(np.mean(np.abs(frame.astype(np.int32) - prev.astype(np.int32)))) / 100.0
        frozen = int(diff_c == 0.0)
    age = meta.get("ffc_age_s")
    return ThermalMetrics(
        width=int(frame.shape[1]),
        height=int(frame.shape[0]),
        min_c=min_c,
        max_c=max_c,
        mean_c=mean_c,
        flat=flat,
        frozen=frozen,
        frame_diff_c=diff_c,
        dead_pixel_ratio=float(dead.sum() / n),
        stuck_pixel_ratio=float(stuck.sum() / n),
        saturated_ratio=float(saturated.sum() / n),
        ffc_age_s=float(age) if age is not None else None,
    )
