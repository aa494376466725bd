"""`fieldcap status` while the agent runs degraded, and the log formats the daemon writes."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from waits import wait_until

from agent.cli import cli
from agent.config import parse_config
from agent.ops.logs import HumanFormatter, JsonFormatter, stderr_is_journal
from agent.ops.notify import Notifier
from agent.ops.status import summary_line
from agent.ops.supervisor import Supervisor


def test_status_reports_a_degraded_agent_and_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = parse_config(
        {
            "agent": {"device_id": "status-01", "data_dir": str(data)},
            "devices": [
                {"name": "cam", "type": "sim-camera", "width": 64, "height": 48, "fps": 5},
                {"name": "gps", "type": "nmea", "port": str(tmp_path / "no-such-tty"), "open_timeout_s": 1},
            ],
            "sync": {"enabled": False},
            "metrics": {"port": 0},
            "daemon": {"max_restarts": 0, "status_interval_s": 0.3},
        }
    )
    sup = Supervisor(tmp_path / "agent.toml", config, notifier=Notifier({}))
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:

        def written() -> dict[str, Any]:
            try:
                return dict(json.loads((data / "status.json").read_text()))
            except (FileNotFoundError, ValueError):
                return {}

        wait_until(
            "the failed stream and its alert in the status file",
            lambda: (s := written()) and s["streams"]["gps"]["state"] == "failed" and s["recent_alerts"],
        )
        snap = sup.snapshot()
        assert snap["health"] == "degraded"
        assert any(p.startswith("gps failed: cannot open serial port") for p in snap["problems"]), snap["problems"]
        line = summary_line(snap)
        assert line.startswith("degraded: 1/2 streams up") and "gps failed" in line and "\n" not in line

        done = CliRunner().invoke(cli, ["status", "--data-dir", str(data)])
        assert done.exit_code == 4, done.output
        assert "health: degraded" in done.output
        assert "problem: gps failed" in done.output
        assert "cam              running" in done.output
        assert f"metrics: {snap['metrics_url']}" in done.output
        as_json = CliRunner().invoke(cli, ["status", "--data-dir", str(data), "--json"])
        assert as_json.exit_code == 4
        parsed = json.loads(as_json.output)
        assert parsed["running"] is True and parsed["pid"] == os.getpid()
        assert parsed["streams"]["gps"]["state"] == "failed"
        assert parsed["recent_alerts"][0]["kind"] == "stream_failed"
    finally:
        sup.request_stop()
        runner.join(60)


def test_status_of_a_data_dir_that_never_ran_is_a_clear_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path / "nothing")])
    assert done.exit_code == 1
    assert done.output.strip() == (
        f"{tmp_path / 'nothing'}: no such data directory (has the agent run with this configuration?)"
    )


# ---------------------------------------------------------------------------- logs


def _record(msg: str, level: int = logging.ERROR, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("fieldcap.agent", level, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_log_lines_carry_context_fields() -> None:
    line = JsonFormatter().format(_record("cam: no sample for 5 s", stream="cam", event="driver_stall"))
    out = json.loads(line)
    assert out["level"] == "error" and out["logger"] == "fieldcap.agent"
    assert out["msg"] == "cam: no sample for 5 s"
    assert out["stream"] == "cam" and out["event"] == "driver_stall"
    assert JsonFormatter(journal=True).format(_record("x")).startswith("<3>{")


def test_human_lines_for_a_terminal_and_for_the_journal() -> None:
    terminal = HumanFormatter().format(_record("disk full", stream="cam"))
    assert " ERROR   fieldcap.agent: disk full stream=cam" in terminal
    journal = HumanFormatter(journal=True).format(_record("disk full", level=logging.WARNING))
    assert journal == "<4>fieldcap.agent: disk full"  # the journal adds its own timestamp


def test_the_journal_is_recognised_by_its_stream_identity(tmp_path: Path) -> None:
    with (tmp_path / "f").open("w") as fh:
        st = os.fstat(fh.fileno())
        assert stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})  # type: ignore[arg-type]
        assert not stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})  # type: ignore[arg-type]
        assert not stderr_is_journal(fh, {})  # type: ignore[arg-type]
