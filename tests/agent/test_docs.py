"""README.md documents every config key and every CLI command, generated from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_references_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_command_is_in_the_readme() -> None:
    from agent.cli import _register_subsystems, cli

    _register_subsystems()
    readme = (ROOT / "README.md").read_text()
    import click

    def names(cmd: click.Command, path: str) -> list[str]:
        if isinstance(cmd, click.Group):
            return [n for sub, c in cmd.commands.items() for n in names(c, f"{path} {sub}")]
        return [path]

    for name in names(cli, "fieldcap"):
        assert f"### `{name}`" in readme, name


def test_readme_shows_exactly_the_two_setup_commands_and_ci_runs_one() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:]]
    assert blocks[:2] == ["./dev demo", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev test" in ci.splitlines()
