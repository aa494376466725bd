"""The collection plan file (TOML): attributes, scripts, rounds, sites with booths and quotas, consent.

Validated as strictly as the agent's config: unknown keys are refused with a "did you mean", and
every problem names the file, its line and the key, so whoever wrote the plan can fix it before a
booth records anything. A plan's version is the sha256 of its canonical form (scripts resolved to
their items), so an edit to a prompt file is a new version even when the TOML is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.booth.scripts import PromptItem, ScriptError, load_script, parse_script
from agent.config_hints import did_you_mean, key_line, known_keys
from agent.errors import ConfigError

__all__ = ["Plan", "PlanError", "PlanFile", "load_plan"]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Value = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s=,][^=,\t\r\n]*$")]


class PlanError(ConfigError):
    """A plan file that cannot be used: file, line, key and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InlineItem(_Strict):
    id: str
    text: str
    type: str | None = None
    instructions: str | None = None
    max_duration: float | None = None


class ScriptSpec(_Strict):
    """Prompts inline (``items``) or in a TSV/CSV/JSON file relative to the plan (``file``)."""

    items: list[InlineItem] | None = None
    file: str | None = None


class Consent(_Strict):
    scope: Name
    max_age_days: int = Field(gt=0, le=36500)


class Site(_Strict):
    booths: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1)
    speakers: int = Field(gt=0, le=1_000_000)
    quotas: dict[str, dict[str, Annotated[int, Field(ge=0, le=1_000_000)]]] = {}


class PlanFile(_Strict):
    name: Name
    attributes: dict[Name, list[Value]] = Field(min_length=1)
    consent: Consent
    scripts: dict[Name, ScriptSpec] = Field(min_length=1)
    rounds: dict[Name, list[Name]] = Field(min_length=1)
    sites: dict[Name, Site] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plan with every round's prompts resolved; ``version`` identifies it."""

    file: PlanFile
    rounds: dict[str, tuple[PromptItem, ...]]
    version: str

    @property
    def name(self) -> str:
        return self.file.name

    def canonical(self) -> dict[str, Any]:
        f = self.file
        return {
            "name": f.name,
            "attributes": f.attributes,
            "consent": f.consent.model_dump(),
            "rounds": {r: [i.to_dict() for i in items] for r, items in self.rounds.items()},
            "sites": {s: site.model_dump() for s, site in f.sites.items()},
        }

    def site_of(self, booth: str) -> str | None:
        return next((s for s, site in self.file.sites.items() if booth in site.booths), None)


def _fail(file: str, text: str, loc: tuple[int | str, ...], message: str) -> PlanError:
    key = ".".join(str(p) for p in loc)
    return PlanError(file, key, message, line=key_line(text, loc))


def _validated(data: dict[str, Any], file: str, text: str) -> PlanFile:
    try:
        return PlanFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(loc[-1]), known_keys(PlanFile, loc))
                msg = f"unknown key; {hint}" if hint else "unknown key (see docs/plans.md for the plan's keys)"
            problems.append((loc, msg))
        problems.sort(key=lambda p: not p[1].startswith("unknown key"))  # a misspelt key explains a missing one
        loc, msg = problems[0]
        error = _fail(file, text, loc, msg)
        error.problems = [
            {"file": file, "line": key_line(text, lo), "key": ".".join(map(str, lo)), "message": m}
            for lo, m in problems
        ]
        raise error from None


def _items(spec: ScriptSpec, name: str, base: Path, file: str, text: str) -> tuple[PromptItem, ...]:
    loc: tuple[int | str, ...] = ("scripts", name)
    if (spec.items is None) == (spec.file is None):
        raise _fail(file, text, loc, "give exactly one of `items` (inline prompts) or `file` (a .tsv/.csv/.json)")
    try:
        if spec.file is not None:
            script = load_script(base / spec.file)
        else:
            assert spec.items is not None
            rows = [{k: v for k, v in i.model_dump().items() if v is not None} for i in spec.items]
            script = parse_script(json.dumps(rows).encode(), name=f"{name}.json", file=f"{file}: scripts.{name}")
    except ScriptError as exc:
        raise _fail(file, text, (*loc, "file" if spec.file else "items"), str(exc)) from None
    if not script.items:
        raise _fail(file, text, loc, "the script has no items")
    return script.items


def _check(plan: PlanFile, items: dict[str, tuple[PromptItem, ...]], file: str, text: str) -> dict[str, Any]:
    rounds: dict[str, tuple[PromptItem, ...]] = {}
    for rnd, scripts in plan.rounds.items():
        if not scripts:
            raise _fail(file, text, ("rounds", rnd), "a round needs at least one script")
        seen: dict[str, PromptItem] = {}
        for n, script in enumerate(scripts):
            if script not in items:
                hint = did_you_mean(script, items) or f"scripts defined: {', '.join(items)}"
                raise _fail(file, text, ("rounds", rnd), f"unknown script {script!r}; {hint}")
            for item in items[script]:
                if item.item_id in seen:
                    raise _fail(
                        file,
                        text,
                        ("rounds", rnd),
                        f"item {item.item_id!r} comes twice in this round (script #{n + 1})",
                    )
                seen[item.item_id] = item
        rounds[rnd] = tuple(seen.values())
    booths: dict[str, str] = {}
    for sname, site in plan.sites.items():
        for booth in site.booths:
            if booth in booths:
                raise _fail(
                    file, text, ("sites", sname, "booths"), f"booth {booth!r} is also at site {booths[booth]!r}"
                )
            booths[booth] = sname
        for attr, quota in site.quotas.items():
            loc: tuple[int | str, ...] = ("sites", sname, "quotas", attr)
            if attr not in plan.attributes:
                hint = did_you_mean(attr, plan.attributes) or f"attributes: {', '.join(plan.attributes)}"
                raise _fail(file, text, loc, f"not an attribute of the plan; {hint}")
            for value in quota:
                if value not in plan.attributes[attr]:
                    allowed = ", ".join(plan.attributes[attr])
                    hint = did_you_mean(value, plan.attributes[attr])
                    raise _fail(
                        file,
                        text,
                        (*loc, value),
                        f"{value!r} is not a value of {attr}; {hint or 'allowed: ' + allowed}",
                    )
            if sum(quota.values()) > site.speakers:
                raise _fail(
                    file, text, loc, f"the quotas add up to {sum(quota.values())}, more than speakers = {site.speakers}"
                )
    for attr, values in plan.attributes.items():
        if len(set(values)) != len(values) or not values:
            raise _fail(file, text, ("attributes", attr), "list each allowed value once (at least one)")
    return rounds


def load_plan(path: str | Path) -> Plan:
    """Read, validate and resolve a plan file; PlanError (file:line: key: what) on any mistake."""
    file = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise PlanError(file, "", "plan file not found") from None
    except IsADirectoryError:
        raise PlanError(file, "", "is a directory; give the plan's .toml file") from None
    except OSError as exc:
        raise PlanError(file, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PlanError(file, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(file, "", f"not valid TOML: {exc}", line=getattr(exc, "lineno", None)) from None
    pf = _validated(data, file, text)
    base = Path(path).parent
    items = {name: _items(spec, name, base, file, text) for name, spec in pf.scripts.items()}
    rounds = _check(pf, items, file, text)
    plan = Plan(pf, rounds, "")
    canonical = json.dumps(plan.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Plan(pf, rounds, hashlib.sha256(canonical.encode()).hexdigest())
