"""``fieldcap devices probe`` / ``drivers``: runs on any machine, reports instead of crashing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from agent.cli.devices import devices_group
from drivers import probe

from .conftest import Pty, PulseAudio


def test_probe_json_lists_every_section(pty: Pty) -> None:
    result = CliRunner().invoke(devices_group, ["probe", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert set(found) == {"cameras", "audio", "serial"}
    assert all("device" in port for port in found["serial"])


def test_probe_text(pulse: PulseAudio) -> None:
    result = CliRunner().invoke(devices_group, ["probe"])
    assert result.exit_code == 0, result.output
    assert "Cameras:" in result.output and "Serial ports:" in result.output
    assert "fieldcap_pulse" in result.output  # the private PulseAudio's ALSA device


def test_probe_reports_an_unqueryable_camera() -> None:
    cams = probe.probe_cameras(["/dev/null", "/dev/video-nonexistent"])
    assert [c["path"] for c in cams] == ["/dev/null", "/dev/video-nonexistent"]
    assert all(c["error"] for c in cams)  # ENOTTY / ENOENT reported, not raised


def test_probe_without_portaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_portaudio(name: str, *args: object, **kw: object) -> object:
        if name == "drivers.microphone":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    assert "libportaudio2" in probe.probe_audio()[0]["error"]


def test_drivers_command_lists_builtins() -> None:
    result = CliRunner().invoke(devices_group, ["drivers"])
    assert result.exit_code == 0
    assert "rtsp" in result.output and "sim-microphone" in result.output
