"""``sim-serial``: an environment/power sensor twin with known sine waveforms.

Every field is ``centre + amplitude * sin(2 pi t / period + phase)`` with ``t`` the sample's true
time since the stream started, so a recorded reading can be checked against the formula exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivers.base import RawSample
from drivers.settings.sim import SimSerialSettings
from drivers.sim.faults import PacedTwin

__all__ = ["WAVEFORMS", "SimSerial", "waveform_value"]

# field -> (centre, amplitude, phase in radians, unit)
WAVEFORMS: dict[str, tuple[float, float, float, str]] = {
    "temperature_c": (21.5, 2.0, 0.0, "degC"),
    "humidity_pct": (45.0, 10.0, math.pi / 2, "%"),
    "pressure_hpa": (1013.25, 1.5, math.pi, "hPa"),
    "voltage_v": (230.0, 3.0, math.pi / 4, "V"),
    "current_a": (4.0, 1.0, math.pi / 3, "A"),
    "co2_ppm": (600.0, 150.0, 3 * math.pi / 2, "ppm"),
}


def waveform_value(field: str, t_s: float, period_s: float) -> float:
    """The noiseless value of ``field`` at ``t_s`` seconds after the stream start."""
    centre, amp, phase, _ = WAVEFORMS[field]
    return centre + amp * math.sin(2 * math.pi * t_s / period_s + phase)


class SimSerial(PacedTwin[SimSerialSettings]):
    """Readings at ``rate_hz``; ``device_time`` is the sensor's sequence number.

    ``faults`` inject drops, stalls, disconnects, garbage on the line, a clock jump and drift.
    """

    modality = "sensor"
    max_backlog = 16

    def __init__(self, settings: SimSerialSettings) -> None:
        super().__init__(settings, settings.rate_hz, settings.faults)
        self._units = {f: WAVEFORMS[f][3] for f in settings.fields}

    def describe(self) -> str:
        return f"simulated serial sensor at {self.settings.rate_hz:g} Hz"

    def _sample(self, index: int, t_truth_ns: int, t_mono_ns: int) -> RawSample | None:
        s = self.settings
        every = s.faults.garbage_every
        if every is not None and index % every == every - 1:
            line = np.random.default_rng((s.seed, 13, index)).integers(0, 256, 24, dtype=np.uint8).tobytes()
            self._count("bad_frames", why=f"{self.name}: garbled line {line[:12]!r}... (faults.garbage_every)")
            return None
        t_s = index / s.rate_hz
        payload: dict[str, float] = {f: waveform_value(f, t_s, s.period_s) for f in s.fields}
        if s.noise > 0:
            rng = np.random.default_rng((s.seed, index))
            for f in s.fields:
                payload[f] += float(rng.normal(0.0, s.noise * WAVEFORMS[f][1]))
        meta = {"t_truth_ns": t_truth_ns, "t_s": t_s, "units": self._units}
        return RawSample(payload=payload, t_mono_ns=t_mono_ns, meta=meta)

    def _settings_in_force(self) -> dict[str, Any]:
        return {
            "units": dict(self._units),
            "waveforms": {
                f: {"centre": c, "amplitude": a, "phase_rad": p, "period_s": self.settings.period_s}
                for f, (c, a, p, _) in WAVEFORMS.items()
                if f in self._units
            },
        }
