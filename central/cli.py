"""The central side's commands: ``fieldcap ingest``, ``fieldcap central ...`` and ``fieldcap demo``.

Registered lazily by ``agent.cli``, so a device's ``fieldcap`` never imports the central side.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from agent.cli.common import UserError, json_option, user_errors


@click.command("demo")
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(1, 3600), help="How long to capture.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep everything here (default: a new temp dir).",
)
def demo_command(seconds: float, workdir: Path | None) -> None:
    """Run the whole path on simulated devices with a throwaway broker, then check it."""
    from central.demo import run_demo
    from sync.errors import SyncError

    try:
        with user_errors(SyncError):
            code = run_demo(seconds, workdir, click.echo)
    except OSError as exc:  # e.g. a --workdir that cannot be created or written
        raise UserError(f"demo: {exc.filename or workdir}: {exc.strerror}") from None
    sys.exit(code)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    """A byte count: ``4294967296``, ``512MiB``, ``4GiB`` (also KB/MB/GB as powers of 1000)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        digits = text.rstrip("KMGIB")
        unit = text[len(digits) :]
        try:
            n = int(digits.strip())
        except ValueError:
            n = -1
        if n < 1 or unit not in _UNITS:
            self.fail(f"{value!r} is not a size; write e.g. 4GiB, 512MiB or a number of bytes", param, ctx)
        return n * _UNITS[unit]


SIZE = SizeParam()


@click.command("ingest")
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
@click.option(
    "--max-blob-size",
    type=SIZE,
    default="4GiB",
    show_default=True,
    help="Largest media file a device may announce (bytes, or with KiB/MiB/GiB); larger ones are refused.",
)
@click.option(
    "--device-staging-quota",
    type=SIZE,
    default="8GiB",
    show_default=True,
    help="Bytes one device's unfinished uploads may announce in all.",
)
@click.option(
    "--device-open-uploads",
    type=click.IntRange(1, 100000),
    default=128,
    show_default=True,
    help="Unfinished uploads one device may have at once.",
)
@click.option(
    "--upload-max-age",
    type=click.FloatRange(60, 365 * 86400),
    default=86400.0,
    show_default=True,
    help="Seconds after which an untouched unfinished upload is removed, bytes and all.",
)
@click.option(
    "--dead-letter-max-age",
    type=click.FloatRange(60, 3650 * 86400),
    default=30 * 86400.0,
    show_default=True,
    help="Seconds dead letters are kept.",
)
@click.option(
    "--dead-letters-per-device",
    type=click.IntRange(1, 10_000_000),
    default=1000,
    show_default=True,
    help="Newest dead letters kept per device; dead letters beyond 2/s (burst 200) per device are only counted.",
)
def ingest_command(
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
    max_blob_size: int,
    device_staging_quota: int,
    device_open_uploads: int,
    upload_max_age: float,
    dead_letter_max_age: float,
    dead_letters_per_device: int,
) -> None:
    """Receive, verify, deduplicate and store what devices publish, and answer with receipts."""
    import os

    from agent.config import resolve_secret
    from central.blobs import BlobTree
    from central.ingester import Ingester
    from central.limits import IntakeLimits
    from central.store import open_store
    from sync.errors import SyncError
    from sync.mqtt import Credentials, tls_context

    os.umask(0o027)  # the store, blobs and staging are for this service (and its group) only
    with user_errors(SyncError, ValueError, OSError):
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
            limits=IntakeLimits(
                max_blob_bytes=max_blob_size,
                device_staged_bytes=device_staging_quota,
                device_open_uploads=device_open_uploads,
                upload_max_age_s=upload_max_age,
                dead_letter_max_age_s=dead_letter_max_age,
                dead_letters_per_device=dead_letters_per_device,
            ),
        )

    def handler(_signum: int, _frame: FrameType | None) -> None:
        ingester.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        ingester.run()
    finally:
        store.close()


def shown(value: object) -> str:
    """Text from a device made safe for a terminal: control characters (ESC, BEL, C1, DEL...) escaped."""
    text = str(value)
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


@click.group("central")
def central_group() -> None:
    """Inspect the central store."""


@central_group.command("ls")
@click.option("--store", "store_url", required=True, help="sqlite:///PATH or postgresql://...")
@click.option("--device", help="Only this device.")
@click.option("--kind", help="Only this record kind (capture, verdict, event, ...).")
@json_option("One JSON object per record per line.")
@click.option("--dead-letters", is_flag=True, help="List the rejected messages and why, newest first (up to 1000).")
def central_ls(store_url: str, device: str | None, kind: str | None, as_json: bool, dead_letters: bool) -> None:
    """What the central store holds: device, record_id, kind, sha256, size, received time."""
    from central.store import open_store
    from sync.errors import SyncError

    with user_errors(SyncError, OSError):
        store = open_store(store_url)
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
    from rich.text import Text

    cols = ("received_utc", "device", "topic", "reason") if dead_letters else ("device", "record_id", "kind", "sha256")
    table = Table()
    for col in (*cols, "size", "received_utc")[: 4 if dead_letters else 6]:
        table.add_column(col)
    for r in rows:
        if dead_letters:
            # Device-chosen text: shown literally, never as markup, links or terminal escapes.
            table.add_row(
                *(Text(shown(v)) for v in (r["received_utc"], r["device"] or "-", r["topic"][:60], r["reason"]))
            )
        else:
            table.add_row(
                *(
                    Text(shown(v))
                    for v in (
                        r["device"],
                        r["record_id"],
                        r["kind"],
                        (r["sha256"] or "-")[:16],
                        str(r["size"] or "-"),
                        r["received_utc"],
                    )
                )
            )
    Console().print(table)
