"""Before the microphones open: the plan's assignment, the participant's enrolment and consent, the round.

Kept apart from the booth UI so that every refusal (no assignment, bad attribute, consent missing
or expired) is one line and exit 1 before any device is opened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from agent.booth.plan import (
    ConsentGiven,
    PlanError,
    consent_problem,
    items_left,
    missing_attributes,
    parse_attributes,
    pick_round,
    quota_notes,
    round_script,
    start_screen,
)
from agent.booth.scripts import PromptItem, Script
from agent.catalog.db import Catalog
from agent.catalog.plan_rows import Participant, current_assignment, participants, save_participant
from agent.sessions.takes import key_id, load_subject_key, pseudonym

__all__ = ["Sitting", "prepare"]


@dataclass(frozen=True, slots=True)
class Sitting:
    script: Script
    round_no: int
    meta: dict[str, str]
    items: list[PromptItem]


def _consent(
    given: tuple[str | None, str | None, str | None, str | None], old: Participant | None, today: dt.date
) -> ConsentGiven:
    scope, ref, date, expires = given
    if old is not None and not any(given):
        return ConsentGiven(old.consent_scope, old.consent_date, old.consent_expires, old.consent_ref)
    scope = scope or str(click.prompt("consent scope")).strip()
    ref = ref or str(click.prompt("consent document reference")).strip()
    if not scope or not ref:
        raise PlanError("consent needs a scope and a document reference (--consent-scope, --consent-ref)")
    return ConsentGiven(scope, date or today.isoformat(), expires or None, ref)


def prepare(
    config: Any,
    config_file: str,
    subject_id: str,
    round_arg: str | None,
    attrs: Sequence[str],
    consent: tuple[str | None, str | None, str | None, str | None],
    *,
    say: Callable[[str], None],
    today: dt.date | None = None,
) -> Sitting | None:
    """Enrol or resume the participant under the current assignment; None when nothing is left to record."""
    file = config.agent.data_dir / "catalog.sqlite"
    no_plan = (
        "no collection plan has reached this booth yet: push one with `fieldcap central plan push` and let the"
        " booth sync (the agent, or any booth sitting, fetches it), or give --script"
    )
    if not file.exists():
        raise PlanError(no_plan)
    key = load_subject_key(config.session.subject_key_file, config_file=config_file)
    pseudo = pseudonym(subject_id, key)
    day = today or dt.date.today()
    with Catalog(file, config.agent.device_id) as cat:
        assignment = current_assignment(cat)
        if assignment is None:
            raise PlanError(no_plan)
        body = assignment.body
        old = participants(cat).get(pseudo)
        values = parse_attributes(attrs, body, old.attributes if old else {})
        for name in missing_attributes(values, body):
            choice = click.prompt(f"participant's {name}", type=click.Choice(body.attributes[name]))
            values[name] = str(choice)
        given = _consent(consent, old, day)
        problem = consent_problem(given, body, day)
        if problem:
            raise PlanError(f"not recording: {problem}")
        me = Participant(
            pseudo, key_id(key), body.plan, body.site, values, given.scope, given.date, given.expires, given.ref
        )
        if save_participant(cat, me):
            say("participant enrolled" if old is None else "participant's attributes or consent updated")
        else:
            say("participant resumed")
        round_no, rnd = pick_round(cat, pseudo, body, round_arg)
        left = items_left(cat, pseudo, body, rnd)
        notes = quota_notes(participants(cat, plan=body.plan, site=body.site), me, body)
    for line in start_screen(assignment, rnd, len(left), notes):
        say(line)
    if not left:
        say(f"every item of round {rnd.name} has an accepted take of this participant: nothing left to record")
        return None
    meta = {"plan": body.plan, "plan_version": body.version, "plan_site": body.site, "plan_round": rnd.name}
    return Sitting(round_script(body, rnd), round_no, meta, left)
