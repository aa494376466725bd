"""The central store the dataset tests read: one real ``fieldcap demo`` run, and helpers around it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from central.datasets.commands import agreement_group, export_command, report_command, review_import_command


@contextmanager
def own_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A PostgreSQL database of its own on the session's cluster (dropped after): what one test
    writes stays out of the others' database."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


CLI = click.Group(
    commands={
        "agreement": agreement_group,
        "export": export_command,
        "report": report_command,
        "review-import": review_import_command,
    }
)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A central store (central/central.db + central/blobs) filled by one real `fieldcap demo` run."""
    work = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "FIELDCAP_MODEL_DIR": str(model_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "6", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work / "central"


def store_url(central: Path) -> str:
    return f"sqlite:///{central / 'central.db'}"


@pytest.fixture
def central(demo: Path, tmp_path: Path) -> Path:
    """A private copy of the demo's central store, for tests that write to it (review imports)."""
    copy = tmp_path / "central"
    shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("staging"))
    return copy


def run(*args: str) -> Any:
    return CliRunner().invoke(CLI, list(args), catch_exceptions=False)


def export(central: Path, out: Path, fmt: str, *extra: str) -> dict[str, Any]:
    result = run("export", "--store", store_url(central), "--out", str(out), "--format", fmt, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def sql(central: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(central / "central.db") as conn:
        return conn.execute(query, args).fetchall()


def capture_count(central: Path) -> int:
    return int(sql(central, "SELECT COUNT(*) FROM records WHERE kind = 'capture'")[0][0])


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
