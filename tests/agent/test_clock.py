"""The clock: the kernel's sync state, chrony/PTP parsing, and the map entry in force at a time."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.capture.clock import (
    Clock,
    ClockHealth,
    ClockSample,
    chrony_status,
    clock_health,
    kernel_clock_health,
    parse_chrony_tracking,
    parse_pmc_time_status,
    ptp_status,
)
from agent.catalog.db import Catalog

# `chronyc -c tracking` as chrony 4.3 prints it (synchronised to a server, and not synchronised).
CHRONY_SYNCED = (
    "C0A80001,192.168.0.1,3,1732712345.123456789,-0.000012345,0.000004567,0.000023456,"
    "-12.345,0.001,0.045,0.012345678,0.000987654,64.2,Normal\n"
)
CHRONY_UNSYNCED = (
    "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.0,1.0,0.0,Not synchronised\n"
)
PMC_ANSWER = """sending: GET TIME_STATUS_NP
\t0c42a1.fffe.012345-0 seq 0 RESPONSE MANAGEMENT TIME_STATUS_NP
\t\tmaster_offset              -142
\t\tingress_time               1732712345123456789
\t\tcumulativeScaledRateOffset +0.000000000
\t\tscaledLastGmPhaseChange    0
\t\tgmTimeBaseIndicator        0
\t\tlastGmPhaseChange          0x0000'0000000000000000.0000
\t\tgmPresent                  true
\t\tgmIdentity                 0c42a1.fffe.0abcde
"""


def test_kernel_state_is_read_without_changing_it() -> None:
    health = kernel_clock_health()
    assert health.source == "ntp_adjtime"
    assert isinstance(health.synced, bool)
    assert health.maxerror_us is not None and health.maxerror_us >= 0


def test_chrony_tracking_is_parsed() -> None:
    synced = parse_chrony_tracking(CHRONY_SYNCED)
    assert synced is not None
    assert synced["synced"] is True
    assert synced["stratum"] == 3
    assert synced["system_offset_s"] == -0.000012345
    assert synced["root_dispersion_s"] == 0.000987654
    unsynced = parse_chrony_tracking(CHRONY_UNSYNCED)
    assert unsynced is not None and unsynced["synced"] is False
    assert parse_chrony_tracking("506 Cannot talk to daemon\n") is None
    assert parse_chrony_tracking("") is None


def test_ptp_time_status_is_parsed() -> None:
    status = parse_pmc_time_status(PMC_ANSWER)
    assert status == {"master_offset_ns": -142, "gm_present": True, "gm_identity": "0c42a1.fffe.0abcde"}
    assert parse_pmc_time_status("sending: GET TIME_STATUS_NP\n") is None


def test_missing_chrony_is_reported_as_absent_not_as_an_error() -> None:
    if shutil.which("chronyc") is None:
        assert chrony_status() is None
    else:  # chronyc present: a socket nobody listens on is "no answer", never an exception
        assert chrony_status("/nonexistent/chronyd.sock") is None


def test_health_as_dict_has_every_field() -> None:
    health = ClockHealth(True, 10, 1, 0, "ntp_adjtime", {"stratum": 3}, {"master_offset_ns": -5})
    assert health.as_dict() == dataclasses.asdict(health)  # hand-built for speed: no field forgotten


def test_utc_uses_the_map_entry_in_force_at_capture_time() -> None:
    clock = Clock(probe_daemons=False)
    first = clock.latest
    health = ClockHealth(True, 10, 1, 0, "test")
    # A step of +2 s one second later: captures before it keep the old offset, later ones the new.
    step = ClockSample(first.t_mono_ns + 1_000_000_000, first.t_realtime_ns + 3_000_000_000, health, "jump")
    clock._history.append(step)
    clock._latest = step
    before = first.t_mono_ns + 500_000_000
    after = first.t_mono_ns + 1_500_000_000
    assert clock.utc_ns(before) == first.t_realtime_ns + 500_000_000
    assert clock.utc_ns(after) == first.t_realtime_ns + 3_500_000_000
    assert clock.entry_at(before).reason == "start"
    assert clock.entry_at(after).health.source == "test"


def test_tick_samples_when_due_and_the_entry_is_synced(tmp_path: Path) -> None:
    clock = Clock(period_s=0.05, probe_daemons=False)
    assert clock.tick() is None or clock.latest.reason in ("periodic", "jump")
    time.sleep(0.06)
    sample = clock.tick()
    assert sample is not None and sample.reason in ("periodic", "jump")
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        cat.add_clock_entry(sample.t_mono_ns, sample.t_realtime_ns, sample.health.as_dict(), sample.reason)
        row = cat.conn.execute("SELECT synced, maxerror_us, health_json FROM clock_map").fetchone()
        assert row["maxerror_us"] == sample.health.maxerror_us
        assert '"source": "ntp_adjtime"' in row["health_json"]
        assert cat.conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'clock'").fetchone()[0] == 1


# The parsers above are checked against recorded output; these two run the real tools where a
# machine has them (a field device with chrony or linuxptp), so a format change in a new release
# shows up as a failure there instead of as silently missing clock health.


@pytest.mark.skipif(
    shutil.which("chronyc") is None, reason="chronyc is not installed here; parsing is tested on chrony 4.3 output"
)
def test_real_chronyc_is_parsed_or_reported_absent() -> None:
    done = subprocess.run(["chronyc", "-c", "-n", "tracking"], capture_output=True, text=True, timeout=10, check=False)
    status = chrony_status()
    if done.returncode != 0 or not done.stdout.strip():
        assert status is None  # chronyc without a chronyd to answer: absent, not an error
        return
    assert parse_chrony_tracking(done.stdout) is not None, done.stdout  # this chrony's format is understood
    assert status is not None and isinstance(status["synced"], bool)
    assert 0 <= status["stratum"] <= 16 and isinstance(status["system_offset_s"], float)
    assert clock_health().chrony is not None


@pytest.mark.skipif(
    shutil.which("pmc") is None, reason="linuxptp's pmc is not installed here; parsing is tested on sample output"
)
def test_real_pmc_is_parsed_or_reported_absent() -> None:
    done = subprocess.run(
        ["pmc", "-u", "-b", "0", "GET TIME_STATUS_NP"], capture_output=True, text=True, timeout=10, check=False
    )
    status = ptp_status()
    if "master_offset" not in done.stdout:
        assert status is None  # no ptp4l answering on its local socket
        return
    assert parse_pmc_time_status(done.stdout) is not None, done.stdout
    assert status is not None and isinstance(status["master_offset_ns"], int)
    assert isinstance(status["gm_present"], bool)
