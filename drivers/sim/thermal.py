"""``sim-thermal``: a radiometric thermal twin (uint16 centi-kelvin, like a Lepton in TLinear).

A warm disc circles over a room-temperature background with a gentle vertical gradient and
Gaussian sensor noise; the object's true position and temperature are in ``meta``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivers.base import RawSample
from drivers.settings.sim import SimThermalSettings
from drivers.sim.faults import PacedTwin

__all__ = ["SimThermal", "celsius_to_ck"]

_ORBIT_S = 20.0  # one lap of the warm object


def celsius_to_ck(celsius: float) -> int:
    """Degrees Celsius to centi-kelvin counts."""
    return round((celsius + 273.15) * 100)


class SimThermal(PacedTwin[SimThermalSettings]):
    """Thermal frames at ``fps`` in real time, uint16 centi-kelvin, never reduced to 8 bits.

    ``faults`` inject drops, stalls, disconnects, a clock jump and drift (``drivers.sim.faults``).
    """

    modality = "thermal"

    def __init__(self, settings: SimThermalSettings) -> None:
        super().__init__(settings, settings.fps, settings.faults)
        h, w = settings.height, settings.width
        yy, xx = np.mgrid[0:h, 0:w]
        self._yy = yy.astype(np.float32)
        self._xx = xx.astype(np.float32)
        bg = celsius_to_ck(settings.background_c)
        # 1 K warmer at the ceiling than at the floor: rooms stratify.
        self._background = (bg + 50 - 100 * self._yy / max(1, h - 1)).astype(np.float32)

    def describe(self) -> str:
        s = self.settings
        return f"simulated thermal camera {s.width}x{s.height}@{s.fps:g}"

    def _frame(self, index: int) -> tuple[np.ndarray[Any, np.dtype[np.uint16]], dict[str, Any]]:
        s = self.settings
        t = index / s.fps
        angle = 2 * math.pi * t / _ORBIT_S
        cx = s.width / 2 + s.width * 0.3 * math.cos(angle)
        cy = s.height / 2 + s.height * 0.3 * math.sin(angle)
        radius = max(2.0, min(s.width, s.height) / 10)
        hot = celsius_to_ck(s.object_c)
        inside = (self._xx - cx) ** 2 + (self._yy - cy) ** 2 <= radius**2
        img = np.where(inside, np.float32(hot), self._background)
        if s.noise_ck > 0:
            rng = np.random.default_rng((s.seed, index))
            img = img + rng.normal(0.0, s.noise_ck, img.shape).astype(np.float32)
        frame = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
        truth = {"object_x": cx, "object_y": cy, "object_radius": radius, "object_ck": hot}
        return frame, truth

    def _sample(self, index: int, t_truth_ns: int, t_mono_ns: int) -> RawSample:
        frame, truth = self._frame(index)
        meta: dict[str, Any] = {
            "frame_index": index,
            "t_truth_ns": t_truth_ns,
            "units": "centikelvin",
            "fpa_temp_c": 30.0 + 0.001 * index / self.settings.fps,
            "ffc_state": "done",
            **truth,
        }
        return RawSample(payload=frame, t_mono_ns=t_mono_ns, meta=meta)

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {
            "width": s.width,
            "height": s.height,
            "fps": s.fps,
            "pixel_format": "Y16",
            "units": "centikelvin",
            "radiometric": True,
            "emissivity": 1.0,
        }
