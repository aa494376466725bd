"""Settings of the thermal IR drivers; frames stay raw uint16 (never reduced to 8 bits)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.settings.camera import NetworkStreamFields, ReplayFields
from drivers.settings.common import CommonSettings, SerialPortSettings

__all__ = [
    "LeptonTelemetryFields",
    "ThermalPngSettings",
    "ThermalRtspSettings",
    "ThermalUartSettings",
    "ThermalUnits",
    "ThermalUvcSettings",
]

ThermalUnits = Literal["centikelvin", "decikelvin", "centicelsius", "raw"]


class ThermalMetaFields(CommonSettings):
    """Radiometric metadata recorded with every thermal stream."""

    units: ThermalUnits = Field(
        default="centikelvin",
        description="What one count means: centikelvin (Lepton TLinear 0.01 K), decikelvin, "
        "centicelsius, or raw sensor counts (non-radiometric).",
    )
    emissivity: float = Field(default=0.95, gt=0, le=1, description="Emissivity assumed for the scene.")
    reflected_temp_c: float | None = Field(
        default=None, ge=-100, le=1000, description="Reflected apparent temperature, if known."
    )
    ambient_temp_c: float | None = Field(
        default=None, ge=-100, le=200, description="Ambient/atmospheric temperature, if known."
    )
    distance_m: float | None = Field(default=None, gt=0, le=10000, description="Distance to the target, if known.")


class LeptonTelemetryFields(CommonSettings):
    """Whether Y16 frames carry FLIR Lepton telemetry rows (see ``drivers.lepton``)."""

    lepton_telemetry: Literal["auto", "footer", "header", "off"] = Field(
        default="auto",
        description="Lepton telemetry rows in the frames: 'auto' strips and parses them when frames "
        "are 160x122 (Lepton 3.x) or 80x63 (Lepton 2.x) as PureThermal boards send them; "
        "'footer'/'header' where the camera puts them; 'off' keeps every row as image.",
    )


class ThermalUvcSettings(ThermalMetaFields, LeptonTelemetryFields):
    """A UVC thermal camera with Y16 output (e.g. FLIR Lepton on a PureThermal board)."""

    type: Literal["thermal-uvc"] = Field(description="Driver name.")
    device: str = Field(default="/dev/video0", description="V4L2 device path.")
    width: int = Field(default=160, ge=8, le=1280, description="Frame width.")
    height: int = Field(
        default=120, ge=8, le=1024, description="Frame height as sent (122 for a Lepton 3.x with telemetry rows)."
    )
    fps: float = Field(default=9.0, gt=0, le=120, description="Frame rate.")


class ThermalRtspSettings(ThermalMetaFields, NetworkStreamFields):
    """An RTSP thermal camera; 16-bit streams stay 16-bit, 8-bit ones are refused unless units = 'raw'."""

    type: Literal["thermal-rtsp"] = Field(description="Driver name.")


class ThermalPngSettings(ThermalMetaFields, LeptonTelemetryFields, ReplayFields):
    """Replay of 16-bit PNG frames (printf pattern such as ir/%06d.png)."""

    type: Literal["thermal-png"] = Field(description="Driver name.")
    path: str = Field(description="Image-sequence pattern, e.g. dir/frame_%06d.png.")
    fps: float | None = Field(default=9.0, gt=0, le=1000, description="Replay rate.")


class ThermalUartSettings(ThermalMetaFields, SerialPortSettings):
    """An MLX90640-style 32x24 array on a UART (GY-MCU90640 frame format, degC x 100)."""

    type: Literal["thermal-uart"] = Field(description="Driver name.")
    baudrate: int = Field(default=115200, ge=50, le=4_000_000, description="Line speed in baud.")
    units: Literal["centikelvin"] = Field(
        default="centikelvin",
        description="Frames are converted losslessly from degC x 100 to centikelvin.",
    )
