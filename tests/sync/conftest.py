"""Fixtures of the sync tests; the helpers themselves live in ``sync_harness`` and ``mqtt_proxy``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests are not a package (--import-mode=importlib)

from sync_harness import Central, Device, sqlite_central


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path / "device", "dev-1")


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    c = sqlite_central(tmp_path / "central")
    try:
        yield c
    finally:
        c.store.close()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh database on the throwaway PostgreSQL cluster, dropped afterwards."""
    import uuid

    import psycopg

    name = f"sync_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_central(pg_url: str, tmp_path: Path) -> Iterator[Central]:
    from central.blobs import BlobTree
    from central.store import open_store

    c = Central(open_store(pg_url), BlobTree(tmp_path / "pg-blobs"), pg_url)
    try:
        yield c
    finally:
        c.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_central(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Central]:
    """The same test against both central stores."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_central")
        return
    c = sqlite_central(tmp_path / "central")
    try:
        yield c
    finally:
        c.store.close()
