"""Config validation: every user mistake names the file and key path, exits non-zero, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import check_secrets, load_config, parse_config
from agent.errors import ConfigError
from sync.signing import generate

ROOT = Path(__file__).resolve().parents[2]
BASE = '[agent]\ndevice_id = "dev-1"\ndata_dir = "/tmp/x"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def fieldcap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=env, check=False)


def test_unknown_key_names_path(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[[devices]]\nname = "cam"\ntype = "sim-camera"\nfsp = 5\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:7: devices[0].fsp: unknown key; did you mean 'fps'?"
    assert err.value.line == 7 and err.value.key == "devices[0].fsp"


def test_wrong_type_in_second_device(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE + '[[devices]]\nname = "a"\ntype = "sim-camera"\n[[devices]]\nname = "b"\ntype = "rtsp"\nurl = 5\n',
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "devices[1].url"
    assert "valid string" in err.value.message


def test_out_of_range_value(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[[devices]]\nname = "cam"\ntype = "sim-camera"\nfps = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "devices[0].fps"
    assert "greater than 0" in err.value.message


def test_unknown_driver_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[[devices]]\nname = "cam"\ntype = "warp-drive"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key.startswith("devices[0]")
    assert "warp-drive" in str(err.value) or "type" in str(err.value)


def test_capture_for_unknown_device(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[capture.nothere]\npolicy = "interval"\n')
    with pytest.raises(ConfigError, match=r"\[capture.nothere\] names no device"):
        load_config(path)


def test_bad_broker_url_and_toml_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sync\.broker"):
        parse_config({"agent": {"device_id": "d"}, "sync": {"broker": "http://x"}})
    path = write(tmp_path, BASE + "[sync\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_device_id_cannot_hold_topic_wildcards() -> None:
    with pytest.raises(ConfigError, match=r"agent\.device_id"):
        parse_config({"agent": {"device_id": "a/#"}})


def test_missing_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE + '[sync]\npassword_file = "mqtt-password"\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    cfg = load_config(path)
    with pytest.raises(ConfigError) as err:
        check_secrets(cfg, str(path))
    assert err.value.key == "sync.password_file"
    assert "not found" in err.value.message
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text("s3cret\n")
    check_secrets(cfg, str(path))


def test_cli_validate_prints_one_line_per_problem_and_exits_nonzero(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + '[[devices]]\nname = "a"\ntype = "sim-camera"\n[[devices]]\nname = "b"\ntype = "rtsp"\nurl = 5\nfoo = 1\n',
    )
    proc = fieldcap("config", "validate", str(path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"{path}:10: devices[1].url: Input should be a valid string"
    assert lines[1].startswith(f"{path}:11: devices[1].foo: unknown key")


def test_cli_validate_missing_file_is_clear() -> None:
    proc = fieldcap("config", "validate", "/nonexistent/agent.toml")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "/nonexistent/agent.toml: file not found"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_examples_validate_with_their_credentials(example: Path, tmp_path: Path) -> None:
    cfg = load_config(example)
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("ca.pem", "ca.crt", "device.pem", "device.key", "mqtt-password", "subject-key", "camera-credentials"):
        (creds / name).write_text("x\n")
    generate(creds)  # receipt-key.pub is a real key: validate loads it
    import os

    proc = fieldcap("config", "validate", str(example), env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)})
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # the examples show the safe setup
    if cfg.sync.password_file:
        assert cfg.sync.broker.startswith("mqtts://")
    assert cfg.devices


SYNC = BASE + '[[devices]]\nname = "cam"\ntype = "sim-camera"\n[sync]\n'


@pytest.mark.parametrize(
    ("broker", "allowed"),
    [
        ("mqtt://ingest.lan:1883", False),
        ("mqtt://10.0.0.5:1883", False),
        ("mqtt://127.0.0.1:1883", True),
        ("mqtt://[::1]:1883", True),
        ("mqtt://localhost:1883", True),
    ],
)
def test_a_password_over_plain_mqtt_leaves_the_machine_only_when_allowed(
    tmp_path: Path, broker: str, allowed: bool
) -> None:
    path = write(tmp_path, SYNC + f'broker = "{broker}"\npassword_file = "pw"\n')
    if allowed:
        load_config(path)
    else:
        proc = fieldcap("config", "validate", "--no-secrets", str(path))
        assert proc.returncode == 1
        assert "sync: password_file would send the password in clear text" in proc.stderr
        assert "use mqtts://" in proc.stderr and "allow_plaintext_password = true" in proc.stderr
        assert "Traceback" not in proc.stderr
        path.write_text(path.read_text() + "allow_plaintext_password = true\n")
        load_config(path)  # the operator's explicit choice
    tls = write(tmp_path, SYNC + 'broker = "mqtts://ingest.lan:8884"\npassword_file = "pw"\ntls = { ca_file = "ca" }\n')
    load_config(tls)


def test_validate_warns_about_unverified_receipts_and_checks_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, SYNC + 'broker = "mqtt://127.0.0.1:1883"\n')
    proc = fieldcap("config", "validate", str(path))
    assert proc.returncode == 0
    assert "warning: sync.receipt_public_key is not set" in proc.stderr
    assert "never evicted" in proc.stderr
    private, public, _ = generate(tmp_path / "keys")
    path.write_text(path.read_text() + f'receipt_public_key = "{public}"\n')
    proc = fieldcap("config", "validate", str(path))
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    path.write_text(path.read_text().replace(str(public), str(private)))
    proc = fieldcap("config", "validate", str(path))
    assert proc.returncode == 1
    assert "sync.receipt_public_key" in proc.stderr and "not a PEM public key" in proc.stderr
    assert "Traceback" not in proc.stderr
