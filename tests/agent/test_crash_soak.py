"""A short version of ``bench/crash_soak.py``: the real agent killed with SIGKILL at random moments."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "crash_soak.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_random_kill_9_leaves_nothing_corrupt_or_dangling(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("crash_soak", SOAK)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules["crash_soak"] = soak  # dataclasses look their module up there
    spec.loader.exec_module(soak)
    result = soak.run_soak(12, tmp_path, seed=4, echo=lambda _line: None)
    assert result.corrupt == [] and result.dangling == [] and result.leftovers == []
    assert result.sqlite_errors == [] and result.unaccounted == 0
    # Every interrupted audio file was salvaged or is a loss event; the run really interrupted some.
    assert result.interrupted_audio == result.salvaged + result.lost_with_event + result.finished + result.empty
    assert result.salvaged >= 5
    assert result.captures > 100 and result.media_files > 100
