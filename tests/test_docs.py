"""The documentation is current: generated references match the code, links resolve, README stays short."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_references_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_command_is_in_the_cli_reference() -> None:
    root = _gen_docs().root_group()
    reference = (ROOT / "docs" / "cli.md").read_text()

    def paths(cmd: click.Command, ctx: click.Context) -> list[str]:
        found = [ctx.command_path]
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    found += paths(sub, click.Context(sub, info_name=name, parent=ctx))
        return found

    commands = paths(root, click.Context(root, info_name="fieldcap"))
    assert len(commands) > 10
    for path in commands:
        assert f"`{path}`\n" in reference, path


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_readme_shows_exactly_the_two_setup_commands_and_ci_runs_one() -> None:
    readme = README.read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:]]
    assert blocks == ["./dev demo", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev test" in ci.splitlines()


def test_readme_says_where_fieldcap_is_installed() -> None:
    readme = README.read_text()
    assert "virtualenv of its own" in readme and "pipx install fieldcap" in readme
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "fieldcap models fetch" in deploy  # the service has no models until they are fetched


def _anchors(markdown: str) -> set[str]:
    slugs = set()
    for line in FENCE.sub("", markdown).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in [README, *DOCS, ROOT / "bench" / "baselines" / "README.md"]:
        text = FENCE.sub("", doc.read_text())
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_the_docs_name_no_path_outside_the_repository() -> None:
    for doc in [README, ROOT / "BENCHMARKS.md", *DOCS]:
        assert "../shared/" not in doc.read_text(), doc
