"""Settings of the simulated twins: real-time paced, seeded, carrying ground truth in ``meta``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from drivers.settings.common import CommonSettings, StrictModel

__all__ = [
    "SimCameraSettings",
    "SimFaults",
    "SimMicrophoneSettings",
    "SimSerialFaults",
    "SimSerialSettings",
    "SimThermalSettings",
]

SimSensorField = Literal["temperature_c", "humidity_pct", "pressure_hpa", "voltage_v", "current_a", "co2_ppm"]


class SimFaults(StrictModel):
    """Failures a twin produces on purpose, so a demo or a test can show each one; all off by default.

    Counts are in the twin's samples (frames, audio blocks, readings). The plan is a function of
    the sample index, so a faulty run is as reproducible as a clean one.
    """

    drop_every: int | None = Field(
        default=None,
        ge=2,
        le=1_000_000,
        description="Every Nth sample is lost on the device side: a gap in device_time and the stream, "
        "counted in stats.drops.",
    )
    stall_every: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The device goes silent for stall_s before every Nth sample; a read shorter than "
        "the stall ends in DriverTimeout. Needs stall_s.",
    )
    stall_s: float | None = Field(
        default=None, gt=0, le=600, description="Length of each stall, in seconds. Needs stall_every."
    )
    disconnect_after: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The device vanishes after this many samples since it was (re)opened: the read "
        "fails with an I/O error and the driver reconnects (stats.errors, stats.reconnects).",
    )
    reopen_failures: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Reopen attempts that fail after each disconnect before the device is back.",
    )
    clock_jump_s: float = Field(
        default=0.0,
        ge=-86400,
        le=86400,
        description="The device clock steps by this much (positive: forward) at clock_jump_at_s: "
        "device_time jumps while t_mono and the content run on.",
    )
    clock_jump_at_s: float = Field(
        default=0.0, ge=0, le=86400, description="Stream time (nominal seconds from the start) of the clock jump."
    )
    drift_ppm: float = Field(
        default=0.0,
        ge=-1000,
        le=1000,
        description="The device clock runs this many ppm fast (positive) or slow against the host's "
        "monotonic clock: samples arrive that much faster or slower than nominal.",
    )

    @model_validator(mode="after")
    def _stall_pair(self) -> Self:
        if (self.stall_every is None) != (self.stall_s is None):
            raise ValueError("faults.stall_every and faults.stall_s go together: set both or neither")
        if self.reopen_failures and self.disconnect_after is None:
            raise ValueError("faults.reopen_failures needs faults.disconnect_after (there is nothing to reopen)")
        return self


class SimSerialFaults(SimFaults):
    """The serial twin's faults: those of every twin plus garbage on the line."""

    garbage_every: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Every Nth reading arrives as garbage bytes: skipped and counted in stats.bad_frames "
        "(the reading it replaced is a gap in device_time).",
    )


class SimCameraSettings(CommonSettings):
    """A visible camera twin: frame index and capture time drawn over a moving pattern."""

    type: Literal["sim-camera"] = Field(description="Driver name.")
    width: int = Field(default=640, ge=16, le=7680, description="Frame width in pixels.")
    height: int = Field(default=480, ge=16, le=4320, description="Frame height in pixels.")
    fps: float = Field(default=5.0, gt=0, le=240, description="Frames per second (real time).")
    seed: int = Field(default=0, ge=0, description="Seed of the pattern and noise.")
    faults: SimFaults = Field(default_factory=SimFaults, description="Failures to inject (all off by default).")


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
    faults: SimFaults = Field(default_factory=SimFaults, description="Failures to inject (all off by default).")


class SimMicrophoneSettings(CommonSettings):
    """A booth microphone pair twin: near channel plus an attenuated, delayed mid channel.

    Tone bursts start at known sample indices (every ``tone_interval_s`` from index 0), and the
    device clock runs ``drift_ppm`` fast (positive) or slow against the host's monotonic clock.
    With ``speech = "voice"`` (or ``speech_like = true``) a synthesized voice speaks one phrase
    every ``phrase_s`` seconds, starting and ending in a pause, at ``speech_dbfs`` over the noise
    floor: takes pass the ``booth-speech`` QC profile, and the speech segments are in ``meta``.
    """

    type: Literal["sim-microphone"] = Field(description="Driver name.")
    sample_rate: int = Field(default=48000, ge=8000, le=192000, description="Nominal rate in Hz.")
    channels: int = Field(default=2, ge=1, le=2, description="1: near only; 2: near + mid.")
    blocksize: int = Field(default=1024, ge=16, le=65536, description="Frames per delivered block.")
    seed: int = Field(default=0, ge=0, description="Seed of the background noise.")
    drift_ppm: float = Field(
        default=0.0, ge=-1000, le=1000, description="Device clock error injected, in ppm (or faults.drift_ppm)."
    )
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
    speech: Literal["off", "voice", "band-noise"] = Field(
        default="off",
        description="Speech on the microphones: 'voice' (synthesized phrases that pass the booth-speech "
        "profile), 'band-noise' (syllable-rate modulated noise: not speech to the VAD, so takes fail QC).",
    )
    speech_like: bool = Field(default=False, description="Shorthand for speech = 'voice'.")
    speech_dbfs: float = Field(
        default=-20.0,
        ge=-60,
        le=-15,
        description="RMS level of active speech on the near mic (voice); peaks reach ~15 dB above it.",
    )
    phrase_s: float = Field(
        default=2.0,
        ge=2.0,
        le=60,
        description="One phrase (~1.3 s of speech after a 0.3 s pause) per this long (voice), from index 0: "
        "takes cut on this grid start and end in a pause.",
    )
    tones: bool | None = Field(
        default=None,
        description="Tone bursts on the near and mid mics (default: on, except with speech = 'voice', "
        "where a beep in the pauses would be the noise QC measures).",
    )
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
    faults: SimFaults = Field(default_factory=SimFaults, description="Failures to inject (all off by default).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.speech_like and self.speech == "band-noise":
            raise ValueError("speech_like = true means speech = 'voice'; drop speech_like to get 'band-noise'")
        if self.drift_ppm and self.faults.drift_ppm:
            raise ValueError("set drift_ppm or faults.drift_ppm, not both")
        return self

    @property
    def speech_mode(self) -> Literal["off", "voice", "band-noise"]:
        """The speech in force: ``speech``, or 'voice' when ``speech_like`` is set."""
        return "voice" if self.speech_like and self.speech == "off" else self.speech

    @property
    def tones_on(self) -> bool:
        """Whether tone bursts are mixed in."""
        return self.tones if self.tones is not None else self.speech_mode != "voice"

    @property
    def clock_drift_ppm(self) -> float:
        """The injected device clock error: ``drift_ppm`` or ``faults.drift_ppm``."""
        return self.drift_ppm or self.faults.drift_ppm


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
    faults: SimSerialFaults = Field(
        default_factory=SimSerialFaults, description="Failures to inject (all off by default)."
    )
