"""Shared fixtures: real peers, started per test module or session, never the machine's own services."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.broker import LocalBroker, free_port


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[LocalBroker]:
    """A throwaway Mosquitto per test module: generated config, free port, no persistence."""
    with LocalBroker() as broker:
        yield broker


def _pg_bin() -> Path | None:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for root in roots:
        if (root / "initdb").exists() and (root / "pg_ctl").exists():
            return root
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl on a free port in a temp dir)."""
    pg = _pg_bin()
    if pg is None:
        pytest.fail("PostgreSQL server binaries are missing: run `./dev test`, which installs Debian's postgresql")
    tmp = Path(tempfile.mkdtemp(prefix="fieldcap-pg-"))
    tmp.chmod(0o777)
    data = tmp / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    subprocess.run(_as_postgres([str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
                   check=True, capture_output=True)
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(_as_postgres([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "fieldcap"]),
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/fieldcap"
    finally:
        subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """Where the fetched models live (``./dev test`` fetches them once)."""
    return Path(os.environ.get("FIELDCAP_MODEL_DIR", Path(__file__).resolve().parents[1] / ".cache" / "models"))
