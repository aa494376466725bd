"""The walking skeleton end to end: `fieldcap demo` against a real Mosquitto, checked from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def fieldcap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_stores_every_capture_centrally(tmp_path: Path) -> None:
    proc = fieldcap("demo", "--seconds", "5", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: all" in proc.stdout
    for stream in ("cam-visible", "cam-ir", "booth-mics", "env"):
        assert stream in proc.stdout

    local = [
        json.loads(line) for line in fieldcap("ls", "--data-dir", str(tmp_path / "agent"), "--json").stdout.splitlines()
    ]
    central_url = f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    central = fieldcap("central", "ls", "--store", central_url, "--kind", "capture", "--json")
    assert central.returncode == 0, central.stderr
    remote = {r["record_id"]: r for r in map(json.loads, central.stdout.splitlines())}

    streams = {r["stream"] for r in local}
    assert streams == {"cam-visible", "cam-ir", "booth-mics", "env"}
    assert len(local) >= 12
    for cap in local:
        assert cap["state"] == "confirmed"
        assert remote[cap["record_id"]]["sha256"] == cap["sha256"]
        if cap["sha256"]:
            blob = tmp_path / "central" / "blobs" / "sha256" / cap["sha256"][:2] / cap["sha256"][2:4] / cap["sha256"]
            assert blob.stat().st_size == cap["size"]
    # QC verdicts and events were synced as records too.
    verdicts = fieldcap("central", "ls", "--store", central_url, "--kind", "verdict", "--json").stdout.splitlines()
    assert len(verdicts) == sum(1 for c in local if c["sha256"])
