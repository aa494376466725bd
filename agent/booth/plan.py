"""The booth under a collection plan: enrol or resume a participant, check consent, pick what is left.

The booth takes the newest ``assignment`` the central side pushed (``agent.catalog.plan_rows``).
A participant is enrolled by pseudonym only (the subject ID is hashed before anything is kept),
with attributes checked against the assignment's schema and a consent that must cover the plan's
scope, not be expired and not be older than the plan allows. What is left to record is the round's
items minus those this participant already has an accepted take of, in any session of the plan
and round on this booth. Quota counts here are this booth's own knowledge; the central
``fieldcap central plan status`` is authoritative.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.booth.coverage import session_coverage
from agent.booth.records import booth_sessions
from agent.booth.scripts import PromptItem, Script
from agent.catalog.db import Catalog
from agent.catalog.plan_rows import Assignment, Participant
from agent.config_hints import did_you_mean
from agent.errors import FieldcapError
from sync.commands import AssignmentBody, AssignmentRound

__all__ = [
    "ConsentGiven",
    "PlanError",
    "consent_problem",
    "items_left",
    "parse_attributes",
    "pick_round",
    "quota_notes",
    "round_script",
]


class PlanError(FieldcapError):
    """The booth cannot record this participant under the plan; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ConsentGiven:
    scope: str
    date: str
    expires: str | None
    ref: str


def _day(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PlanError(f"{what}: {text!r} is not a date; write it as YYYY-MM-DD") from None


def parse_attributes(pairs: Sequence[str], body: AssignmentBody, known: Mapping[str, str]) -> dict[str, str]:
    """``--attr k=v`` pairs over what is known of the participant, checked against the plan's schema."""
    out = dict(known)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise PlanError(f"--attr {pair!r}: write it as NAME=VALUE (e.g. --attr sex=female)")
        if name not in body.attributes:
            hint = did_you_mean(name, body.attributes) or f"the plan's attributes: {', '.join(body.attributes)}"
            raise PlanError(f"--attr {pair!r}: plan {body.plan} has no attribute {name!r}; {hint}")
        allowed = body.attributes[name]
        if value not in allowed:
            hint = did_you_mean(value, allowed)
            raise PlanError(
                f"--attr {pair!r}: {value!r} is not a value of {name}; {hint or 'allowed: ' + ', '.join(allowed)}"
            )
        out[name] = value
    return out


def missing_attributes(attrs: Mapping[str, str], body: AssignmentBody) -> list[str]:
    return [a for a in body.attributes if a not in attrs]


def consent_problem(consent: ConsentGiven, body: AssignmentBody, today: dt.date) -> str | None:
    """Why this consent does not allow recording for the plan today; None when it does."""
    scopes = {s.strip() for s in consent.scope.split(",") if s.strip()}
    if body.consent_scope not in scopes:
        return (
            f"the participant's consent (scope {consent.scope!r}, {consent.ref}) does not cover {body.consent_scope!r},"
            f" which plan {body.plan} requires; record new consent with --consent-scope {body.consent_scope}"
            " --consent-ref DOC"
        )
    given = _day(consent.date, "--consent-date")
    if given > today:
        return f"the consent date {consent.date} is in the future; give the date the form was signed"
    if consent.expires is not None and _day(consent.expires, "--consent-expires") < today:
        return (
            f"the participant's consent ({consent.ref}) expired on {consent.expires}; record renewed consent"
            " (--consent-scope, --consent-ref, --consent-expires) before recording"
        )
    if (today - given).days > body.consent_max_age_days:
        return (
            f"the participant's consent ({consent.ref}) was given on {consent.date}, more than"
            f" {body.consent_max_age_days} days ago (plan {body.plan}'s limit); record renewed consent"
        )
    return None


def round_script(body: AssignmentBody, rnd: AssignmentRound) -> Script:
    items = tuple(PromptItem(i.item_id, i.text, i.type, i.instructions, i.max_duration_s) for i in rnd.items)
    digest = hashlib.sha256(json.dumps([i.to_dict() for i in items], sort_keys=True).encode()).hexdigest()
    return Script(name=f"{body.plan}/{rnd.name}", sha256=digest, items=items)


def accepted_items(cat: Catalog, pseudonym: str, plan: str, round_name: str) -> set[str]:
    """Items this participant has an accepted take of, in any of the plan's sessions of this round here."""
    done: set[str] = set()
    for row in booth_sessions(cat):
        if (
            row.subject_pseudonym == pseudonym
            and row.meta.get("plan") == plan
            and row.meta.get("plan_round") == round_name
        ):
            done |= session_coverage(cat, row).done_items(qc_pending_ok=True)
    return done


def items_left(cat: Catalog, pseudonym: str, body: AssignmentBody, rnd: AssignmentRound) -> list[PromptItem]:
    done = accepted_items(cat, pseudonym, body.plan, rnd.name)
    return [i for i in round_script(body, rnd).items if i.item_id not in done]


def pick_round(cat: Catalog, pseudonym: str, body: AssignmentBody, wanted: str | None) -> tuple[int, AssignmentRound]:
    """(1-based round number, round): the one named, else the first with items left for this participant."""
    names = [r.name for r in body.rounds]
    if wanted is not None:
        for n, r in enumerate(body.rounds, start=1):
            if wanted in (r.name, str(n)):
                return n, r
        hint = did_you_mean(wanted, names) or f"its rounds: {', '.join(names)}"
        raise PlanError(f"--round {wanted!r}: plan {body.plan} has no such round; {hint}")
    for n, r in enumerate(body.rounds, start=1):
        if items_left(cat, pseudonym, body, r):
            return n, r
    return len(body.rounds), body.rounds[-1]


def quota_notes(people: Mapping[str, Participant], me: Participant, body: AssignmentBody) -> list[str]:
    """One line per quota this participant falls under: how many this booth knows of, and whether it is full."""
    lines = []
    for attr, quota in body.quotas.items():
        value = me.attributes.get(attr)
        if value is None or value not in quota:
            continue
        others = sum(1 for p, x in people.items() if p != me.subject_pseudonym and x.attributes.get(attr) == value)
        full = others >= quota[value]
        state = "FULL: this participant is over the quota" if full else "open"
        lines.append(
            f"quota {attr}={value} at site {body.site}: {others} other participant(s) known here of {quota[value]}"
            f" - {state} (this booth's count; the central plan status is authoritative)"
        )
    return lines


def start_screen(a: Assignment, rnd: AssignmentRound, left: int, quota: list[str]) -> list[str]:
    b = a.body
    return [
        f"plan {b.plan} (version {b.version[:12]}), site {b.site}, round {rnd.name}: {left} of {len(rnd.items)}"
        " item(s) left for this participant",
        *quota,
    ]


Ask = Callable[[str, list[str]], str]
