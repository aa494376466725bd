"""Push a plan to its booths: one signed ``assignment`` command per booth, through the commands table.

The ingester publishes each command until the booth acknowledges it, so a booth that is offline at
push time gets its assignment when it reconnects. A booth keeps the newest assignment it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.commands import audit, list_commands, new_command, queue
from central.plans.planfile import Plan
from central.store import CentralStore
from sync.commands import AssignmentBody, AssignmentItem, AssignmentRound, Command

__all__ = ["Delivery", "assignment_for", "deliveries", "push"]


def assignment_for(plan: Plan, site: str) -> AssignmentBody:
    s = plan.file.sites[site]
    rounds = [
        AssignmentRound(
            name=name,
            items=[
                AssignmentItem(
                    item_id=i.item_id,
                    text=i.text,
                    type=i.type,
                    instructions=i.instructions,
                    max_duration_s=i.max_duration_s,
                )
                for i in items
            ],
        )
        for name, items in plan.rounds.items()
    ]
    return AssignmentBody(
        plan=plan.name,
        version=plan.version,
        site=site,
        rounds=rounds,
        attributes={k: list(v) for k, v in plan.file.attributes.items()},
        quotas={k: dict(v) for k, v in s.quotas.items()},
        speakers=s.speakers,
        consent_scope=plan.file.consent.scope,
        consent_max_age_days=plan.file.consent.max_age_days,
    )


def push(store: CentralStore, plan: Plan, who: str) -> list[Command]:
    """Queue the assignment of every booth of the plan, in one transaction, with an audit row."""
    commands = []
    with store.batch():
        for site, s in plan.file.sites.items():
            body = assignment_for(plan, site)
            for booth in s.booths:
                cmd = new_command(booth, assignment=body)
                queue(store, cmd, who)
                commands.append(cmd)
        audit(store, "plan_push", plan.name, {"version": plan.version, "booths": len(commands)}, who)
    return commands


@dataclass(frozen=True, slots=True)
class Delivery:
    device: str
    version: str
    command_id: str
    acked_utc: str | None
    status: str | None


def deliveries(store: CentralStore, plan: str) -> list[Delivery]:
    """Every assignment of this plan queued so far and whether its booth has acknowledged it."""
    out = []
    for row in list_commands(store, "assignment"):
        body = row.command.assignment
        if body is not None and body.plan == plan:
            out.append(
                Delivery(row.command.device, body.version, row.command.command_id, row.acked_utc, row.ack_status)
            )
    return out
