"""The device's own commands: ``config validate``, ``ls``, ``export-mcap``, ``run``, ``status``
and ``completion``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from agent.cli.common import (
    EXIT_DEGRADED,
    EXIT_NOT_RUNNING,
    UserError,
    config_option,
    data_dir_option,
    echo_json,
    json_option,
    user_errors,
)

# ---------------------------------------------------------------------------- config


@click.group("config")
def config_group() -> None:
    """Check configuration files."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), envvar="FIELDCAP_CONFIG")
@click.option("--no-secrets", is_flag=True, help="Do not check that secret files exist (e.g. on a build machine).")
@json_option("One JSON object: ok, and the problems (file, line, key, message) or a summary.")
def config_validate(file: Path, no_secrets: bool, as_json: bool) -> None:
    """Validate FILE (default: $FIELDCAP_CONFIG) and that its secret files exist.

    Each problem is printed as FILE:LINE: key: what is wrong (with a "did you mean" for a
    misspelt key or device type); exit status 1 when there is one.
    """
    from agent.config import check_secrets, config_warnings, load_config
    from agent.errors import ConfigError

    try:
        cfg = load_config(file)
        if not no_secrets:
            check_secrets(cfg, str(file))
    except ConfigError as exc:
        if as_json:
            problems = exc.problems or [{"file": exc.file, "line": exc.line, "key": exc.key, "message": exc.message}]
            echo_json({"ok": False, "file": str(file), "problems": problems})
            sys.exit(1)
        raise UserError(str(exc)) from None
    warnings = config_warnings(cfg)
    if as_json:
        echo_json(
            {
                "ok": True,
                "file": str(file),
                "devices": len(cfg.devices),
                "device_id": cfg.agent.device_id,
                "warnings": warnings,
            }
        )
        return
    for warning in warnings:
        click.echo(f"{file}: warning: {warning}", err=True)
    click.echo(f"{file}: OK ({len(cfg.devices)} devices, device id {cfg.agent.device_id!r})")


# ---------------------------------------------------------------------------- local catalog


def _data_dir(config_file: Path | None, data_dir: Path | None, *, quick: bool = False) -> tuple[Path, str]:
    """The data directory and device id of ``--data-dir`` or of the config file.

    ``quick``: read only the ``[agent]`` table when it is plainly well formed, without validating
    the whole file (which loads the drivers' and QC settings): ``fieldcap status`` stays fast.
    """
    if data_dir is not None:
        return data_dir, "local"
    if config_file is None:
        raise click.UsageError("give --config FILE or --data-dir DIR (or set $FIELDCAP_CONFIG)")
    if quick:
        found = _agent_table(config_file)
        if found is not None:
            return found
    from agent.config import load_config

    with user_errors():
        cfg = load_config(config_file)
    return cfg.agent.data_dir, cfg.agent.device_id


def _agent_table(config_file: Path) -> tuple[Path, str] | None:
    import tomllib

    try:
        agent = tomllib.loads(config_file.read_text(encoding="utf-8")).get("agent")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # the full load says what is wrong
    if not isinstance(agent, dict):
        return None
    device, ddir = agent.get("device_id"), agent.get("data_dir", "/var/lib/fieldcap")
    if not (isinstance(device, str) and device and isinstance(ddir, str) and ddir):
        return None
    return Path(ddir), device


def _catalog_path(ddir: Path) -> Path:
    path = ddir / "catalog.sqlite"
    if not path.exists():
        raise UserError(f"{path}: no catalog here yet (has the agent run with this data directory?)")
    return path


@click.command("ls")
@config_option()
@data_dir_option
@click.option("--stream", help="Only this stream.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N captures (oldest first).")
@json_option("One JSON object per capture per line.")
def ls_cmd(
    config_file: Path | None, data_dir: Path | None, stream: str | None, limit: int | None, as_json: bool
) -> None:
    """What the local catalog holds: record_id, stream, kind, sha256, size, state."""
    from agent.catalog.db import Catalog

    ddir, device = _data_dir(config_file, data_dir)
    path = _catalog_path(ddir)
    with user_errors(), Catalog(path, device) as cat:
        rows = cat.captures(stream=stream, limit=limit)
    if as_json:
        for r in rows:
            echo_json(
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
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("record_id", "stream", "kind", "sha256", "size", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.record_id, r.stream, r.kind, (r.sha256 or "-")[:16], str(r.size or "-"), r.state)
    Console().print(table)


@click.command("export-mcap")
@click.argument("session")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@config_option()
@data_dir_option
@json_option("One JSON object: the session, its channels and message counts.")
def export_mcap_cmd(session: str, out: Path, config_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Export SESSION (an id, a unique prefix, or 'latest') to OUT as MCAP, one channel per stream."""
    from agent.catalog.db import Catalog
    from agent.sessions.mcap import export_session

    ddir, device = _data_dir(config_file, data_dir)
    path = _catalog_path(ddir)
    with user_errors(), Catalog(path, device) as cat:
        result = export_session(cat, session, out)
    if as_json:
        echo_json({"file": str(out), **result})
        return
    total = sum(result["messages"].values())
    click.echo(f"{out}: session {result['session_id']}, {total} messages on {len(result['channels'])} channels")


# ---------------------------------------------------------------------------- daemon and status


@click.command("run")
@config_option(required=True)
def run_cmd(config_file: Path) -> None:
    """Run the agent until SIGTERM: capture, screen, keep and sync; SIGHUP reloads the config.

    Under systemd (Type=notify) it reports READY=1, STATUS= and feeds the watchdog while every
    loop progresses. Logs go to stderr at info level unless -v/-vv asks for more.
    """
    import faulthandler

    from agent.ops.supervisor import Supervisor, load_checked

    faulthandler.enable(all_threads=True)  # a watchdog SIGABRT prints every thread's stack to the journal
    _tune_malloc()
    os.umask(0o027)  # catalog, media and status hold participants' data: no world access (as UMask= in the unit)
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)  # a service logs its lifecycle; -v only adds debug
    with user_errors():
        supervisor = Supervisor(config_file, load_checked(config_file))
        supervisor.install_signal_handlers()
        code = supervisor.run()
    sys.exit(code)


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 256 * 1024) -> None:
    """Tune glibc's malloc and the kernel's huge pages before the daemon starts its threads, so
    RSS follows live memory.

    By default glibc gives busy threads arenas of their own (up to 8 per core), and the daemon's
    dozen threads then hold tens of MB of freed-but-kept memory; two arenas keep RSS flat over
    months. A fixed mmap threshold sends every block over 256 KiB (frames, audio segments,
    onnxruntime activations) to its own mapping that goes back to the kernel when freed; glibc's
    default raises the threshold after the first large free, after which such blocks come from
    the heap and a DNSMOS run leaves ~60 MB of freed heap resident (measured). ``MALLOC_ARENA_MAX``
    and ``MALLOC_MMAP_THRESHOLD_`` in the environment still win. Where the kernel backs every
    large mapping with transparent huge pages (``enabled = always``), each partly used 2 MB page
    counts in full: the daemon opts out (``PR_SET_THP_DISABLE``; with it the soak peaked 7 MB
    lower on such a kernel).
    """
    import ctypes
    import ctypes.util
    import os

    name = ctypes.util.find_library("c")
    if name is None:
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from <malloc.h>
    pr_set_thp_disable = 41  # from <linux/prctl.h>
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(m_arena_max, arenas)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(m_mmap_threshold, mmap_threshold)
        libc.prctl(pr_set_thp_disable, 1, 0, 0, 0)  # fails harmlessly (EINVAL) on kernels before 3.15


@click.command("status")
@config_option()
@data_dir_option
@json_option("The whole snapshot as one JSON object.")
def status_cmd(config_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Health of the agent: streams, QC, outbox backlog, last receipt, disk, clock.

    Reads the status file the running agent rewrites every few seconds (and the catalog when it is
    not running). Exit status: 0 running and healthy, 4 running but degraded, 3 not running.
    """
    from agent.ops.status import problems_of, read_status, render_text

    ddir, device = _data_dir(config_file, data_dir, quick=True)
    if not ddir.exists():
        raise UserError(f"{ddir}: no such data directory (has the agent run with this configuration?)")
    try:
        snap = read_status(ddir, device_id=device)
    except (OSError, ValueError) as exc:
        raise UserError(f"{ddir}: cannot read the agent's status: {exc}") from None
    if as_json:
        echo_json(snap, indent=2)
    else:
        click.echo(render_text(snap))
    if not snap.get("running"):
        sys.exit(EXIT_NOT_RUNNING)
    if problems_of(snap)[0]:
        sys.exit(EXIT_DEGRADED)


# ---------------------------------------------------------------------------- completion

_COMPLETION_HELP = {
    "bash": 'eval "$(fieldcap completion bash)"  # in ~/.bashrc',
    "zsh": 'eval "$(fieldcap completion zsh)"  # in ~/.zshrc',
    "fish": "fieldcap completion fish > ~/.config/fish/completions/fieldcap.fish",
}


@click.command("completion")
@click.argument("shell", type=click.Choice(sorted(_COMPLETION_HELP)))
def completion_command(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(fieldcap completion bash)"        (in ~/.bashrc)
    zsh:   eval "$(fieldcap completion zsh)"         (in ~/.zshrc)
    fish:  fieldcap completion fish > ~/.config/fish/completions/fieldcap.fish
    """
    from click.shell_completion import get_completion_class

    from agent.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "fieldcap", "_FIELDCAP_COMPLETE").source())
