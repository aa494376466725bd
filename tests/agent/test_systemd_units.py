"""The unit files: `systemd-analyze verify` clean, the settings the agent relies on, and a working ExecStartPre."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import DaemonSettings

UNITS = Path(__file__).resolve().parents[2] / "systemd"
FIELDCAP = str(Path(sys.executable).with_name("fieldcap"))
INSTALLED = "/usr/local/bin/fieldcap"  # the documented install location (see the README)


def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (it works without systemd as PID 1)")
    return exe


def localized(unit: str, tmp_path: Path, *, rename: str | None = None) -> Path:
    """A copy whose commands point at this checkout's fieldcap (verify checks that they exist)."""
    text = (UNITS / unit).read_text()
    assert INSTALLED in text
    out = tmp_path / (rename or unit)
    out.write_text(text.replace(INSTALLED, FIELDCAP))
    return out


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze(), "verify", str(path)], capture_output=True, text=True, cwd=path.parent, check=False
    )


def service(unit: str) -> dict[str, list[str]]:
    """The [Service] section with repeated keys kept (systemd allows them)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize(
    ("unit", "as_name"),
    [
        ("fieldcap-agent.service", None),
        ("fieldcap-ingest.service", None),
        ("fieldcap-ingest@.service", None),
        ("fieldcap-ingest@.service", "fieldcap-ingest@2.service"),
    ],
)
def test_units_verify_cleanly(unit: str, as_name: str | None, tmp_path: Path) -> None:
    done = verify(localized(unit, tmp_path, rename=as_name))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # not even a warning (an unknown key is only a warning)


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    path = localized("fieldcap-agent.service", tmp_path)
    path.write_text(path.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    done = verify(path)
    assert "Unknown key 'NoNewPrivilege'" in done.stdout + done.stderr


def test_agent_unit_settings() -> None:
    s = service("fieldcap-agent.service")
    assert s["Type"] == ["notify"]
    assert s["ExecStartPre"] == [f"{INSTALLED} config validate /etc/fieldcap/agent.toml"]
    assert s["ExecStart"] == [f"{INSTALLED} run --config /etc/fieldcap/agent.toml"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert s["ExecReload"][0].startswith(f"{INSTALLED} config validate")
    assert any(v.startswith("mqtt-password:/etc/fieldcap/credentials/") for v in s["LoadCredential"])
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "SupplementaryGroups": "video audio dialout",
        "ReadWritePaths": "/var/lib/fieldcap",
        "DevicePolicy": "closed",
        "Restart": "on-failure",
    }.items():
        assert s[key] == [value], key
    assert {"char-video4linux rw", "char-alsa rw", "char-ttyUSB rw", "char-ttyACM rw"} <= set(s["DeviceAllow"])
    assert "PrivateDevices" not in s  # it would hide the cameras, sound cards and serial ports
    assert "ProtectClock" not in s  # it blocks the read-only adjtimex() behind the clock health
    # The agent must finish its own clean stop before systemd's stop timeout kills it.
    assert float(s["TimeoutStopSec"][0]) > DaemonSettings().stop_timeout_s
    assert int(s["WatchdogSec"][0]) >= 10


def test_ingest_units_pass_settings_and_credentials() -> None:
    for unit in ("fieldcap-ingest.service", "fieldcap-ingest@.service"):
        s = service(unit)
        assert s["ExecStart"][0].startswith(f"{INSTALLED} ingest --broker ${{FIELDCAP_BROKER}}")
        assert "--password-file %d/mqtt-password" in s["ExecStart"][0]
        assert s["LoadCredential"] and s["ProtectSystem"] == ["strict"]
    assert "-/etc/fieldcap/ingest-%i.env" in service("fieldcap-ingest@.service")["EnvironmentFile"]
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((UNITS / "fieldcap-ingest@.service").read_text())
    assert "%i" in parser["Unit"]["Description"]


def test_exec_start_pre_fails_a_bad_config_with_one_line(tmp_path: Path) -> None:
    """What ExecStartPre runs: a good file passes, a broken one stops the start with a clear message."""
    good = tmp_path / "agent.toml"
    good.write_text(f'[agent]\ndevice_id = "unit-01"\ndata_dir = "{tmp_path / "data"}"\n')
    pre = service("fieldcap-agent.service")["ExecStartPre"][0].replace(INSTALLED, FIELDCAP).split()
    argv = [*pre[:-1], str(good)]
    ok = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    good.write_text('[agent]\ndevice_id = "unit 01"\n')
    bad = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"{good}:2: agent.device_id: ")  # file:line: key: message
    assert "Traceback" not in bad.stderr
