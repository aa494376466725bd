"""``fieldcap central plan validate|push|status`` and ``fieldcap central participants``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from agent.cli.common import json_option, user_errors
from central.store_url import store_url_option

plan_arg = click.argument("plan_file", metavar="PLAN", type=click.Path(path_type=Path))


@click.group("plan")
def plan_group() -> None:
    """Collection plans: check one, push it to its booths, see how far each site has got."""


@plan_group.command("validate")
@plan_arg
def plan_validate(plan_file: Path) -> None:
    """Check PLAN (a .toml collection plan) and print its version; exit 1 naming file:line: key on a mistake."""
    from central.plans.planfile import load_plan

    with user_errors():
        plan = load_plan(plan_file)
    items = sum(len(i) for i in plan.rounds.values())
    booths = sum(len(s.booths) for s in plan.file.sites.values())
    click.echo(
        f"plan {plan.name} version {plan.version}: {len(plan.rounds)} round(s), {items} item(s),"
        f" {len(plan.file.sites)} site(s), {booths} booth(s)"
    )


@plan_group.command("push")
@plan_arg
@store_url_option
def plan_push(plan_file: Path, store_url: str) -> None:
    """Send PLAN's assignment to each of its booths (delivered when each booth next connects)."""
    from central.commands import operator
    from central.plans.planfile import load_plan
    from central.plans.push import push
    from central.store import open_store
    from sync.errors import SyncError

    with user_errors(SyncError, OSError):
        plan = load_plan(plan_file)
        store = open_store(store_url, create=False)
        try:
            commands = push(store, plan, operator())
        finally:
            store.close()
    for cmd in commands:
        assert cmd.assignment is not None
        click.echo(f"queued assignment {cmd.command_id} for {cmd.device} (site {cmd.assignment.site})")
    click.echo(f"plan {plan.name} version {plan.version[:12]}: {len(commands)} booth(s); each acknowledges on receipt")


@plan_group.command("status")
@plan_arg
@store_url_option
@json_option("One JSON object: the plan, its booths' deliveries and one row per site/booth/quota and round.")
def plan_status_command(plan_file: Path, store_url: str, as_json: bool) -> None:
    """Planned, recorded, QC-accepted, reviewed and missing (participant x item) per site, booth, round, quota."""
    from central.plans.planfile import load_plan
    from central.plans.push import deliveries
    from central.plans.status import plan_status
    from central.store import open_store
    from sync.errors import SyncError

    with user_errors(SyncError, OSError):
        plan = load_plan(plan_file)
        store = open_store(store_url, create=False)
        try:
            rows = plan_status(store, plan)
            sent = deliveries(store, plan.name)
        finally:
            store.close()
    if as_json:
        doc = {
            "plan": plan.name,
            "version": plan.version,
            "deliveries": [{"device": d.device, "version": d.version, "acked_utc": d.acked_utc} for d in sent],
            "rows": [r.to_dict() for r in rows],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    current = [d for d in sent if d.version == plan.version]
    acked = sum(1 for d in current if d.acked_utc)
    click.echo(f"plan {plan.name} version {plan.version[:12]}: {acked} of {len(current)} booth(s) have it")
    click.echo("(review: takes with an imported review; 0 when no review was imported)")
    head = ("site", "round", "booth / quota", "planned", "recorded", "qc", "review", "missing")
    click.echo("{:12} {:8} {:24} {:>8} {:>9} {:>6} {:>7} {:>8}".format(*head))
    for r in rows:
        what = r.booth if r.level == "booth" else f"{r.attribute}={r.value}" if r.level == "quota" else "(all)"
        planned = "-" if r.planned is None else str(r.planned)
        missing = "-" if r.missing is None else str(r.missing)
        click.echo(
            f"{r.site:12} {r.round:8} {what:24} {planned:>8} {r.recorded:>9} {r.qc:>6} {r.review:>7} {missing:>8}"
        )


@click.command("participants")
@store_url_option
@json_option("One JSON object per participant per line.")
def participants_command(store_url: str, as_json: bool) -> None:
    """The participant registry: each pseudonym's newest attributes and consent, as the booths sent them."""
    from central.cli import shown
    from central.participants import registry
    from central.store import open_store
    from sync.errors import SyncError

    with user_errors(SyncError, OSError):
        store = open_store(store_url, create=False)
        try:
            people = registry(store)
        finally:
            store.close()
    if not as_json and not people:
        click.echo("no participants")
    for p in people.values():
        if as_json:
            click.echo(json.dumps(p.to_dict(), sort_keys=True))
            continue
        r = p.record
        attrs = " ".join(f"{k}={v}" for k, v in sorted(r.attributes.items()))
        expires = f" until {r.consent_expires}" if r.consent_expires else ""
        click.echo(
            shown(
                f"{r.subject_pseudonym[:16]}  {r.plan}  {r.site}  {p.device}  {attrs}"
                f"  consent {r.consent_scope} {r.consent_date}{expires} ({r.consent_ref})"
            )
        )
