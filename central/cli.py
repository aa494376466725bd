"""The central side's commands: ``fieldcap ingest``, ``fieldcap central ...`` and ``fieldcap demo``.

Registered lazily by ``agent.cli``, so a device's ``fieldcap`` never imports the central side.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from agent.cli.common import UserError, json_option, user_errors
from central.access_cli import register as register_access
from central.plans.cli import participants_command, plan_group
from central.store_url import store_url_option

if TYPE_CHECKING:
    from central.provision import Admin
    from central.status import Status
    from sync.signing import ReceiptSigner


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
@store_url_option
@click.option(
    "--blobs",
    "blob_spec",
    required=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Blob directory, or s3://BUCKET/PREFIX for an S3-compatible object store (AWS_* environment).",
)
@click.option(
    "--staging",
    "staging_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local directory for uploads in progress (default: DIR/staging for a blob directory; required with s3://).",
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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (0: any free port; default: no endpoint).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address of the metrics endpoint; keep it on localhost and let a local collector scrape it.",
)
@click.option(
    "--receipt-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key that signs receipts (default: $CREDENTIALS_DIRECTORY/receipt-key when present; "
    "make one with `fieldcap central keygen`).",
)
@click.option(
    "--command-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 86400),
    help="Seconds between publishing again a central command (assignment, re-record request, purge) its device "
    "has not acknowledged yet; a new command goes out within 2 s.",
)
def ingest_command(
    broker: str,
    store_url: str,
    blob_spec: str,
    staging_dir: Path | None,
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
    metrics_port: int | None,
    metrics_address: str,
    receipt_key: Path | None,
    command_interval: float,
) -> None:
    """Receive, verify, deduplicate and store what devices publish, and answer with receipts."""
    import os

    from agent.config import resolve_secret
    from central.blobs import open_blobs
    from central.ingester import Ingester
    from central.limits import IntakeLimits
    from central.metrics import IngestMetricsServer
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
        signer = _receipt_signer(receipt_key)
        if blob_spec.startswith("s3://") and staging_dir is None:
            raise UserError(f"--blobs {blob_spec} needs --staging DIR: a local directory for uploads in progress")
        store = open_store(store_url)
        blobs = open_blobs(blob_spec)
        ingester = Ingester(
            broker=broker,
            store=store,
            blobs=blobs,
            staging_dir=staging_dir,
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
            signer=signer,
            command_every_s=command_interval,
        )
        metrics = (
            IngestMetricsServer(metrics_address, metrics_port, lambda: ingester.stats)
            if metrics_port is not None
            else None
        )

    def handler(_signum: int, _frame: FrameType | None) -> None:
        ingester.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        ingester.run()
    finally:
        if metrics is not None:
            metrics.close()
        store.close()
        blobs.close()


@click.command("rerecord")
@store_url_option
@click.option("--take", "takes", multiple=True, help="A take to record again (its take_id); repeatable.")
@click.option("--capture", "captures", multiple=True, help="A capture whose take to record again; repeatable.")
@click.option("--reason", help="Why, as the booth operator will read it.")
@click.option("--list", "as_list", is_flag=True, help="List the requests and whether a retake has closed them.")
@json_option("One JSON object per requested take per line (with --list).")
def central_rerecord(
    store_url: str, takes: tuple[str, ...], captures: tuple[str, ...], reason: str | None, as_list: bool, as_json: bool
) -> None:
    """Ask the booth that recorded a take to record it again.

    The request reaches the device through the ingester (published until the device acknowledges
    it); the booth operator sees it at the booth's start and in `fieldcap rerecord --pending`. It is
    closed when the retake's record arrives here.
    """
    from central.commands import operator
    from central.rerecord import RerecordError, request, states
    from central.store import open_store
    from sync.errors import SyncError

    if not as_list and not (takes or captures):
        raise click.UsageError("give --take TAKE_ID or --capture ID (repeatable), or --list")
    if not as_list and not (reason and reason.strip()):
        raise click.UsageError("give --reason TEXT: the booth operator reads it")
    with user_errors(SyncError, OSError, RerecordError):
        store = open_store(store_url, create=False)
        try:
            if not as_list:
                for cmd in request(store, takes, captures, (reason or "").strip(), operator()):
                    assert cmd.rerecord is not None
                    click.echo(f"queued {cmd.command_id} for {cmd.device}: {len(cmd.rerecord.items)} take(s)")
                return
            rows = states(store)
        finally:
            store.close()
    for r in rows:
        row = {
            "request": r.command.command_id,
            "device": r.device,
            "take_id": r.item.take_id,
            "session_id": r.item.session_id,
            "item_id": r.item.item_id,
            "state": r.state,
            "retake": r.retake,
            "reason": r.command.rerecord.reason if r.command.rerecord else "",
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{row['state']:9}  {shown(r.device)}  {shown(r.item.session_id)}  {shown(r.item.item_id)}"
                f"  take {shown(r.item.take_id)}  {shown(row['reason'])}"
            )


@click.command("withdraw")
@click.argument("pseudonym")
@store_url_option
@click.option(
    "--blobs",
    "blob_spec",
    required=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Blob directory, or s3://BUCKET/PREFIX for an S3-compatible object store (AWS_* environment).",
)
@json_option("Print what was deleted as one JSON object.")
def central_withdraw(pseudonym: str, store_url: str, blob_spec: str, as_json: bool) -> None:
    """Delete everything of the participant with subject PSEUDONYM (consent withdrawn).

    Their records and the blobs only they use are deleted here, annotation sets of their captures
    are marked withdrawn, the devices that recorded them are told to purge their local copies
    (a signed command; devices without the receipt public key refuse it and say so), and an audit
    row records who did it, when, and how much was deleted.
    """
    from central.access_cli import explained
    from central.blobs import open_blobs
    from central.commands import operator
    from central.store import open_store
    from central.withdraw import WithdrawError, withdraw
    from sync.errors import SyncError

    with user_errors(SyncError, OSError, WithdrawError), explained():
        store = open_store(store_url, create=False)
        try:
            blobs = open_blobs(blob_spec)
            try:
                result = withdraw(store, blobs, pseudonym.strip().lower(), operator())
            finally:
                blobs.close()
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(result.summary(), sort_keys=True))
        return
    records = ", ".join(f"{n} {k}" for k, n in sorted(result.records.items()))
    click.echo(f"deleted {records} and {result.blobs} blob(s); {result.annotation_sets} annotation set(s) marked")
    for device, cmd in zip(result.devices, result.commands, strict=True):
        click.echo(f"purge {cmd} queued for {device} (applied when it next connects)")


def shown(value: object) -> str:
    """Text from a device made safe for a terminal: control characters (ESC, BEL, C1, DEL...) escaped."""
    text = str(value)
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def _receipt_signer(path: Path | None) -> ReceiptSigner | None:
    """The receipt signing key from ``--receipt-key`` or the systemd credential; None (and a warning) if neither."""
    import logging
    import os

    from sync.signing import PRIVATE_NAME, ReceiptSigner

    if path is None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / PRIVATE_NAME).is_file():
            path = Path(creds) / PRIVATE_NAME
    if path is None:
        logging.getLogger("fieldcap.ingest").warning(
            "receipts are NOT signed (no --receipt-key and no $CREDENTIALS_DIRECTORY/%s): devices that hold a "
            "receipt public key refuse them, and the others cannot tell them from forgeries",
            PRIVATE_NAME,
        )
        return None
    signer = ReceiptSigner.load(path)
    logging.getLogger("fieldcap.ingest").info("signing receipts with key %s", signer.key_id)
    return signer


@click.group("central")
def central_group() -> None:
    """The central store, receipt keys and broker provisioning."""


@central_group.command("keygen")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for receipt-key (private, mode 0600) and receipt-key.pub.",
)
def central_keygen(out_dir: Path) -> None:
    """Make the Ed25519 key pair that signs receipts.

    receipt-key stays with the ingesters (`fieldcap ingest --receipt-key`, or the systemd credential
    receipt-key); receipt-key.pub goes to every device (`[sync] receipt_public_key`).
    """
    from sync.signing import generate

    with user_errors(OSError):
        private, public, kid = generate(out_dir)
    click.echo(f"{private}: the ingesters' signing key (keep it secret; fieldcap ingest --receipt-key)")
    click.echo(f"{public}: the devices' receipt_public_key (key id {kid})")


LS_LIMIT = 100


@central_group.command("ls")
@store_url_option
@click.option("--device", help="Only this device.")
@click.option("--kind", help="Only this record kind (capture, verdict, event, ...).")
@json_option("One JSON object per record per line.")
@click.option("--dead-letters", is_flag=True, help="List the rejected messages and why, newest first (up to 1000).")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=LS_LIMIT,
    show_default=True,
    help="Only the first N records (in the order they arrived); 0: all of them.",
)
def central_ls(
    store_url: str, device: str | None, kind: str | None, as_json: bool, dead_letters: bool, limit: int
) -> None:
    """What the central store holds: device, record_id, kind, sha256, size, received time.

    The first --limit records only (a store holds millions); the table says how many more there are.
    """
    from central.store import open_store
    from sync.errors import SyncError

    with user_errors(SyncError, OSError):
        store = open_store(store_url, create=False)
    more = 0
    try:
        if dead_letters:
            rows = store.dead_letters(1000)
        else:
            rows = store.list_records(device=device, kind=kind, limit=limit + 1 if limit else None)
            if limit and len(rows) > limit:
                rows = rows[:limit]
                more = store.count_records(device=device, kind=kind) - limit
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
    if more > 0:
        click.echo(f"... and {more:,} more record(s): --limit N shows more, --limit 0 all of them")


@central_group.command("status")
@store_url_option
@click.option(
    "--blobs",
    "blob_spec",
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Also check the blob store: a directory must take a file, an S3 bucket must answer a HEAD.",
)
@click.option(
    "--stale",
    type=click.FloatRange(1, 86400),
    default=300.0,
    show_default=True,
    help="Seconds after which an ingester without a heartbeat counts as gone.",
)
@json_option("One JSON object: health, problems, store, blobs, ingesters, devices, dead_letters.")
def central_status(store_url: str, blob_spec: str | None, stale: float, as_json: bool) -> None:
    """Health of the central side: ingesters, devices, dead letters, the store and the blob store.

    Exit status 0 healthy, 4 degraded (no live ingester), 1 error (store or blob store unusable).
    A device's own backlog (what it has not sent yet) is in its metrics; here are the uploads it
    has started and the commands it has not acknowledged.
    """
    from central.errors import StoreError
    from central.pgstore import redact
    from central.status import Status, blob_status, now_utc, store_status
    from central.store import open_store

    status = Status()
    try:
        store = open_store(store_url, create=False)
    except (StoreError, OSError) as exc:
        status.store = {"url": redact(store_url), "reachable": False}
        status.fail(str(exc))
    else:
        try:
            store_status(store, store_url, status, now_utc(), stale)
        except Exception as exc:  # a store that opens but cannot answer: report it, do not crash
            status.fail(f"the central store cannot be read: {exc}")
        finally:
            store.close()
    if blob_spec:
        blob_status(blob_spec, status)
    if as_json:
        click.echo(json.dumps(status.as_dict(), sort_keys=True))
    else:
        _print_status(status)
    sys.exit({"healthy": 0, "degraded": 4, "error": 1}[status.health])


def _print_status(status: Status) -> None:
    """The human form of ``central status``: one line per ingester and device, problems last."""
    st = status.store
    click.echo(f"health: {status.health}")
    if st.get("reachable"):
        click.echo(f"store: {st['url']} schema {st['schema']}, {st['bytes'] or 0:,} bytes")
    if status.blobs:
        click.echo(f"blobs: {status.blobs['where']} {'reachable' if status.blobs['reachable'] else 'UNREACHABLE'}")
    for ing in status.ingesters:
        click.echo(
            f"ingester {shown(ing['client_id'])} on {shown(ing['host'])} pid {ing['pid']} v{ing['version']}:"
            f" {ing['state']}, seen {ing['seen_s_ago']:g} s ago, {ing['counters'].get('messages', 0)} messages"
        )
    for d in status.devices:
        click.echo(
            f"device {shown(d['device'])}: last record {d['last_seen_utc'] or '-'}, {d['open_uploads']} open"
            f" upload(s) ({d['staged_bytes']:,} bytes), {d['open_commands']} open command(s)"
        )
    for dl in status.dead_letters:
        click.echo(f"dead letters (last day) {shown(dl['device'] or '-')}: {dl['count']} × {shown(dl['reason'])}")
    for problem in status.problems:
        click.echo(f"problem: {problem}")


def _password(source: Path | None, what: str, *, confirm: bool) -> str:
    """A password from a file, from stdin (``-``) or from a prompt: never from the command line."""
    if source is None:
        value = str(click.prompt(f"{what} password", hide_input=True, confirmation_prompt=confirm))
    elif str(source) == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            value = source.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{source}: cannot read the {what} password: {exc}") from None
    if not value:
        raise UserError(f"the {what} password is empty; give one (file, '-' for stdin, or the prompt)")
    return value


def _admin_options(f: Callable[..., None]) -> Callable[..., None]:
    for opt in reversed(
        (
            click.option("--broker", required=True, help="Broker URL, mqtts://host:port (or mqtt:// on localhost)."),
            click.option(
                "--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate for mqtts://."
            ),
            click.option(
                "--admin-user", required=True, help="The dynamic-security admin client (mosquitto_ctrl dynsec init)."
            ),
            click.option(
                "--admin-password-file",
                type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                help="File holding the admin password ('-': stdin); default: a prompt.",
            ),
            click.option(
                "--password-file",
                type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                help="File holding the new client's password ('-': stdin); default: a prompt.",
            ),
            click.option(
                "--replace", is_flag=True, help="Delete an existing client of that name first (a new password)."
            ),
        )
    ):
        f = opt(f)
    return f


def _admin(broker: str, ca_file: Path | None, admin_user: str, admin_password: str) -> Admin:
    from central.provision import Admin
    from sync.mqtt import Credentials, tls_context

    tls = tls_context(str(ca_file), None, None) if ca_file else None
    return Admin.connect(broker, admin_user, admin_password, Credentials(tls=tls))


def _check_sources(admin_password_file: Path | None, password_file: Path | None) -> None:
    if str(admin_password_file) == "-" and str(password_file) == "-":
        raise click.UsageError("only one of --admin-password-file and --password-file can be '-' (stdin)")


@central_group.command("provision-device")
@click.argument("device_id")
@_admin_options
def central_provision_device(
    device_id: str,
    broker: str,
    ca_file: Path | None,
    admin_user: str,
    admin_password_file: Path | None,
    password_file: Path | None,
    replace: bool,
) -> None:
    """Create DEVICE_ID's client and role on a Mosquitto with the dynamic-security plugin.

    The device may then publish only under fieldcap/v1/DEVICE_ID/up/# and its status topic, and
    subscribe only to fieldcap/v1/DEVICE_ID/down/# (examples/broker/README.md).
    """
    from central.provision import provision_device
    from sync.errors import SyncError
    from sync.topics import TopicError

    _check_sources(admin_password_file, password_file)
    password = _password(password_file, f"device {device_id}", confirm=True)
    admin_password = _password(admin_password_file, "admin", confirm=False)
    with user_errors(SyncError, TopicError):
        admin = _admin(broker, ca_file, admin_user, admin_password)
        try:
            provision_device(admin, device_id, password, replace=replace)
        finally:
            admin.close()
    click.echo(f"provisioned device {device_id!r}: username {device_id!r}, role fieldcap-device-{device_id}")


@central_group.command("provision-ingester")
@click.argument("name")
@click.option("--group", default="ingest", show_default=True, help="The ingesters' shared-subscription group.")
@_admin_options
def central_provision_ingester(
    name: str,
    group: str,
    broker: str,
    ca_file: Path | None,
    admin_user: str,
    admin_password_file: Path | None,
    password_file: Path | None,
    replace: bool,
) -> None:
    """Create an ingester client NAME (one per ingester process: the username is its client id)."""
    from central.provision import provision_ingester
    from sync.errors import SyncError
    from sync.topics import TopicError

    _check_sources(admin_password_file, password_file)
    password = _password(password_file, f"ingester {name}", confirm=True)
    admin_password = _password(admin_password_file, "admin", confirm=False)
    with user_errors(SyncError, TopicError):
        admin = _admin(broker, ca_file, admin_user, admin_password)
        try:
            provision_ingester(admin, name, password, group=group, replace=replace)
        finally:
            admin.close()
    click.echo(f"provisioned ingester {name!r} in group {group!r}: role fieldcap-ingest-{group}")


central_group.add_command(central_rerecord)
central_group.add_command(central_withdraw)
central_group.add_command(plan_group)
central_group.add_command(participants_command)
register_access(central_group.add_command)
