"""How far a plan has got, from the central records: per site, booth, round and quota value.

Counted in (participant, item) pairs of the plan's sessions (``session`` records whose metadata
names the plan): ``recorded`` has a finished take, ``qc`` has a take whose every capture verdict is
``pass``, ``review`` has a take a person reviewed (an imported annotation set of one of its
captures: the review tools carry no accept/reject verdict, so this counts reviewed takes; 0 when
nothing was imported). ``planned`` is speakers (or the quota) times the round's items; a booth has
no planned figure of its own (the site's speakers are not split across booths). ``missing`` is
planned minus qc.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from central.participants import registry
from central.plans.planfile import Plan
from central.store import CentralStore

__all__ = ["StatusRow", "plan_status"]

Pair = tuple[str, str]  # (pseudonym, item_id)


@dataclass(frozen=True, slots=True)
class StatusRow:
    level: str  # site, booth or quota
    site: str
    round: str
    booth: str | None
    attribute: str | None
    value: str | None
    planned: int | None
    recorded: int
    qc: int
    review: int
    missing: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bodies(store: CentralStore, kind: str) -> list[tuple[str, dict[str, Any]]]:
    with store._tx() as cur:
        rows = store._exec(cur, "SELECT device, body FROM records WHERE kind = ?", (kind,)).fetchall()
    out = []
    for device, body in rows:
        inner = json.loads(body).get("body")
        if isinstance(inner, dict):
            out.append((str(device), inner))
    return out


def _reviewed(store: CentralStore) -> set[tuple[str, str]]:
    """(device, capture_id) of captures with an imported annotation set; empty when nothing was imported."""
    with store._tx() as cur:
        try:
            rows = store._exec(cur, "SELECT device, capture_id FROM dataset_annotation_sets").fetchall()
        except Exception:
            return set()
    return {(str(d), str(c)) for d, c in rows}


def _captures(take: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for v in (take.get("captures") or {}).values():
        out.extend(v if isinstance(v, list) else [v])
    return [str(c) for c in out]


def plan_status(store: CentralStore, plan: Plan) -> list[StatusRow]:
    sessions: dict[tuple[str, str], tuple[str, str, str]] = {}  # (device, session) -> (pseudonym, round, site)
    for device, sess in _bodies(store, "session"):
        meta = sess.get("meta") or {}
        if sess.get("event") == "start" and meta.get("plan") == plan.name and sess.get("subject_pseudonym"):
            site = str(meta.get("plan_site") or plan.site_of(device) or "?")
            who, rnd = str(sess["subject_pseudonym"]), str(meta.get("plan_round"))
            sessions[(device, str(sess["session_id"]))] = (who, rnd, site)
    verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for device, v in _bodies(store, "verdict"):
        verdicts[(device, str(v["capture_id"]))].append(str(v["verdict"]))
    reviewed = _reviewed(store)
    # (site, booth, round) -> state -> pairs
    got: dict[tuple[str, str, str], dict[str, set[Pair]]] = defaultdict(lambda: defaultdict(set))
    for device, t in _bodies(store, "take"):
        where = sessions.get((device, str(t.get("session_id"))))
        if where is None or t.get("status") != "done":
            continue
        pseudonym, rnd, site = where
        pair = (pseudonym, str(t["item_id"]))
        cell = got[(site, device, rnd)]
        cell["recorded"].add(pair)
        caps = _captures(t)
        found = [verdicts.get((device, c)) for c in caps]
        if caps and all(f and f[-1] == "pass" for f in found):
            cell["qc"].add(pair)
        if any((device, c) in reviewed for c in caps):
            cell["review"].add(pair)
    people = registry(store)

    def counts(cells: list[dict[str, set[Pair]]], keep: set[str] | None = None) -> tuple[int, int, int]:
        def n(state: str) -> int:
            pairs: set[Pair] = set().union(*(c[state] for c in cells)) if cells else set()
            return len([p for p in pairs if keep is None or p[0] in keep])

        return n("recorded"), n("qc"), n("review")

    rows: list[StatusRow] = []
    for site, s in plan.file.sites.items():
        booths = sorted({*s.booths, *(b for (st, b, _r) in got if st == site)})
        for rnd, items in plan.rounds.items():
            at_site = [c for (st, _b, r), c in got.items() if st == site and r == rnd]
            rec, qc, rev = counts(at_site)
            planned = s.speakers * len(items)
            rows.append(StatusRow("site", site, rnd, None, None, None, planned, rec, qc, rev, max(planned - qc, 0)))
            for booth in booths:
                mine = [c for (st, b, r), c in got.items() if st == site and b == booth and r == rnd]
                rec, qc, rev = counts(mine)
                rows.append(StatusRow("booth", site, rnd, booth, None, None, None, rec, qc, rev, None))
            for attr, quota in s.quotas.items():
                for value, n in quota.items():
                    keep = {p for p, r in people.items() if r.record.attributes.get(attr) == value}
                    rec, qc, rev = counts(at_site, keep)
                    planned = n * len(items)
                    rows.append(
                        StatusRow("quota", site, rnd, None, attr, value, planned, rec, qc, rev, max(planned - qc, 0))
                    )
    return rows
