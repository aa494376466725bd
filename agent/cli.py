"""The ``fieldcap`` command line.

Every user mistake ends in one line saying what is wrong, where, and what to do, and a non-zero
exit status — never a traceback. Subsystems contribute their own command groups (``qc`` and
``models`` from ``models``, ``devices`` from ``drivers``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from agent.errors import FieldcapError

log = logging.getLogger("fieldcap")


def setup_logging(verbose: int, fmt: str = "human") -> None:
    from agent.logs import configure

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
    "export": "sync.dataset.commands:export_command",
    "report": "sync.dataset.commands:report_command",
    "review-import": "sync.dataset.commands:review_import_command",
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
    from agent.catalog import Catalog

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
    from agent.catalog import Catalog
    from agent.mcap_export import export_session

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

    from agent.supervisor import Supervisor, load_checked
    from sync import SyncError

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
    from agent.status import problems_of, read_status, render_text

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


@cli.command("demo")
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(1, 3600), help="How long to capture.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep everything here (default: a new temp dir).",
)
def demo_cmd(seconds: float, workdir: Path | None) -> None:
    """Run the whole path on simulated devices with a throwaway broker, then check it."""
    from agent.demo import run_demo
    from sync import SyncError

    try:
        code = run_demo(seconds, workdir, click.echo)
    except (FieldcapError, SyncError) as exc:
        raise _fail(exc) from None
    except OSError as exc:  # e.g. a --workdir that cannot be created or written
        raise UserError(f"demo: {exc.filename or workdir}: {exc.strerror}") from None
    sys.exit(code)


# ---------------------------------------------------------------------------- central side


@cli.command("ingest")
@click.option("--broker", required=True, help="Broker URL, mqtt://host:port or mqtts://host:port.")
@click.option("--store", "store_url", required=True, help="sqlite:///PATH or postgresql://...")
@click.option(
    "--blobs", "blob_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Blob directory."
)
@click.option(
    "--group",
    default="ingest",
    show_default=True,
    help="Shared-subscription group; ingesters in one group split the load.",
)
@click.option("--client-id", help="Fixed MQTT client id (with --session-expiry: keep the queue across restarts).")
@click.option(
    "--session-expiry",
    type=click.IntRange(0, 4294967295),
    default=0,
    show_default=True,
    help="Seconds the broker keeps this ingester's session; 0 hands its share to the group at once when it dies.",
)
@click.option("--username", help="MQTT username.")
@click.option(
    "--password-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding the MQTT password."
)
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate for mqtts://.")
@click.option("--cert-file", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Client key.")
def ingest_cmd(
    broker: str,
    store_url: str,
    blob_dir: Path,
    group: str,
    client_id: str | None,
    session_expiry: int,
    username: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    """Receive, verify, deduplicate and store what devices publish, and answer with receipts."""
    from agent.config import resolve_secret
    from sync import BlobTree, Credentials, Ingester, SyncError, open_store, tls_context

    try:
        password = resolve_secret("--password-file", "", str(password_file)) if password_file else None
        tls = (
            tls_context(str(ca_file), str(cert_file) if cert_file else None, str(key_file) if key_file else None)
            if ca_file
            else None
        )
        store = open_store(store_url)
        ingester = Ingester(
            broker=broker,
            store=store,
            blobs=BlobTree(blob_dir),
            group=group,
            client_id=client_id,
            session_expiry_s=session_expiry,
            credentials=Credentials(username, password, tls),
        )
    except (FieldcapError, SyncError, ValueError, OSError) as exc:
        raise _fail(exc) from None

    def handler(_signum: int, _frame: FrameType | None) -> None:
        ingester.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        ingester.run()
    finally:
        store.close()


@cli.group()
def central() -> None:
    """Inspect the central store."""


@central.command("ls")
@click.option("--store", "store_url", required=True, help="sqlite:///PATH or postgresql://...")
@click.option("--device", help="Only this device.")
@click.option("--kind", help="Only this record kind (capture, verdict, event, ...).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record per line.")
@click.option("--dead-letters", is_flag=True, help="List the rejected messages and why, newest first (up to 1000).")
def central_ls(store_url: str, device: str | None, kind: str | None, as_json: bool, dead_letters: bool) -> None:
    """What the central store holds: device, record_id, kind, sha256, size, received time."""
    from sync import SyncError, open_store

    try:
        store = open_store(store_url)
    except (SyncError, OSError) as exc:
        raise _fail(exc) from None
    try:
        rows = store.dead_letters(1000) if dead_letters else store.list_records(device=device, kind=kind)
    finally:
        store.close()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ("received_utc", "device", "topic", "reason") if dead_letters else ("device", "record_id", "kind", "sha256")
    table = Table()
    for col in (*cols, "size", "received_utc")[: 4 if dead_letters else 6]:
        table.add_column(col)
    for r in rows:
        if dead_letters:
            table.add_row(r["received_utc"], r["device"] or "-", r["topic"][:60], r["reason"])
        else:
            table.add_row(
                r["device"],
                r["record_id"],
                r["kind"],
                (r["sha256"] or "-")[:16],
                str(r["size"] or "-"),
                r["received_utc"],
            )
    Console().print(table)


def _register_subsystems() -> None:
    """Load every lazily registered command (for the README reference and its test)."""
    for name in SUBSYSTEM_COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        if command is not None:
            cli.add_command(command, name)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="fieldcap")
