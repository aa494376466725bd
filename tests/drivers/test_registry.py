"""Registry, settings models and the lazy-import promise."""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

import drivers
from drivers import (
    DriverImportError,
    available_drivers,
    driver_modality,
    open_driver,
    parse_device_settings,
    registry,
)
from drivers.settings import DeviceSettings, StrictModel

CONTRACT = {
    "Sample",
    "Driver",
    "DriverStats",
    "DeviceSettings",
    "open_driver",
    "available_drivers",
    "driver_modality",
    "DriverError",
    "DriverOpenError",
    "DriverIOError",
    "DriverTimeout",
    "DriverImportError",
}


def _models() -> list[type[BaseModel]]:
    union = get_args(get_args(DeviceSettings)[0])
    return list(union)


def test_public_surface() -> None:
    assert set(drivers.__all__) >= CONTRACT
    assert issubclass(drivers.DriverTimeout, TimeoutError)


def test_every_builtin_is_registered_with_settings_and_modality() -> None:
    names = {m.model_fields["type"].annotation.__args__[0] for m in _models()}  # type: ignore[union-attr]
    assert names == set(registry.BUILTIN_DRIVERS)
    for name in names:
        assert driver_modality(name) in {"visible", "thermal", "audio", "sensor"}
        cls = registry.load_driver_class(name)
        assert cls.modality == driver_modality(name), name


def test_every_field_is_described_and_models_forbid_extras() -> None:
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", model
        for fname, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{fname} has no description"
            for arg in [info.annotation, *get_args(info.annotation)]:
                for inner in [arg, *get_args(arg)]:
                    if isinstance(inner, type) and issubclass(inner, StrictModel):
                        walk(inner)

    for model in _models():
        walk(model)
    assert len(seen) > 15


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ValidationError, match="fsp"):
        parse_device_settings({"name": "cam", "type": "sim-camera", "fsp": 5})
    with pytest.raises(ValidationError, match="name"):
        parse_device_settings({"name": "Cam 1", "type": "sim-camera"})
    with pytest.raises(ValidationError, match="sim-camera"):  # lists the valid tags
        parse_device_settings({"name": "cam", "type": "nope"})
    with pytest.raises(ValidationError, match="stopbits"):
        parse_device_settings({"name": "g", "type": "nmea", "port": "/dev/x", "stopbits": 3})
    with pytest.raises(ValidationError, match="unique"):
        parse_device_settings(
            {
                "name": "m",
                "type": "modbus-rtu",
                "port": "/dev/x",
                "registers": [{"name": "a", "address": 0}, {"name": "a", "address": 1}],
            }
        )


def test_importing_drivers_and_settings_loads_no_device_library() -> None:
    code = (
        "import sys, drivers, drivers.settings, drivers.registry\n"
        "drivers.available_drivers(); drivers.driver_modality('microphone')\n"
        "drivers.parse_device_settings({'name': 'a', 'type': 'rtsp', 'url': 'rtsp://h/x'})\n"
        "heavy = [m for m in ('cv2', 'sounddevice', 'serial', 'pymodbus', 'pynmea2', 'numpy')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_the_chosen_module_is_imported() -> None:
    code = (
        "import sys, drivers\n"
        "drivers.open_driver(drivers.parse_device_settings("
        "{'name': 'a', 'type': 'sim-serial'}), open=False)\n"
        "print([m for m in ('cv2', 'sounddevice', 'pymodbus', 'pynmea2') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def broken_module(monkeypatch: pytest.MonkeyPatch) -> str:
    """A driver whose module fails at import like sounddevice does without PortAudio."""
    mod = types.ModuleType("fieldcap_test_broken")

    def fail(name: str) -> Any:
        raise OSError("PortAudio library not found")

    mod.__getattr__ = fail  # type: ignore[method-assign]
    monkeypatch.setitem(registry.BUILTIN_DRIVERS, "broken-mic", ("fieldcap_test_no_such_mod", "X"))
    monkeypatch.setitem(registry._BUILTINS, "broken-mic", ("fieldcap_test_no_such_mod", "X", "audio"))
    real_import = registry.importlib.import_module

    def fake_import(name: str, package: str | None = None) -> types.ModuleType:
        if name == "fieldcap_test_no_such_mod":
            raise OSError("PortAudio library not found")
        return real_import(name, package)

    monkeypatch.setattr(registry.importlib, "import_module", fake_import)
    return "broken-mic"


def test_import_failure_names_driver_module_and_package(broken_module: str) -> None:
    with pytest.raises(DriverImportError) as err:
        registry.load_driver_class(broken_module)
    text = str(err.value)
    assert "broken-mic" in text and "fieldcap_test_no_such_mod" in text
    assert "apt install libportaudio2" in text
    assert isinstance(err.value, ImportError)


def test_missing_python_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN_DRIVERS, "ghost", ("fieldcap_ghost_module", "Ghost"))
    with pytest.raises(DriverImportError, match="fieldcap_ghost_module"):
        registry.load_driver_class("ghost")


def test_entry_point_drivers_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    ep = EntryPoint("acme-cam", "acme.cam:AcmeCamera", registry.ENTRY_POINT_GROUP)
    registry._entry_point_drivers.cache_clear()
    monkeypatch.setattr(registry, "entry_points", lambda **_: [ep])
    try:
        assert available_drivers()["acme-cam"] == ("acme.cam", "AcmeCamera")
        assert available_drivers()["rtsp"] == ("drivers.camera", "RtspCamera")
        with pytest.raises(DriverImportError, match="acme-cam"):
            driver_modality("acme-cam")
    finally:
        registry._entry_point_drivers.cache_clear()


def test_open_driver_opens_by_default() -> None:
    settings = parse_device_settings({"name": "t", "type": "sim-serial", "rate_hz": 50})
    with open_driver(settings) as drv:
        assert drv.is_open
        assert drv.read(1).seq == 0
    assert not open_driver(settings, open=False).is_open
