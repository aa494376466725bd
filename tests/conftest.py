"""Shared fixtures: real peers, started per test module or session, never the machine's own services."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Callable, Iterator
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


def _load(name: str) -> Any:
    # By file path: putting tests/ on sys.path would let tests/agent etc. shadow the real packages.
    spec = importlib.util.spec_from_file_location(f"fieldcap_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_pg = _load_pg_cluster()
PgCluster, pg_bin = _pg.PgCluster, _pg.pg_bin
S3Server = _load("s3_server").S3Server


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(MiB)``: a small filesystem of its own that a test can fill (root only; skipped, with the
    reason, where mounting is impossible), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        mnt = tmp_path / f"fs-{len(mounted)}"
        mnt.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[LocalBroker]:
    """A throwaway Mosquitto per test module: generated config, free port, no persistence."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A throwaway S3 server per test module (moto's HTTP server on a free port); its AWS_* variables."""
    with S3Server(tmp_path_factory.mktemp("s3") / "moto.log") as env:
        yield env


@pytest.fixture
def s3_server_with_auth(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An S3 server that checks access keys; the AWS_* variables it yields hold keys it does not know."""
    with S3Server(tmp_path / "moto-auth.log", auth=True) as env:
        yield env


@pytest.fixture
def own_s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 server of this test alone (which it may stop); the environment points boto3 at it."""
    server = S3Server(tmp_path / "moto-own.log")
    for key, value in server.start().items():
        monkeypatch.setenv(key, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket; this test's environment (and its child processes') points boto3 at it."""
    import uuid

    import boto3

    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    name = f"fieldcap-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


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


@pytest.fixture(autouse=True)
def _device_records_match_their_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every record any test's device catalog queued for sync must pass the central side's schema.

    The ingester refuses bodies that do not match ``sync.records``; checking every catalog the tests
    leave behind catches a device-side change (a new field, a new kind) before a device in the field
    has its records refused.
    """
    root: Path | None = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if root is None:
        return
    import json
    import sqlite3

    from sync.records import body_problem

    problems = []
    for path in root.rglob("catalog.sqlite"):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            rows = conn.execute("SELECT record_id, kind, body_json FROM outbox").fetchall()
            conn.close()
        except sqlite3.Error:
            continue  # a test that corrupts its catalog on purpose
        for rid, kind, body in rows:
            problem = body_problem(kind, json.loads(body))
            if problem is not None:
                problems.append(f"{path.relative_to(root)} {rid} ({kind}): {problem}")
    assert not problems, "device records the ingester would refuse:\n" + "\n".join(problems[:10])
