"""The ``fieldcap`` command line.

The root group knows its commands from a static table (name -> ``module:attribute`` and a short
help line) and imports a command's module only when that command runs, so ``fieldcap --help``
and ``fieldcap status`` start without numpy, OpenCV, ONNX Runtime or the MQTT client. The
central side's commands are named here as strings only: the device agent never imports
``central``. What every command shares (``UserError``, exit codes, ``--config``/``--json``
options) is in ``agent.cli.common``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, NamedTuple

import click

from agent.cli.common import EXIT_CODES_HELP, EXIT_INTERRUPTED, UserError
from agent.extras import MissingExtra

__all__ = ["COMMANDS", "UserError", "cli", "main", "setup_logging"]


class Entry(NamedTuple):
    target: str  # "module:attribute" of the click command
    help: str  # the line `fieldcap --help` shows, without importing the module
    extra: str = ""  # the pip extra that brings its dependencies, for a clear error when missing


COMMANDS: dict[str, Entry] = {
    "agreement": Entry(
        "central.datasets.commands:agreement_group", "Inter-annotator agreement and adjudication.", "central"
    ),
    "booth": Entry("agent.booth.commands:booth_command", "Record a subject reading a prompt script, item by item."),
    "central": Entry("central.cli:central_group", "Inspect the central store.", "central"),
    "completion": Entry("agent.cli.local:completion_command", "Print the shell completion script (bash, zsh, fish)."),
    "config": Entry("agent.cli.local:config_group", "Check configuration files."),
    "coverage": Entry("agent.booth.commands:coverage_command", "Which item x microphone lacks an accepted take."),
    "demo": Entry("central.cli:demo_command", "Run the whole path on simulated devices, then check it.", "central"),
    "devices": Entry("agent.cli.devices:devices_group", "Find the cameras, microphones and serial sensors here."),
    "export": Entry("central.datasets.commands:export_command", "Export samples as a versioned dataset.", "central"),
    "export-mcap": Entry("agent.cli.local:export_mcap_cmd", "Export a local session as MCAP."),
    "ingest": Entry("central.cli:ingest_command", "Receive, verify and store what devices publish.", "central"),
    "ls": Entry("agent.cli.local:ls_cmd", "What the local catalog holds."),
    "models": Entry("agent.cli.qc:models_group", "Fetch, list and verify the pinned ONNX models."),
    "qc": Entry("agent.cli.qc:qc_command", "Screen audio takes, photos and thermal frames."),
    "report": Entry("central.datasets.commands:report_command", "Write the dataset card.", "central"),
    "rerecord": Entry("agent.booth.commands:rerecord_command", "Record items of a booth session again."),
    "review": Entry("agent.booth.commands:review_command", "Booth takes with their QC verdicts."),
    "review-import": Entry(
        "central.datasets.commands:review_import_command", "Import every annotation from Label Studio.", "central"
    ),
    "run": Entry("agent.cli.local:run_cmd", "Run the agent until SIGTERM."),
    "status": Entry("agent.cli.local:status_cmd", "Health of the agent."),
    "version": Entry(
        "central.datasets.version_commands:version_group", "Named, immutable dataset versions.", "central"
    ),
}


def setup_logging(verbose: int, fmt: str = "human") -> None:
    from agent.ops.logs import configure

    configure(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING, fmt)


def load_command(name: str) -> click.Command:
    """Import the command ``name`` of the table; a missing optional dependency is one line."""
    entry = COMMANDS[name]
    module_name, attr = entry.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in ("agent", "drivers", "models", "sync") or not entry.extra:
            raise
        raise MissingExtra(top, entry.extra, f"fieldcap {name}") from None
    command = getattr(module, attr)
    assert isinstance(command, click.Command)
    return command


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        return load_command(cmd_name)  # not kept: the table stays the one source (modules are cached anyway)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name].help) for name in self.list_commands(ctx) if name in COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="Log lines for people or JSON lines for log collectors.",
)
@click.version_option(package_name="fieldcap")
def cli(verbose: int, log_format: str) -> None:
    """fieldcap: capture, screen and safely sync field data for AI datasets.

    --config defaults to $FIELDCAP_CONFIG in every command that takes it.
    """
    setup_logging(verbose, log_format)


def _register_subsystems() -> None:
    """Load every command of the table (for the README reference and its test)."""
    for name in COMMANDS:
        cli.get_command(click.Context(cli), name)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="fieldcap")
