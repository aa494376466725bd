"""Fields every device has, and the small shared value types.

Settings models import nothing heavy (no cv2, sounddevice, serial, pymodbus): the agent validates
its whole config, and lists drivers, without touching device libraries.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CommonSettings", "SerialPortSettings", "StreamName", "StrictModel"]

StreamName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        max_length=64,
        description="Stream name, unique per agent: lower-case letters, digits, '-' and '_'.",
    ),
]


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CommonSettings(StrictModel):
    """Settings shared by every driver; each driver's model adds its own ``type`` literal."""

    name: StreamName
    type: str = Field(description="Driver name from the registry (e.g. 'rtsp', 'sim-camera').")
    open_timeout_s: float = Field(default=10.0, gt=0, le=600, description="Longest time opening the device may take.")
    read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Default longest wait for one sample in read(); a stalled device surfaces as "
        "a timeout after this long.",
    )
    max_reconnects: int = Field(
        default=20,
        ge=0,
        le=1_000_000,
        description="Consecutive reopen attempts without a delivered sample before read() gives "
        "up with DriverIOError (0: never reconnect).",
    )
    backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Cap of the exponential, jittered wait between reopen attempts.",
    )


class SerialPortSettings(CommonSettings):
    """Serial line parameters shared by every serial driver (pyserial)."""

    port: str = Field(
        description="Serial device path or pyserial URL (/dev/ttyUSB0, /dev/serial/by-id/..., loop:// for tests)."
    )
    baudrate: int = Field(default=9600, ge=50, le=4_000_000, description="Line speed in baud.")
    bytesize: Literal[5, 6, 7, 8] = Field(default=8, description="Data bits per character.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(default="N", description="Parity: none, even, odd, mark, space.")
    stopbits: float = Field(default=1, description="Stop bits: 1, 1.5 or 2.")
    exclusive: bool = Field(default=True, description="Lock the port (TIOCEXCL) so no other process reads from it.")
    write_timeout_s: float = Field(default=1.0, gt=0, le=60, description="Longest time one write may block.")

    @field_validator("stopbits")
    @classmethod
    def _known_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value
