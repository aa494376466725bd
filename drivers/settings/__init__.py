"""Device settings: one pydantic model per driver, a discriminated union on ``type``.

The agent's TOML ``[[devices]]`` tables validate against ``DeviceSettings``. Only pydantic is
imported here, so validating a config never loads a device library.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from drivers.settings.audio import MicrophoneSettings
from drivers.settings.camera import (
    RtspCameraSettings,
    V4l2CameraSettings,
    VideoFileSettings,
)
from drivers.settings.common import CommonSettings, SerialPortSettings, StrictModel
from drivers.settings.serial import (
    LineField,
    LineProtocolSettings,
    ModbusRegister,
    ModbusRtuSettings,
    NmeaSettings,
)
from drivers.settings.sim import (
    SimCameraSettings,
    SimMicrophoneSettings,
    SimSerialSettings,
    SimThermalSettings,
)
from drivers.settings.thermal import (
    ThermalPngSettings,
    ThermalRtspSettings,
    ThermalUartSettings,
    ThermalUvcSettings,
)

__all__ = [
    "CommonSettings",
    "DeviceSettings",
    "LineField",
    "LineProtocolSettings",
    "MicrophoneSettings",
    "ModbusRegister",
    "ModbusRtuSettings",
    "NmeaSettings",
    "RtspCameraSettings",
    "SerialPortSettings",
    "SimCameraSettings",
    "SimMicrophoneSettings",
    "SimSerialSettings",
    "SimThermalSettings",
    "StrictModel",
    "ThermalPngSettings",
    "ThermalRtspSettings",
    "ThermalUartSettings",
    "ThermalUvcSettings",
    "V4l2CameraSettings",
    "VideoFileSettings",
    "device_settings_adapter",
    "parse_device_settings",
]

DeviceSettings = Annotated[
    SimCameraSettings
    | SimThermalSettings
    | SimMicrophoneSettings
    | SimSerialSettings
    | V4l2CameraSettings
    | RtspCameraSettings
    | VideoFileSettings
    | ThermalUvcSettings
    | ThermalRtspSettings
    | ThermalPngSettings
    | ThermalUartSettings
    | MicrophoneSettings
    | NmeaSettings
    | ModbusRtuSettings
    | LineProtocolSettings,
    Field(discriminator="type"),
]
"""Settings of any built-in driver, chosen by the ``type`` key."""


@cache
def device_settings_adapter() -> TypeAdapter[DeviceSettings]:
    """A (cached) validator for one ``[[devices]]`` table of a built-in driver."""
    return TypeAdapter(DeviceSettings)


def parse_device_settings(data: dict[str, Any]) -> CommonSettings:
    """Validate one device table; third-party drivers use their class's ``settings_model``.

    Raises ``pydantic.ValidationError`` naming the offending keys (for an unknown ``type``: the
    valid ones).
    """
    from drivers.registry import available_drivers, builtin_settings_types, load_driver_class

    type_name = data.get("type")
    if isinstance(type_name, str) and type_name not in builtin_settings_types() and type_name in available_drivers():
        model = getattr(load_driver_class(type_name), "settings_model", None)
        if isinstance(model, type) and issubclass(model, CommonSettings):
            return model.model_validate(data)
    result: CommonSettings = device_settings_adapter().validate_python(data)
    return result
