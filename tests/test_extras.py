"""The edge install carries only what a device needs; optional modules fail with one clear line."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.errors import FieldcapError
from agent.extras import OPTIONAL, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CENTRAL_ONLY = {"pyarrow", "matplotlib", "mcap", "psycopg", "pandas", "datasets", "webdataset", "scipy"}
DEVICE_PACKAGES = ("agent", "drivers", "models", "sync")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_edge_dependencies_hold_no_central_package() -> None:
    edge = {_name(r) for r in PROJECT["dependencies"]}
    assert not edge & CENTRAL_ONLY, edge & CENTRAL_ONLY
    central = {_name(r) for r in PROJECT["optional-dependencies"]["central"]}
    assert set(OPTIONAL) <= central  # every module require() knows is installed by 'central'
    for module, extra in OPTIONAL.items():  # ... and by the extra it names
        assert module in {_name(r) for r in PROJECT["optional-dependencies"][extra]}, (module, extra)
    assert {"pyarrow", "matplotlib", "mcap", "psycopg"} <= central
    assert "onnx" in edge  # QC builds its derived graphs on the device


def test_every_dependency_is_pinned_to_a_range() -> None:
    reqs = [*PROJECT["dependencies"], *(r for rs in PROJECT["optional-dependencies"].values() for r in rs)]
    for req in reqs:
        assert ">=" in req and "<" in req.replace("<=", ""), req


def test_the_license_is_an_spdx_expression() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "setuptools>=77" in build  # the first setuptools that reads an SPDX license string


def test_require_names_the_extra_in_one_line() -> None:
    with pytest.raises(MissingExtra) as info:
        require("fieldcap_no_such_module", extra="central")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "fieldcap_no_such_module needs the 'central' extra: pip install 'fieldcap[central]' "
        "(fieldcap_no_such_module is not installed)"
    )
    assert isinstance(info.value, click.ClickException)
    assert isinstance(info.value, FieldcapError)
    assert isinstance(info.value, ImportError)  # code that falls back on a missing module still works


def test_require_returns_the_module() -> None:
    assert require("json").dumps([]) == "[]"


def test_the_cli_prints_the_line_and_exits_1() -> None:
    @click.command()
    def needs_it() -> None:
        require("fieldcap_no_such_module", extra="central", feature="the dataset card")

    result = CliRunner().invoke(needs_it, [])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: the dataset card needs the 'central' extra: pip install 'fieldcap[central]' "
        "(fieldcap_no_such_module is not installed)"
    ]


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def test_parquet_export_without_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.datasets import hf

    _hide(monkeypatch, "pyarrow", "pyarrow.parquet")
    with pytest.raises(MissingExtra, match=r"^Parquet export needs the 'central' extra"):
        hf._pyarrow()


def test_plots_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.datasets import plots

    _hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
    with pytest.raises(MissingExtra, match=r"^the dataset card's plots needs the 'central' extra"):
        plots._pyplot()


def test_postgres_store_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.pgstore import PostgresStore

    _hide(monkeypatch, "psycopg")
    with pytest.raises(MissingExtra, match=r"^the PostgreSQL store needs the 'central' extra"):
        PostgresStore("postgresql://nobody@localhost:1/none")


def test_mcap_export_without_mcap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agent.sessions.mcap import export_session

    _hide(monkeypatch, "mcap", "mcap.writer")
    with pytest.raises(MissingExtra, match=r"^MCAP export needs the 'mcap' extra"):
        export_session(None, "any", tmp_path / "out.mcap")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_device_code_imports_without_the_central_packages() -> None:
    """Every module a device runs imports with the central-only packages hidden."""
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for name in {sorted(CENTRAL_ONLY)!r}:
            sys.modules[name] = None
        failed = []
        for top in {DEVICE_PACKAGES!r}:
            pkg = importlib.import_module(top)
            for info in pkgutil.walk_packages(pkg.__path__, top + "."):
                if info.name.endswith(".__main__"):
                    continue
                try:
                    importlib.import_module(info.name)
                except ImportError as exc:
                    failed.append(f"{{info.name}}: {{exc}}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
