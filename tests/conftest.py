"""Shared fixtures: real peers, started per test module or session, never the machine's own services."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.broker import LocalBroker


def _load_pg_cluster() -> Any:
    # By file path: putting tests/ on sys.path would let tests/agent etc. shadow the real packages.
    spec = importlib.util.spec_from_file_location("fieldcap_pg_cluster", Path(__file__).with_name("pg_cluster.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_pg = _load_pg_cluster()
PgCluster, pg_bin = _pg.PgCluster, _pg.pg_bin


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[LocalBroker]:
    """A throwaway Mosquitto per test module: generated config, free port, no persistence."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl on a free port in a temp dir)."""
    if pg_bin() is None:
        pytest.fail("PostgreSQL server binaries are missing: run `./dev test`, which installs Debian's postgresql")
    with PgCluster() as url:
        yield url


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """Where the fetched models live (``./dev test`` fetches them once)."""
    return Path(os.environ.get("FIELDCAP_MODEL_DIR", Path(__file__).resolve().parents[1] / ".cache" / "models"))
