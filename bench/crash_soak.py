"""Kill a recording agent with SIGKILL many times and check that nothing is corrupt or dangling.

Each round starts ``fieldcap run`` (the real daemon: simulated visible camera, IR camera, a
two-microphone booth streaming 3 s WAV segments, a 10 Hz sensor) on the same data directory,
kills it with ``kill -9`` at a random moment (sometimes during start-up and its own recovery, mostly
while recording), then runs start-up recovery and checks:

- every audio file that was being streamed (a ``.part`` with its sidecar) is either salvaged
  into a committed capture or recorded as a ``loss`` event;
- every file under ``media/`` decodes completely and matches its catalog row; no row points at
  nothing; no ``.part`` is left; SQLite passes ``integrity_check``.

    .venv/bin/python bench/crash_soak.py --kills 100          # the full run (~15 min)

The test suite runs a short version (``tests/agent/test_crash_soak.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.catalog.db import Catalog  # noqa: E402
from agent.catalog.integrity import check_integrity  # noqa: E402
from agent.catalog.recovery import recover_report  # noqa: E402
from agent.catalog.wav_part import leftover_sidecars  # noqa: E402

CONFIG = """
[agent]
device_id = "soak-01"
site = "lab"
station = "booth-1"
data_dir = "{data_dir}"

[[devices]]
name = "cam"
type = "sim-camera"
width = 320
height = 240
fps = 10

[[devices]]
name = "ir"
type = "sim-thermal"
fps = 9

[[devices]]
name = "mics"
type = "sim-microphone"
channels = 2
speech_like = true

[[devices]]
name = "env"
type = "sim-serial"
rate_hz = 10

[capture.cam]
policy = "every"

[capture.ir]
policy = "interval"
interval_s = 0.5

[capture.mics]
policy = "segment"
segment_s = 3.0

[capture.env]
policy = "readings"
batch_s = 1.0

[sync]
enabled = false

[metrics]
enabled = false
"""


@dataclass
class SoakResult:
    kills: int = 0
    killed_before_ready: int = 0
    interrupted_audio: int = 0  # streamed audio files open at the kill
    salvaged: int = 0
    lost_with_event: int = 0  # streamed audio that could not be salvaged (each a loss event)
    empty: int = 0  # a sidecar whose audio file had not been created yet (nothing captured)
    finished: int = 0  # committed before the kill; only the cleanup was interrupted
    partial_writes: int = 0  # frames being written at the kill (loss events)
    orphans: int = 0  # files written but not committed at the kill (loss events)
    unaccounted: int = 0  # interrupted audio neither salvaged nor recorded: must stay 0
    corrupt: list[str] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    sqlite_errors: list[str] = field(default_factory=list)
    captures: int = 0
    media_files: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.dangling or self.leftovers or self.sqlite_errors or self.unaccounted)


def _wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if b"ready:" in log.read_bytes():
            return True
        time.sleep(0.05)
    return False


def run_soak(kills: int, workdir: Path, *, seed: int = 0, max_run_s: float = 4.0, echo: Any = print) -> SoakResult:
    """Run ``kills`` rounds; return what was interrupted, salvaged and lost, and any corruption."""
    rng = random.Random(seed)
    data_dir = workdir / "data"
    config = workdir / "agent.toml"
    config.write_text(CONFIG.format(data_dir=data_dir))
    result = SoakResult()
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i in range(kills):
        log = workdir / f"agent-{i % 3}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "-v", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
            early = rng.random() < 0.15  # sometimes kill during start-up (and its own recovery)
            if early:
                time.sleep(rng.uniform(0.5, 4.0))
                result.killed_before_ready += int(b"ready:" not in log.read_bytes())
            elif not _wait_ready(log, proc, 120.0):
                proc.kill()
                proc.wait()
                raise RuntimeError(f"round {i}: the agent did not become ready; see {log}:\n{log.read_text()[-2000:]}")
            else:
                time.sleep(rng.uniform(0.2, max_run_s))
            if proc.poll() is not None:
                raise RuntimeError(f"round {i}: the agent exited by itself ({proc.returncode}); see {log}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        result.kills += 1
        open_audio = len(leftover_sidecars(data_dir / "media"))
        result.interrupted_audio += open_audio
        with Catalog(data_dir / "catalog.sqlite", "soak-01") as cat:
            report = recover_report(cat, data_dir)
            accounted = report.salvaged + report.unsalvageable + report.finished
            empty = open_audio - accounted  # sidecars whose audio file did not exist yet
            result.salvaged += report.salvaged
            result.lost_with_event += report.unsalvageable
            result.finished += report.finished
            result.empty += max(0, empty)
            result.unaccounted += max(0, -empty)
            result.partial_writes += report.partial
            result.orphans += report.orphan
            check = check_integrity(cat, data_dir)
        result.corrupt += check.corrupt
        result.dangling += check.dangling + [f"orphan after recovery: {p}" for p in check.orphans]
        result.leftovers += check.leftovers
        if check.sqlite != "ok":
            result.sqlite_errors.append(f"round {i}: {check.sqlite}")
        result.captures, result.media_files = check.rows, check.files
        echo(
            f"round {i + 1}/{kills}: open audio {open_audio}, salvaged {report.salvaged},"
            f" lost {report.unsalvageable}, partial {report.partial}, orphan {report.orphan},"
            f" {'OK' if check.ok else 'PROBLEM'} ({check.rows} rows, {check.files} files)"
        )
    result.seconds = round(time.monotonic() - start, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fieldcap-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_soak(args.kills, workdir, seed=args.seed)
    print(json.dumps({**asdict(result), "ok": result.ok, "workdir": str(workdir)}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
