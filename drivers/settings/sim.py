"""Settings of the simulated twins: real-time paced, seeded, carrying ground truth in ``meta``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.settings.common import CommonSettings

__all__ = [
    "SimCameraSettings",
    "SimMicrophoneSettings",
    "SimSerialSettings",
    "SimThermalSettings",
]

SimSensorField = Literal["temperature_c", "humidity_pct", "pressure_hpa", "voltage_v", "current_a", "co2_ppm"]


class SimCameraSettings(CommonSettings):
    """A visible camera twin: frame index and capture time drawn over a moving pattern."""

    type: Literal["sim-camera"] = Field(description="Driver name.")
    width: int = Field(default=640, ge=16, le=7680, description="Frame width in pixels.")
    height: int = Field(default=480, ge=16, le=4320, description="Frame height in pixels.")
    fps: float = Field(default=5.0, gt=0, le=240, description="Frames per second (real time).")
    seed: int = Field(default=0, ge=0, description="Seed of the pattern and noise.")


class SimThermalSettings(CommonSettings):
    """A radiometric thermal twin: a warm object moving over a room-temperature background.

    Frames are uint16 in centi-kelvin (value / 100 - 273.15 = degrees Celsius), the unit of a FLIR
    Lepton in radiometric TLinear mode at 0.01 K resolution.
    """

    type: Literal["sim-thermal"] = Field(description="Driver name.")
    width: int = Field(default=160, ge=8, le=1280, description="Frame width in pixels.")
    height: int = Field(default=120, ge=8, le=1024, description="Frame height in pixels.")
    fps: float = Field(default=9.0, gt=0, le=60, description="Frames per second (real time).")
    seed: int = Field(default=0, ge=0, description="Seed of the noise.")
    background_c: float = Field(default=22.0, ge=-40, le=150, description="Background (room) temperature in Celsius.")
    object_c: float = Field(default=36.0, ge=-40, le=400, description="Temperature of the moving warm object.")
    noise_ck: float = Field(default=5.0, ge=0, le=1000, description="Gaussian noise std-dev in centi-kelvin (NETD).")


class SimMicrophoneSettings(CommonSettings):
    """A booth microphone pair twin: near channel plus an attenuated, delayed mid channel.

    Tone bursts start at known sample indices (every ``tone_interval_s`` from index 0), and the
    device clock runs ``drift_ppm`` fast (positive) or slow against the host's monotonic clock.
    """

    type: Literal["sim-microphone"] = Field(description="Driver name.")
    sample_rate: int = Field(default=48000, ge=8000, le=192000, description="Nominal rate in Hz.")
    channels: int = Field(default=2, ge=1, le=2, description="1: near only; 2: near + mid.")
    blocksize: int = Field(default=1024, ge=16, le=65536, description="Frames per delivered block.")
    seed: int = Field(default=0, ge=0, description="Seed of the background noise.")
    drift_ppm: float = Field(default=0.0, ge=-1000, le=1000, description="Device clock error injected, in ppm.")
    tone_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Time between tone burst starts (device clock)."
    )
    tone_duration_s: float = Field(default=0.05, gt=0, le=10, description="Length of each tone burst.")
    tone_hz: float = Field(default=1000.0, gt=0, le=20000, description="Tone frequency.")
    tone_dbfs: float = Field(default=-12.0, ge=-90, le=0, description="Tone level on the near mic.")
    noise_dbfs: float = Field(default=-60.0, ge=-120, le=0, description="Background noise RMS level.")
    mid_gain_db: float = Field(default=-6.0, ge=-60, le=0, description="Level of the mid channel relative to near.")
    mid_delay_ms: float = Field(
        default=2.9, ge=0, le=100, description="Acoustic delay of the mid channel (~1 m = 2.9 ms)."
    )
    speech_like: bool = Field(default=False, description="Add syllable-rate modulated band noise (a speech stand-in).")
    callback_jitter_ms: float = Field(
        default=0.2,
        ge=0,
        le=50,
        description="Mean of the one-sided (exponential) delay of each simulated callback.",
    )
    buffer_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Audio not read within this long is dropped (counted), like a full queue.",
    )


class SimSerialSettings(CommonSettings):
    """An environment/power sensor twin with known waveforms (sine around a typical value)."""

    type: Literal["sim-serial"] = Field(description="Driver name.")
    rate_hz: float = Field(default=1.0, gt=0, le=1000, description="Readings per second.")
    seed: int = Field(default=0, ge=0, description="Seed of the optional noise.")
    fields: tuple[SimSensorField, ...] = Field(
        default=("temperature_c", "humidity_pct", "pressure_hpa"),
        min_length=1,
        description="Quantities to report.",
    )
    period_s: float = Field(default=60.0, gt=0, le=86400, description="Period of every field's sine waveform.")
    noise: float = Field(default=0.0, ge=0, le=1, description="Gaussian noise std-dev as a fraction of amplitude.")
