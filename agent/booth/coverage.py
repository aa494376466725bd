"""Coverage: which script item x round x microphone still lacks an accepted take.

A cell (item, round, microphone) is covered when the item's newest take (retakes supersede older
ones) finished, has a capture from the microphone's stream, and the operator accepted it — and QC
did not fail that microphone, unless the operator accepted the take knowing it had failed (an
override, recorded as such). Near and mid microphones are two channels of one take capture: each
cell is judged by its own channel's verdict (``agent.qc``), so a noisy mid microphone leaves the
mid cell uncovered and says so while the near cell counts. Until a take has been screened per
microphone, and for a take failure no single channel explains, every microphone of the take
carries the whole take's verdict (``records.mic_verdict``). Retaking an item records both
microphones again, as they are recorded together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from agent.booth.records import BoothSessionRow, Mic, TakeFacts, mic_verdict, session_takes, skipped_items
from agent.catalog.db import Catalog

__all__ = [
    "ACCEPTED_QC_PENDING",
    "Cell",
    "SessionCoverage",
    "cell_status",
    "coverage_of",
    "latest_takes",
    "session_coverage",
]

ACCEPTED_QC_PENDING = "accepted, QC pending"


@dataclass(frozen=True, slots=True)
class Cell:
    session_id: str
    item_id: str
    round: int | None
    mic: str
    ok: bool
    status: str
    take_no: int | None = None
    take_id: str | None = None
    verdict: str | None = None
    reasons: tuple[str, ...] = ()
    scope: str | None = None  # "microphone": the cell's own channel was judged; "take": the whole take's verdict


@dataclass
class SessionCoverage:
    session: BoothSessionRow
    cells: list[Cell]

    @property
    def complete(self) -> bool:
        return bool(self.cells) and all(c.ok for c in self.cells)

    @property
    def missing(self) -> list[Cell]:
        return [c for c in self.cells if not c.ok]

    def done_items(self, *, qc_pending_ok: bool = False) -> set[str]:
        """Items whose every cell is covered (``qc_pending_ok``: or accepted, the agent's QC still running)."""
        by_item: dict[str, bool] = {}
        for c in self.cells:
            ok = c.ok or (qc_pending_ok and c.status == ACCEPTED_QC_PENDING)
            by_item[c.item_id] = by_item.get(c.item_id, True) and ok
        return {item for item, ok in by_item.items() if ok}

    def items_done(self, *, qc_pending_ok: bool = False) -> int:
        return len(self.done_items(qc_pending_ok=qc_pending_ok))

    def to_dict(self) -> dict[str, Any]:
        s = self.session
        return {
            "session_id": s.session_id,
            "script": s.script,
            "round": s.round_no,
            "subject_pseudonym": s.subject_pseudonym,
            "ended_utc": s.ended_utc,
            "items": len(s.items),
            "microphones": [m.mic for m in s.mics],
            "cells": len(self.cells),
            "covered": len(self.cells) - len(self.missing),
            "complete": self.complete,
            "missing": [{k: v for k, v in asdict(c).items() if k != "session_id"} for c in self.missing],
        }


def latest_takes(takes: list[TakeFacts]) -> dict[tuple[str, int | None], TakeFacts]:
    """The newest take of each (item, round)."""
    out: dict[tuple[str, int | None], TakeFacts] = {}
    for t in takes:
        key = (t.item_id, t.round_no)
        if key not in out or t.take_no > out[key].take_no:
            out[key] = t
    return out


def cell_status(take: TakeFacts | None, mic: Mic, *, skipped: bool = False) -> tuple[bool, str]:
    """Whether a microphone's cell is covered by this (newest) take, and why not."""
    if take is None:
        return False, "skipped" if skipped else "not recorded"
    if take.status != "done":
        return False, f"take {take.take_no} {take.status}"
    if mic.stream not in take.captures:
        return False, f"take {take.take_no} has no capture from {mic.stream}"
    verdict, _ = mic_verdict(take, mic)
    if not take.accepted:
        if verdict is None:
            return False, "QC pending, not accepted yet"
        return False, "QC failed" if verdict.verdict == "fail" else "not accepted yet"
    assert take.decision is not None
    if take.decision.get("override"):  # accepted knowing QC failed it: the verdict no longer matters
        return True, "accepted (QC override)"
    if verdict is None:
        return False, ACCEPTED_QC_PENDING
    if verdict.verdict == "fail":
        return False, "accepted, but QC failed"
    return True, "accepted"


def session_coverage(
    cat: Catalog, session: BoothSessionRow, *, takes: list[TakeFacts] | None = None
) -> SessionCoverage:
    """Every item x round x microphone cell of a booth session, covered or not (``takes``: already read)."""
    takes = session_takes(cat, session.session_id) if takes is None else takes
    return coverage_of(session, takes, skipped_items(cat, session.session_id))


def coverage_of(session: BoothSessionRow, takes: list[TakeFacts], skipped: set[str]) -> SessionCoverage:
    """The cells of a session from its facts: the one rule, whether they come from the device's
    catalog (``fieldcap coverage``) or from the records it synced (the central dataset card)."""
    newest = latest_takes(takes)
    items = [i.item_id for i in session.items]
    for t in takes:  # takes of items the script no longer has still count
        if t.item_id not in items:
            items.append(t.item_id)
    mics = list(session.mics) or sorted({Mic(s, s, -1) for t in takes for s in t.captures}, key=lambda m: m.mic)
    cells = []
    for item in items:
        take = newest.get((item, session.round_no))
        for mic in mics:
            ok, status = cell_status(take, mic, skipped=item in skipped)
            verdict, scope = mic_verdict(take, mic) if take else (None, None)
            cells.append(
                Cell(
                    session_id=session.session_id,
                    item_id=item,
                    round=session.round_no,
                    mic=mic.mic,
                    ok=ok,
                    status=status,
                    take_no=take.take_no if take else None,
                    take_id=take.take_id if take else None,
                    verdict=verdict.verdict if verdict else None,
                    reasons=verdict.reasons if verdict else (),
                    scope=scope if verdict else None,
                )
            )
    return SessionCoverage(session, cells)
