"""The ``fieldcap`` command line.

Every user mistake ends in one line saying what is wrong, where, and what to do, and a non-zero
exit status — never a traceback. Subsystems contribute their own command groups (``qc`` and
``models`` from ``models``, ``devices`` from ``drivers``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from agent.errors import FieldcapError

log = logging.getLogger("fieldcap")


def setup_logging(verbose: int, fmt: str = "human") -> None:
    from agent.ops.logs import configure

    configure(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING, fmt)


class UserError(click.ClickException):
    """A user mistake: printed as the bare message (``FILE: key: what is wrong``), exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), file=file or sys.stderr)


# Commands that live with their subsystem, imported only when used: `fieldcap ls` should not pay
# for scipy and onnxruntime, which `fieldcap qc` needs.
SUBSYSTEM_COMMANDS = {
    "qc": "models.commands:qc_command",
    "models": "models.commands:models_group",
    "devices": "drivers.commands:devices_group",
    "demo": "central.cli:demo_command",
    "ingest": "central.cli:ingest_command",
    "central": "central.cli:central_group",
    "export": "central.datasets.commands:export_command",
    "report": "central.datasets.commands:report_command",
    "review-import": "central.datasets.commands:review_import_command",
    "booth": "agent.booth.commands:booth_command",
    "review": "agent.booth.commands:review_command",
    "rerecord": "agent.booth.commands:rerecord_command",
    "coverage": "agent.booth.commands:coverage_command",
}


class LazyGroup(click.Group):
    """A click group that imports a subsystem's command only when it is invoked or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBSYSTEM_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBSYSTEM_COMMANDS.get(cmd_name)
        if target is None or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        import importlib

        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


def _fail(exc: BaseException) -> click.ClickException:
    return UserError(str(exc))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    """fieldcap: capture, screen and safely sync field data for AI datasets."""
    setup_logging(verbose, log_format)


# ---------------------------------------------------------------------------- config


@cli.group()
def config() -> None:
    """Check configuration files."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-secrets", is_flag=True, help="Do not check that secret files exist (e.g. on a build machine).")
def config_validate(file: Path, no_secrets: bool) -> None:
    """Validate FILE (and that its secret files exist); print what is wrong, exit non-zero."""
    from agent.config import check_secrets, load_config

    try:
        cfg = load_config(file)
        if not no_secrets:
            check_secrets(cfg, str(file))
    except FieldcapError as exc:
        raise _fail(exc) from None
    click.echo(f"{file}: OK ({len(cfg.devices)} devices, device id {cfg.agent.device_id!r})")


# ---------------------------------------------------------------------------- local catalog


def _data_dir(config_file: Path | None, data_dir: Path | None) -> tuple[Path, str]:
    from agent.config import load_config

    if data_dir is not None:
        return data_dir, "local"
    if config_file is None:
        raise click.UsageError("give --config FILE or --data-dir DIR")
    try:
        cfg = load_config(config_file)
    except FieldcapError as exc:
        raise _fail(exc) from None
    return cfg.agent.data_dir, cfg.agent.device_id


@cli.command("ls")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Agent config file.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory (instead of --config)."
)
@click.option("--stream", help="Only this stream.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per capture per line.")
def ls_cmd(config_file: Path | None, data_dir: Path | None, stream: str | None, as_json: bool) -> None:
    """What the local catalog holds: record_id, stream, kind, sha256, size, state."""
    from agent.catalog.db import Catalog

    ddir, device = _data_dir(config_file, data_dir)
    path = ddir / "catalog.sqlite"
    if not path.exists():
        raise UserError(f"{path}: no catalog here yet (has the agent run with this data directory?)")
    try:
        with Catalog(path, device) as cat:
            rows = cat.captures(stream=stream)
    except FieldcapError as exc:
        raise _fail(exc) from None
    if as_json:
        for r in rows:
            click.echo(
                json.dumps(
                    {
                        "record_id": r.record_id,
                        "stream": r.stream,
                        "kind": r.kind,
                        "sha256": r.sha256,
                        "size": r.size,
                        "state": r.state,
                        "created_utc": r.created_utc,
                    }
                )
            )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("record_id", "stream", "kind", "sha256", "size", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.record_id, r.stream, r.kind, (r.sha256 or "-")[:16], str(r.size or "-"), r.state)
    Console().print(table)


@cli.command("export-mcap")
@click.argument("session")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Agent config file.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory (instead of --config)."
)
def export_mcap_cmd(session: str, out: Path, config_file: Path | None, data_dir: Path | None) -> None:
    """Export SESSION (an id, a unique prefix, or 'latest') to OUT as MCAP, one channel per stream."""
    from agent.catalog.db import Catalog
    from agent.sessions.mcap import export_session

    ddir, device = _data_dir(config_file, data_dir)
    path = ddir / "catalog.sqlite"
    if not path.exists():
        raise UserError(f"{path}: no catalog here yet (has the agent run with this data directory?)")
    try:
        with Catalog(path, device) as cat:
            result = export_session(cat, session, out)
    except FieldcapError as exc:
        raise _fail(exc) from None
    total = sum(result["messages"].values())
    click.echo(f"{out}: session {result['session_id']}, {total} messages on {len(result['channels'])} channels")


# ---------------------------------------------------------------------------- daemon and demo


@cli.command("run")
@click.option(
    "--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Agent config file."
)
def run_cmd(config_file: Path) -> None:
    """Run the agent until SIGTERM: capture, screen, keep and sync; SIGHUP reloads the config.

    Under systemd (Type=notify) it reports READY=1, STATUS= and feeds the watchdog while every
    loop progresses. Logs go to stderr at info level unless -v/-vv asks for more.
    """
    import faulthandler

    from agent.ops.supervisor import Supervisor, load_checked
    from sync.errors import SyncError

    faulthandler.enable(all_threads=True)  # a watchdog SIGABRT prints every thread's stack to the journal
    _tune_malloc()
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)  # a service logs its lifecycle; -v only adds debug
    try:
        supervisor = Supervisor(config_file, load_checked(config_file))
        supervisor.install_signal_handlers()
        code = supervisor.run()
    except (FieldcapError, SyncError) as exc:
        raise _fail(exc) from None
    sys.exit(code)


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 256 * 1024) -> None:
    """Tune glibc's malloc before the daemon starts its threads, so RSS follows live memory.

    By default glibc gives busy threads arenas of their own (up to 8 per core), and the daemon's
    dozen threads then hold tens of MB of freed-but-kept memory; two arenas keep RSS flat over
    months. A fixed mmap threshold sends every block over 256 KiB (frames, audio segments,
    onnxruntime activations) to its own mapping that goes back to the kernel when freed; glibc's
    default raises the threshold after the first large free, after which such blocks come from
    the heap and a DNSMOS run leaves ~60 MB of freed heap resident (measured). ``MALLOC_ARENA_MAX``
    and ``MALLOC_MMAP_THRESHOLD_`` in the environment still win.
    """
    import ctypes
    import ctypes.util
    import os

    name = ctypes.util.find_library("c")
    if name is None:
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from <malloc.h>
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(m_arena_max, arenas)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(m_mmap_threshold, mmap_threshold)


@cli.command("status")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Agent config file.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory (instead of --config)."
)
@click.option("--json", "as_json", is_flag=True, help="The whole snapshot as one JSON object.")
def status_cmd(config_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Health of the agent: streams, QC, outbox backlog, last receipt, disk, clock.

    Reads the status file the running agent rewrites every few seconds (and the catalog when it is
    not running). Exit status: 0 running and healthy, 2 running but degraded, 3 not running.
    """
    from agent.ops.status import problems_of, read_status, render_text

    ddir, device = _data_dir(config_file, data_dir)
    if not ddir.exists():
        raise UserError(f"{ddir}: no such data directory (has the agent run with this configuration?)")
    try:
        snap = read_status(ddir, device_id=device)
    except (OSError, ValueError) as exc:
        raise UserError(f"{ddir}: cannot read the agent's status: {exc}") from None
    if as_json:
        click.echo(json.dumps(snap, default=str, sort_keys=True, indent=2))
    else:
        click.echo(render_text(snap))
    if not snap.get("running"):
        sys.exit(3)
    if problems_of(snap)[0]:
        sys.exit(2)


def _register_subsystems() -> None:
    """Load every lazily registered command (for the README reference and its test)."""
    for name in SUBSYSTEM_COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        if command is not None:
            cli.add_command(command, name)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="fieldcap")
