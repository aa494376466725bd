"""fieldcap device drivers: cameras, thermal IR, microphones, serial sensors and their twins.

Choose a driver by settings (``type`` selects it) and read ``Sample`` objects::

    from drivers import open_driver, parse_device_settings

    settings = parse_device_settings({"name": "cam1", "type": "sim-camera", "fps": 5})
    with open_driver(settings) as cam:
        sample = cam.read(timeout=1.0)

Only the configured driver's module is imported (see ``drivers.registry``).
"""

from __future__ import annotations

from drivers.base import Driver, DriverStats, Modality, RawSample, Sample, jittered_backoff
from drivers.errors import (
    DriverEndOfStream,
    DriverError,
    DriverImportError,
    DriverIOError,
    DriverOpenError,
    DriverTimeout,
)
from drivers.registry import (
    ENTRY_POINT_GROUP,
    available_drivers,
    driver_modality,
    load_driver_class,
    open_driver,
)
from drivers.settings import (
    CommonSettings,
    DeviceSettings,
    device_settings_adapter,
    parse_device_settings,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CommonSettings",
    "DeviceSettings",
    "Driver",
    "DriverEndOfStream",
    "DriverError",
    "DriverIOError",
    "DriverImportError",
    "DriverOpenError",
    "DriverStats",
    "DriverTimeout",
    "Modality",
    "RawSample",
    "Sample",
    "available_drivers",
    "device_settings_adapter",
    "driver_modality",
    "jittered_backoff",
    "load_driver_class",
    "open_driver",
    "parse_device_settings",
]
