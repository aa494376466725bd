"""``sim-serial``: an environment/power sensor twin with known sine waveforms.

Every field is ``centre + amplitude * sin(2 pi t / period + phase)`` with ``t`` the sample's true
time since the stream started, so a recorded reading can be checked against the formula exactly.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from drivers.base import Driver, RawSample
from drivers.pacing import Pacer
from drivers.settings.sim import SimSerialSettings

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


class SimSerial(Driver[SimSerialSettings]):
    """Readings at ``rate_hz``; ``device_time`` is the sensor's sequence number."""

    modality = "sensor"

    def __init__(self, settings: SimSerialSettings) -> None:
        super().__init__(settings)
        self._pacer: Pacer | None = None
        self._next = 0
        self._units = {f: WAVEFORMS[f][3] for f in settings.fields}

    def describe(self) -> str:
        return f"simulated serial sensor at {self.settings.rate_hz:g} Hz"

    def _open(self) -> None:
        if self._pacer is None:
            self._pacer = Pacer(self.settings.rate_hz)

    def _read_raw(self, timeout: float) -> RawSample | None:
        assert self._pacer is not None
        s = self.settings
        index, skipped = self._pacer.next_index(self._next, max_backlog=16)
        if not self._pacer.wait(index, timeout):
            return None
        t_mono = time.monotonic_ns()  # acquisition: stamped before the (slow) rendering
        t_s = index / s.rate_hz
        payload: dict[str, float] = {f: waveform_value(f, t_s, s.period_s) for f in s.fields}
        if s.noise > 0:
            rng = np.random.default_rng((s.seed, index))
            for f in s.fields:
                payload[f] += float(rng.normal(0.0, s.noise * WAVEFORMS[f][1]))
        self._next = index + 1
        meta = {"t_truth_ns": self._pacer.due_ns(index), "t_s": t_s, "units": self._units}
        return RawSample(
            payload=payload,
            t_mono_ns=t_mono,
            device_time=index,
            device_seq=index,
            skipped=skipped,
            meta=meta,
        )

    def _close(self) -> None:
        pass

    def _settings_in_force(self) -> dict[str, Any]:
        return {
            "units": dict(self._units),
            "waveforms": {
                f: {"centre": c, "amplitude": a, "phase_rad": p, "period_s": self.settings.period_s}
                for f, (c, a, p, _) in WAVEFORMS.items()
                if f in self._units
            },
        }
