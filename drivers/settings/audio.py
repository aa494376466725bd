"""Settings of the microphone driver (sounddevice / PortAudio)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.settings.common import CommonSettings

__all__ = ["MicrophoneSettings"]


class MicrophoneSettings(CommonSettings):
    """A callback input stream of N channels, 16-bit, stamped by sample index."""

    type: Literal["microphone"] = Field(description="Driver name.")
    device: str | int | None = Field(
        default=None,
        description="PortAudio device index or a substring of its name; unset: the default input.",
    )
    sample_rate: int = Field(default=48000, ge=8000, le=384000, description="Sample rate in Hz.")
    channels: int = Field(default=2, ge=1, le=64, description="Input channels (e.g. near + mid).")
    channel_names: list[str] | None = Field(
        default=None, description="Names of the channels in order (e.g. ['near', 'mid'])."
    )
    blocksize: int = Field(default=1024, ge=32, le=65536, description="Frames per callback and per delivered sample.")
    latency: Literal["low", "high"] | float = Field(
        default="high",
        description="PortAudio suggested input latency ('low', 'high' or seconds); 'high' "
        "trades delay for fewer overflows.",
    )
    queue_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Audio buffered between callback and reader; when full, blocks are dropped (counted).",
    )
    fit_window_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="Window of callbacks used to fit sample index -> monotonic time.",
    )
    latency_compensation: Literal["reported", "none"] = Field(
        default="reported",
        description="Subtract PortAudio's reported input latency from the fitted times.",
    )
