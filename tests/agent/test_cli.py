"""The ``fieldcap`` command line as a whole: start-up cost, exit codes, --json, $FIELDCAP_CONFIG,
completion, config errors with line numbers and hints, ``qc --config`` and the model directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from agent.cli import COMMANDS, Entry, cli
from agent.cli.common import EXIT_DEGRADED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "cv2", "onnxruntime", "paho", "scipy", "pydantic", "sqlite_utils", "rich")


def _modules_after(args: list[str], tmp_path: Path) -> set[str]:
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('MODULES', *sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FIELDCAP_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES"))
    return set(line.split()[1:])


def test_help_and_status_start_without_heavy_imports(tmp_path: Path) -> None:
    assert _modules_after(["--help"], tmp_path) == set()
    (tmp_path / "data").mkdir()
    loaded = _modules_after(["status", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert not loaded & {"numpy", "cv2", "onnxruntime", "paho", "scipy", "sqlite_utils"}, loaded
    config = _good_config(tmp_path)
    loaded = _modules_after(["status", "--config", str(config)], tmp_path)
    assert not loaded & {"numpy", "cv2", "onnxruntime", "paho", "scipy", "sqlite_utils", "pydantic"}, loaded


def test_status_of_a_broken_config_says_what_is_wrong(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('[agent]\ndevic_id = "x"\n')
    result = CliRunner().invoke(cli, ["status", "--config", str(file)])
    assert result.exit_code == EXIT_ERROR
    assert f"{file}:2: agent.devic_id: unknown key; did you mean 'device_id'?" in result.output


def test_root_help_lists_every_command_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output, name
    assert "Exit status:" in result.output and "130" in result.output and "degraded" in result.output


def test_exit_codes() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["status", "--no-such-option"]).exit_code == EXIT_USAGE
    assert runner.invoke(cli, ["no-such-command"]).exit_code == EXIT_USAGE
    missing = runner.invoke(cli, ["config", "validate", "/nonexistent/agent.toml"])
    assert missing.exit_code == EXIT_ERROR
    assert missing.output.strip() == "/nonexistent/agent.toml: file not found"


def test_status_not_running_is_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == EXIT_NOT_RUNNING, result.output
    assert json.loads(result.output)["running"] is False


def test_ctrl_c_is_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agent.ops.status

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(agent.ops.status, "read_status", interrupted)
    assert CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path)]).exit_code == EXIT_INTERRUPTED


def test_a_missing_optional_dependency_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(COMMANDS, "demo", Entry("fieldcap_no_such_module:demo", "x", "central"))
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == EXIT_ERROR
    assert "fieldcap demo needs the 'central' extra: pip install 'fieldcap[central]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert "_FIELDCAP_COMPLETE" in result.output and f"{shell}_complete" in result.output


def test_completion_completes_the_lazy_commands(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_FIELDCAP_COMPLETE": "bash_complete", "COMP_WORDS": "fieldcap sta"}
    env["COMP_CWORD"] = "1"
    code = "from agent.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert "plain,status" in proc.stdout


BAD = """\
[agent]
device_id = "dev1"
dat_dir = "/tmp/x"

[[devices]]
name = "cam"
type = "sim-camera"

[[devices]]
name = "mic"
type = "sim-microphon"

[[devices]]
name = "cam2"
type = "sim-camera"
fsp = 3
"""


def test_config_errors_have_line_numbers_and_hints(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text(BAD)
    runner = CliRunner()
    text = runner.invoke(cli, ["config", "validate", str(file)])
    assert text.exit_code == EXIT_ERROR
    lines = text.output.strip().splitlines()
    assert lines[0] == f"{file}:3: agent.dat_dir: unknown key; did you mean 'data_dir'?"
    hint = "unknown device type 'sim-microphon'; did you mean 'sim-microphone'?"
    assert lines[1] == f"{file}:11: devices[1].type: {hint}"
    assert lines[2] == f"{file}:16: devices[2].fsp: unknown key; did you mean 'fps'?"
    as_json = runner.invoke(cli, ["config", "validate", "--json", str(file)])
    assert as_json.exit_code == EXIT_ERROR
    doc = json.loads(as_json.output)
    assert doc["ok"] is False
    assert [(p["line"], p["key"]) for p in doc["problems"]] == [
        (3, "agent.dat_dir"),
        (11, "devices[1].type"),
        (16, "devices[2].fsp"),
    ]


def test_key_line_finds_nested_tables_and_inline_keys() -> None:
    from agent.config_hints import did_you_mean, key_line

    text = '[agent]\ndevice_id = "x"\n\n[capture.cam]\npolicy = "every"\n[qc.profiles.site]\nextends = "a"\n'
    assert key_line(text, ("capture", "cam", "policy")) == 5
    assert key_line(text, ("capture", "cam", "nope")) == 4  # the enclosing table
    assert key_line(text, ("qc", "profiles", "site", "extends")) == 7
    assert key_line(text, ("sync", "broker")) is None
    assert did_you_mean("polcy", ["policy", "pre_s"]) == "did you mean 'policy'?"
    assert did_you_mean("zzz", ["policy"]) == ""


def _good_config(tmp_path: Path, extra: str = "") -> Path:
    file = tmp_path / "agent.toml"
    file.write_text(f'[agent]\ndevice_id = "dev1"\ndata_dir = "{tmp_path / "data"}"\n{extra}')
    return file


def test_fieldcap_config_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = _good_config(tmp_path)
    monkeypatch.setenv("FIELDCAP_CONFIG", str(file))
    runner = CliRunner()
    valid = runner.invoke(cli, ["config", "validate", "--json"])
    assert valid.exit_code == 0, valid.output
    doc = json.loads(valid.output)
    warnings = doc.pop("warnings")
    assert doc == {"ok": True, "file": str(file), "devices": 0, "device_id": "dev1"}
    assert len(warnings) == 1 and warnings[0].startswith("sync.receipt_public_key is not set")
    listed = runner.invoke(cli, ["ls"])
    assert listed.exit_code == EXIT_ERROR and f"{tmp_path / 'data' / 'catalog.sqlite'}: no catalog" in listed.output
    (tmp_path / "data").mkdir()
    status = runner.invoke(cli, ["status", "--json"])
    assert status.exit_code == EXIT_NOT_RUNNING, status.output
    assert json.loads(status.output)["device_id"] == "dev1"
    cov = runner.invoke(cli, ["coverage"])
    assert "catalog.sqlite: no catalog here yet" in cov.output and cov.exit_code == EXIT_ERROR
    monkeypatch.delenv("FIELDCAP_CONFIG")
    assert runner.invoke(cli, ["ls"]).exit_code == EXIT_USAGE


@pytest.fixture
def take(tmp_path: Path) -> Path:
    rate = 16000
    t = np.arange(rate * 2) / rate
    path = tmp_path / "take.wav"
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_qc_config_applies_the_site_profiles(tmp_path: Path, take: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    profile = '[qc.profiles.long-takes]\nextends = "booth-speech"\nmin_duration_s = 1000\n'
    file = _good_config(tmp_path, profile)
    runner = CliRunner()
    args = ["qc", "--json", "--model-dir", str(empty), "--profile", "long-takes", str(take)]
    unknown = runner.invoke(cli, args)
    assert unknown.exit_code == EXIT_USAGE and "unknown profile 'long-takes'" in unknown.output
    for how in ("option", "env"):
        if how == "env":
            monkeypatch.setenv("FIELDCAP_CONFIG", str(file))
        result = runner.invoke(cli, args if how == "env" else ["qc", "--config", str(file), *args[1:]])
        row = json.loads(result.output.splitlines()[0])
        assert row["profile"] == "long-takes" and row["verdict"] == "fail", row
        assert any("shorter" in r or "duration" in r for r in row["reasons"]), row["reasons"]
        # the models are not in the (empty) cache: the analyzers could not run, and qc says so
        assert set(row["not_run"]) >= {"silero-vad"}, row
        assert result.exit_code == EXIT_DEGRADED
    lenient = runner.invoke(cli, [*args, "--allow-missing-models"])
    assert lenient.exit_code == 0, lenient.output


def test_model_dir_default_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.registry import default_cache_dir
    from models.screener import Screener

    monkeypatch.delenv("FIELDCAP_MODEL_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "fieldcap" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "fieldcap" / "models"
    assert Screener().model_dir == tmp_path / "xdg" / "fieldcap" / "models"
    monkeypatch.setenv("FIELDCAP_MODEL_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    listed = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert listed.exit_code == 0
    assert {Path(json.loads(ln)["path"]).parent for ln in listed.output.splitlines()} == {tmp_path / "mine"}


def test_models_verify_and_fetch_json(tmp_path: Path) -> None:
    runner = CliRunner()
    verify = runner.invoke(cli, ["models", "verify", "--json", "--model-dir", str(tmp_path), "dnsmos"])
    assert verify.exit_code == EXIT_ERROR
    row = json.loads(verify.output.splitlines()[0])
    assert row["name"] == "dnsmos" and row["state"] == "missing"
    unknown = runner.invoke(cli, ["models", "fetch", "--json", "--model-dir", str(tmp_path), "nope"])
    assert unknown.exit_code == EXIT_ERROR and "unknown model 'nope'" in unknown.output
