"""``fieldcap central grant ...`` (roles, projects, devices) and ``fieldcap central audit``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from agent.cli.common import UserError, echo_json, json_option
from central.access import KINDS
from central.store import CentralStore
from central.store_url import store_url_option


@contextmanager
def explained() -> Iterator[None]:
    """PostgreSQL's 'permission denied' as one line that says what to do, instead of a traceback."""
    from central.access import denied

    try:
        yield
    except Exception as exc:
        if denied(exc):
            raise UserError(
                f"{str(exc).strip()}: this database role may not do that; ask the store's owner for the right"
                " kind of role (fieldcap central grant, docs/access.md)"
            ) from None
        raise


@contextmanager
def opened(store_url: str) -> Iterator[CentralStore]:
    """The store, closed afterwards; a user's mistake or a missing privilege becomes one line, exit 1."""
    from central.store import open_store
    from sync.errors import SyncError

    try:
        store = open_store(store_url, create=False)
    except SyncError as exc:
        raise UserError(str(exc)) from None
    try:
        with explained():
            yield store
    except SyncError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def _done(result: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        echo_json(result)
    else:
        click.echo(text)


@click.group("grant")
def grant_group() -> None:
    """Roles and per-project access on a PostgreSQL store (run as its owner); see docs/access.md."""


@grant_group.command("role")
@click.argument("role")
@store_url_option
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    required=True,
    type=click.Choice(KINDS),
    help="ingester: writes records; curator: review-import, withdraw, plan, rerecord; exporter: export and"
    " report (only its projects' devices); auditor: reads the audit log (repeatable).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the role's password ('-': stdin); default: a prompt for a new role, none to keep it.",
)
@click.option("--project", "projects", multiple=True, help="Also grant this project (repeatable).")
@json_option("One JSON object: what was granted.")
def grant_role_command(
    role: str,
    store_url: str,
    kinds: tuple[Any, ...],
    password_file: Path | None,
    projects: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create login role ROLE (or set its password) and grant it a kind, and projects."""
    from central.access import check_login, grant_projects, grant_role, role_exists
    from central.cli import _password
    from central.commands import operator

    who = operator()
    with opened(store_url) as store:
        check_login(role)  # before asking for a password
        password = None
        if password_file is not None or not role_exists(store, role):
            password = _password(password_file, f"role {role}'s", confirm=True)
        result = grant_role(store, role, kinds, password, who)
        if projects:
            result["projects"] = grant_projects(store, role, projects, False, who)["projects"]
    made = "created" if result["created"] else "updated"
    _done(
        result,
        as_json,
        f"role {role} {made}: {', '.join(result['kinds'])}"
        + (f"; projects {', '.join(result['projects'])}" if projects else ""),
    )


@grant_group.command("project")
@click.argument("role")
@click.argument("projects", nargs=-1, required=True)
@store_url_option
@click.option("--revoke", is_flag=True, help="Take the projects away instead.")
@json_option("One JSON object: what changed.")
def grant_project_command(role: str, projects: tuple[str, ...], store_url: str, revoke: bool, as_json: bool) -> None:
    """Let ROLE see the devices of PROJECTS (exports and reports), or with --revoke stop it."""
    from central.access import grant_projects
    from central.commands import operator

    with opened(store_url) as store:
        result = grant_projects(store, role, projects, revoke, operator())
    verb = "revoked from" if revoke else "granted to"
    _done(result, as_json, f"projects {', '.join(result['projects'])} {verb} {role}")


@grant_group.command("device")
@click.argument("project")
@click.argument("devices", nargs=-1, required=True)
@store_url_option
@click.option("--remove", is_flag=True, help="Take the devices out of the project instead.")
@json_option("One JSON object: what changed.")
def grant_device_command(project: str, devices: tuple[str, ...], store_url: str, remove: bool, as_json: bool) -> None:
    """Put DEVICES in PROJECT (their records follow the project's grants), or with --remove take them out."""
    from central.access import assign_devices
    from central.commands import operator

    with opened(store_url) as store:
        result = assign_devices(store, project, devices, remove, operator())
    verb = "removed from" if remove else "assigned to"
    _done(result, as_json, f"{len(result['devices'])} device(s) {verb} {project} ({result['changed']} changed)")


@grant_group.command("show")
@store_url_option
@json_option("One JSON object: roles with their kinds and projects, and the devices of each project.")
def grant_show_command(store_url: str, as_json: bool) -> None:
    """List the login roles with their kinds and projects, and each project's devices."""
    from central.access import overview

    with opened(store_url) as store:
        result = overview(store)
    if as_json:
        echo_json(result)
        return
    for role, entry in sorted(result["roles"].items()):
        click.echo(f"{role}: {', '.join(entry['kinds']) or '-'}; projects {', '.join(entry['projects']) or '-'}")
    for project, devs in sorted(result["projects"].items()):
        click.echo(f"project {project}: {', '.join(devs)}")


def _since(value: str | None) -> str | None:
    """--since as the audit rows spell times (ISO 8601 UTC, microseconds), so text order is time order."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since {value!r}: give a UTC date or time, e.g. 2026-05-01 or 2026-05-01T12:00Z") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat(timespec="microseconds")


@click.command("audit")
@store_url_option
@click.option(
    "--action",
    "actions",
    multiple=True,
    help="Only this action (export, report, review_import, withdraw, grant_role, ...; repeatable).",
)
@click.option("--since", help="Only rows at or after this UTC date or time (ISO 8601).")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N rows.")
@json_option("One JSON object per line: each audit row.")
def audit_command(
    store_url: str, actions: tuple[str, ...], since: str | None, limit: int | None, as_json: bool
) -> None:
    """List the audit log: who (OS and database user) did what, when, with which filters and counts.

    On PostgreSQL only auditor roles may read it.
    """
    from central.commands import audit_rows

    after = _since(since)
    with opened(store_url) as store:
        rows = audit_rows(store, actions, after, limit)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, sort_keys=True))
        else:
            detail = json.dumps(row["detail"], sort_keys=True)
            by = row["who"] + (f" as {row['db_user']}" if row["db_user"] else "")
            click.echo(f"{row['at_utc']}  {by}  {row['action']} {row['subject']}  {detail}")


def register(add: Callable[[click.Command], None]) -> None:
    add(grant_group)
    add(audit_command)
