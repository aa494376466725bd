"""The layout's promises: which package may import which, and no clash of top-level names.

The device agent must run without the central side installed or imported; the building blocks
(drivers, models, sync) import none of the deployables. Checked on the source (every import,
including those inside functions), so a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "central", "drivers", "models", "sync")
# What each top-level package may import of the others.
ALLOWED = {
    "drivers": {"drivers"},
    "models": {"models"},
    "sync": {"sync"},
    "agent": {"agent", "drivers", "models", "sync"},
    "central": {"central", "agent", "drivers", "models", "sync"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def package_graph() -> dict[str, dict[str, set[str]]]:
    """For each package, the other packages it imports and the files that do."""
    graph: dict[str, dict[str, set[str]]] = {p: {} for p in PACKAGES}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in imports_of(path):
                top = name.split(".")[0]
                if top in PACKAGES:
                    graph[pkg].setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return graph


@pytest.mark.parametrize("pkg", PACKAGES)
def test_packages_import_only_what_their_layer_allows(pkg: str) -> None:
    graph = package_graph()
    wrong = {other: sorted(files) for other, files in graph[pkg].items() if other not in ALLOWED[pkg]}
    assert not wrong, f"{pkg} imports {wrong}"


def test_the_device_agent_never_imports_the_central_side() -> None:
    assert "central" not in package_graph()["agent"]


def test_the_dataset_tools_live_in_one_place() -> None:
    assert (ROOT / "central" / "datasets" / "export.py").is_file()
    assert not (ROOT / "sync" / "dataset").exists()


def test_no_installed_distribution_ships_a_top_level_package_of_ours() -> None:
    """fieldcap's top-level names are generic; another distribution providing one would shadow ours."""
    owners = importlib.metadata.packages_distributions()
    clashes = {name: dists for name in PACKAGES if (dists := [d for d in owners.get(name, []) if d != "fieldcap"])}
    assert not clashes, f"other distributions install top-level packages named like fieldcap's: {clashes}"


SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|WITH)\b.*\b(FROM|INTO|SET|TABLE|INDEX)\b", re.I | re.S
)


def sql_strings(path: Path) -> list[int]:
    """Lines of the string literals (f-strings included) in ``path`` that are SQL statements."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
        else:
            continue
        if SQL.search(text):
            found.append(node.lineno)
    return found


def test_the_catalog_owns_every_query_on_its_tables() -> None:
    """On the device, SQL lives in ``agent/catalog`` only: everything else asks the catalog."""
    outside = {
        str(path.relative_to(ROOT)): lines
        for pkg in ("agent", "drivers", "models", "sync")
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if "catalog" not in path.relative_to(ROOT / pkg).parts[:1] and (lines := sql_strings(path))
    }
    assert not outside, f"SQL outside agent/catalog: {outside}"
    assert sql_strings(ROOT / "agent" / "catalog" / "outbox_rows.py")  # the scan does see SQL
