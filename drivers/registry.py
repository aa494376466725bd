"""Driver registry: names map to ``(module, class)`` and only the chosen module is imported.

Built-ins live in ``BUILTIN_DRIVERS``; third-party packages add drivers through the entry-point
group ``fieldcap.drivers`` (``name = "package.module:Class"``). Importing lazily means a broken or
uninstalled backend (no PortAudio, no pymodbus) only affects the streams that use it, and the
failure names the driver, the module and what to install, instead of vanishing from the options.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError, DriverImportError

if TYPE_CHECKING:
    from drivers.base import Driver
    from drivers.settings.common import CommonSettings

__all__ = [
    "BUILTIN_DRIVERS",
    "ENTRY_POINT_GROUP",
    "available_drivers",
    "builtin_settings_types",
    "driver_modality",
    "load_driver_class",
    "open_driver",
]

ENTRY_POINT_GROUP = "fieldcap.drivers"

# name -> (module, class, modality); the modality is here so listing never imports a backend.
_BUILTINS: dict[str, tuple[str, str, str]] = {
    "sim-camera": ("drivers.sim.camera", "SimCamera", "visible"),
    "sim-thermal": ("drivers.sim.thermal", "SimThermal", "thermal"),
    "sim-microphone": ("drivers.sim.microphone", "SimMicrophone", "audio"),
    "sim-serial": ("drivers.sim.serial", "SimSerial", "sensor"),
    "v4l2": ("drivers.camera", "V4l2Camera", "visible"),
    "rtsp": ("drivers.camera", "RtspCamera", "visible"),
    "video-file": ("drivers.camera", "VideoFileCamera", "visible"),
    "thermal-uvc": ("drivers.thermal", "UvcThermalCamera", "thermal"),
    "thermal-rtsp": ("drivers.thermal", "RtspThermalCamera", "thermal"),
    "thermal-png": ("drivers.thermal", "PngThermalSequence", "thermal"),
    "thermal-uart": ("drivers.thermal_uart", "UartThermalArray", "thermal"),
    "microphone": ("drivers.microphone", "Microphone", "audio"),
    "nmea": ("drivers.nmea", "NmeaGps", "sensor"),
    "modbus-rtu": ("drivers.modbus", "ModbusRtuSensor", "sensor"),
    "serial-lines": ("drivers.lines", "LineProtocolSensor", "sensor"),
}

BUILTIN_DRIVERS: dict[str, tuple[str, str]] = {k: (m, c) for k, (m, c, _) in _BUILTINS.items()}
"""Built-in driver names -> (module, class)."""

# What to do when a module's import fails, keyed by a word found in the error.
_HINTS: tuple[tuple[str, str], ...] = (
    ("portaudio", "install the PortAudio library: apt install libportaudio2"),
    ("sounddevice", "install the Python package: pip install sounddevice"),
    ("cv2", "install OpenCV: pip install opencv-python-headless"),
    ("libgl", "use opencv-python-headless, or apt install libgl1"),
    ("serial", "install pyserial: pip install pyserial"),
    ("pymodbus", "install pymodbus: pip install pymodbus"),
    ("pynmea2", "install pynmea2: pip install pynmea2"),
    ("numpy", "install numpy: pip install numpy"),
)


def builtin_settings_types() -> frozenset[str]:
    """Driver names whose settings are part of the built-in ``DeviceSettings`` union."""
    return frozenset(_BUILTINS)


@cache
def _entry_point_drivers() -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module, _, attr = ep.value.partition(":")
        if module and attr and ep.name not in _BUILTINS:
            found[ep.name] = (module.strip(), attr.strip())
    return found


def available_drivers() -> dict[str, tuple[str, str]]:
    """All driver names -> (module, class): built-ins plus the ``fieldcap.drivers`` entry points."""
    return {**_entry_point_drivers(), **BUILTIN_DRIVERS}


def _hint(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc} {getattr(exc, 'name', '') or ''}".lower()
    for word, hint in _HINTS:
        if word in text:
            return f"; {hint}"
    return ""


def load_driver_class(type_name: str) -> type[Driver[Any]]:
    """Import and return the class of driver ``type_name`` (only its own module is imported)."""
    from drivers.base import Driver

    drivers = available_drivers()
    if type_name not in drivers:
        known = ", ".join(sorted(drivers))
        raise DriverError(f"unknown driver type {type_name!r}; known: {known}")
    module_name, class_name = drivers[type_name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise DriverImportError(
            f"driver {type_name!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}{_hint(exc)}"
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverImportError(f"driver {type_name!r}: {module_name}.{class_name} is not a drivers.Driver subclass")
    return cls


def driver_modality(type_name: str) -> str:
    """The modality ('visible', 'thermal', 'audio', 'sensor') a driver produces."""
    if type_name in _BUILTINS:
        return _BUILTINS[type_name][2]
    return str(load_driver_class(type_name).modality)


def open_driver(settings: CommonSettings, *, open: bool = True) -> Driver[Any]:
    """Create the driver for ``settings.type`` and (by default) open it.

    ``open()`` is idempotent, so ``with open_driver(s) as drv:`` works either way; pass
    ``open=False`` to get the driver (and its stats) before the device is reachable.
    """
    driver = load_driver_class(settings.type)(settings)
    if open:
        driver.open()
    return driver
