"""``fieldcap run`` re-execs itself once with glibc's huge-page malloc (agent/cli/local.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

SNIPPET = (
    "import os; from agent.cli.local import _reexec_with_huge_pages as r; "
    "print(os.environ.get('GLIBC_TUNABLES'), os.getpid(), flush=True); r()"
)
ROOT = Path(__file__).resolve().parents[2]


def _run(env_extra: dict[str, str]) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env_extra
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def _thp_possible() -> bool:
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return platform.libc_ver()[0] == "glibc" and "[never]" not in mode


@pytest.mark.skipif(not _thp_possible(), reason="needs glibc and transparent huge pages not set to never")
def test_the_daemon_restarts_once_in_place_with_the_tunable() -> None:
    first, second = _run({})
    assert first[0] == "None"
    assert second[0] == "glibc.malloc.hugetlb=1"
    assert first[1] == second[1]  # exec: the same process, so systemd and pid files follow it


def test_an_operator_setting_wins() -> None:
    (only,) = _run({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert only[0] == "glibc.malloc.hugetlb=0"


@pytest.mark.skipif(not _thp_possible(), reason="needs glibc and transparent huge pages not set to never")
def test_other_tunables_are_kept() -> None:
    _first, second = _run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert second[0] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
