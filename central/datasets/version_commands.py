"""``fieldcap version create|list|show|diff``: named, immutable dataset versions (``named``).

Mistakes (an existing or unknown name, a bad filter, no store) end in one line and exit 1.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

import click

from agent.cli.common import UserError, echo_json, json_option
from central.datasets.commands import _filters, _opened, filter_options
from central.store_url import store_url_option


def _default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@click.group("version")
def version_group() -> None:
    """Named dataset versions: a selection frozen with its annotations, a note and an author."""


@version_group.command("create")
@store_url_option
@click.argument("name")
@filter_options
@click.option("--note", required=True, help="What changed in this version and why (kept with it).")
@click.option("--author", help="Who made it (default: the login name).")
@json_option("One JSON object: the version's summary.")
def create_command(store_url: str, name: str, note: str, author: str | None, as_json: bool, **kw: Any) -> None:
    """Freeze the samples the filters select now, with their chosen annotations, as version NAME."""
    from central.datasets import named

    author = author if author is not None else _default_author()
    filters = _filters(kw)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with _opened(store_url) as store:
        made = named.create(store, name, filters, note, author, now)
    summary = made.summary()
    if as_json:
        echo_json(summary)
        return
    click.echo(f"version {made.name}: {summary['samples']} samples, id {made.version_id[:16]}, by {made.author}")


@version_group.command("list")
@store_url_option
@json_option("One JSON array: every version's summary, oldest first.")
def list_command(store_url: str, as_json: bool) -> None:
    """Every named version, oldest first."""
    from central.datasets import named

    with _opened(store_url) as store:
        versions = named.list_versions(store)
    if as_json:
        echo_json([v.summary() for v in versions])
        return
    if not versions:
        click.echo("no dataset versions yet; make one with: fieldcap version create NAME --note TEXT")
    for v in versions:
        note = v.note.splitlines()[0][:60]
        click.echo(f"{v.name}\t{v.created_utc}\t{v.author}\t{len(v.entries)} samples\t{v.version_id[:16]}\t{note}")


@version_group.command("show")
@store_url_option
@click.argument("name")
@json_option("One JSON object: the summary and every frozen sample.")
def show_command(store_url: str, name: str, as_json: bool) -> None:
    """Who made version NAME, when and why, how it was selected and what it holds."""
    from central.datasets import named

    with _opened(store_url) as store:
        v = named.get(store, name)
        withdrawn = named.notes(store, name)
    s = {**v.summary(), "withdrawals": withdrawn}
    if as_json:
        echo_json({**s, "entries": list(v.entries)})
        return
    click.echo(f"{v.name}  {v.version_id}\nmade {v.created_utc} by {v.author}\n\n{v.note}\n")
    click.echo(f"filters: {s['filters'] or 'none (every current sample)'}")
    click.echo(f"samples: {s['samples']}")
    for title in ("modalities", "annotation_sources", "labels", "time_of_day", "weather"):
        if s[title]:
            click.echo(f"{title.replace('_', ' ')}: " + ", ".join(f"{k} {n}" for k, n in s[title].items()))
    for w in withdrawn:
        click.echo(f"withdrawn {w['noted_utc']}: {w['note']} ({w['samples']} of its samples are gone from the store)")


@version_group.command("diff")
@store_url_option
@click.argument("a")
@click.argument("b")
@json_option("One JSON object: added, removed, relabelled and media-changed samples.")
def diff_command(store_url: str, a: str, b: str, as_json: bool) -> None:
    """What changed from version A to version B."""
    from central.datasets import named

    if a == b:
        raise UserError(f"{a} against itself: give two different versions")
    with _opened(store_url) as store:
        result = named.diff(named.get(store, a), named.get(store, b))
    if as_json:
        echo_json(result)
        return
    for key in result["added"]:
        click.echo(f"+ {key}")
    for key in result["removed"]:
        click.echo(f"- {key}")
    for r in result["relabelled"]:
        before, after = ",".join(r["labels_before"]) or "-", ",".join(r["labels_after"]) or "-"
        click.echo(f"~ {r['key']}  {r['source_before']}:{before} -> {r['source_after']}:{after}")
    for key in result["media_changed"]:
        click.echo(f"* {key}  (other media)")
    click.echo(
        f"{a} -> {b}: {len(result['added'])} added, {len(result['removed'])} removed,"
        f" {len(result['relabelled'])} relabelled, {len(result['media_changed'])} with other media,"
        f" {result['unchanged']} unchanged"
    )
