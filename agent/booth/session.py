"""The booth's state machine: mic test, prompt, countdown, record, check, decide — over the sessions API.

It knows nothing about terminals: the UI feeds it keys (``key``) and calls ``tick`` about ten
times a second, then draws what the properties say. Everything that outlives the process goes
to the catalog as it happens — the session (with its script items and microphones), each take
(``Sessions.start_take`` / ``stop_take``; a take of an item recorded before supersedes it), and
each operator decision (``records.record_decision``) — so quitting or crashing loses at most the
take being recorded, and ``open_booth_session`` resumes where the catalog says the session is.

Stopping a take waits for its post-roll and its commit on a worker thread, then screens it at
once (``InstantQc``); the agent's full verdict replaces that when its QC thread gets to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from agent.booth.coverage import SessionCoverage, latest_takes, session_coverage
from agent.booth.instant_qc import InstantQc, MicCheck, worst
from agent.booth.levels import ChannelLevel
from agent.booth.records import (
    BoothSessionRow,
    TakeFacts,
    booth_sessions,
    record_decision,
    session_takes,
)
from agent.booth.scripts import PromptItem, Script
from agent.booth.station import BoothError, Station
from agent.catalog.db import Catalog
from agent.sessions.takes import SessionError, Take, TakeResult, pseudonym

__all__ = ["Booth", "Phase", "open_booth_session"]

MIC_TEST_EVENT = "booth_mic_test"
POLL_S = 0.5  # how often the catalog is asked whether the agent's QC judged the newest takes


class Phase(StrEnum):
    MIC_TEST = "mic test"
    READY = "ready"
    COUNTDOWN = "countdown"
    RECORDING = "recording"
    CHECKING = "checking"
    REVIEW = "review"
    PAUSED = "paused"
    DONE = "done"
    QUIT = "quit"


# What each key does, per phase (shown on screen in this order).
KEYS: dict[Phase, list[tuple[str, str]]] = {
    Phase.MIC_TEST: [("enter", "mic test done"), ("q", "quit")],
    Phase.READY: [("space/r", "record"), ("s", "skip"), ("b", "back"), ("p", "pause"), ("q", "quit")],
    Phase.COUNTDOWN: [("space/r", "cancel"), ("q", "quit")],
    Phase.RECORDING: [("space/r", "stop"), ("q", "abort take and quit")],
    Phase.CHECKING: [("q", "quit after the check")],
    Phase.REVIEW: [("a", "accept"), ("t", "retake"), ("s", "skip"), ("b", "back"), ("p", "pause"), ("q", "quit")],
    Phase.PAUSED: [("p", "resume"), ("q", "quit")],
    Phase.DONE: [("n", "next missing item"), ("b", "back"), ("e", "end the session"), ("q", "quit")],
    Phase.QUIT: [],
}


@dataclass
class CheckedTake:
    """A stopped take with its instant check, and the full verdict once the agent's QC has run."""

    take: Take
    result: TakeResult
    checks: list[MicCheck] = field(default_factory=list)
    check_error: str | None = None
    latency_s: float = 0.0  # from the stop key to the instant verdict
    committed_s: float = 0.0  # from the stop key to the take's files committed (post-roll included)
    full: TakeFacts | None = None
    auto_stopped: bool = False

    @property
    def instant_verdict(self) -> str | None:
        return worst([c.verdict for c in self.checks]) if self.checks else None

    @property
    def full_verdict(self) -> str | None:
        """The agent's verdict, per microphone once each channel is screened (the worst of them)."""
        if self.full is None or not self.full.judged:
            return None
        return worst([v.verdict for v in self.full.verdicts_by_mic().values()])

    def shown(self) -> tuple[str | None, str, list[str]]:
        """(verdict, source, reasons) as the operator should see them: the full verdict when known."""
        full = self.full_verdict
        if full is not None and self.full is not None:
            return full, "full", self.full.labelled_reasons()
        reasons = [f"{c.mic}: {r}" for c in self.checks for r in c.reasons]
        return self.instant_verdict, "instant", reasons


def open_booth_session(
    station: Station,
    script: Script,
    subject_id: str,
    round_no: int,
    *,
    new: bool = False,
    confirm: Callable[[str], bool],
    say: Callable[[str], None],
    plan_meta: dict[str, str] | None = None,
) -> BoothSessionRow:
    """Resume the open session of this subject, script and round, or start one.

    ``plan_meta`` (plan, plan_version, plan_site, plan_round): a session of a collection plan, which
    resumes the subject's open session of that plan and round whatever items it started with.
    """
    sessions = station.sessions
    if sessions.subject_key is None:
        raise BoothError("no subject key is configured ([session] subject_key_file)")
    pseudo = pseudonym(subject_id, sessions.subject_key)
    with station.catalog() as cat:
        mine = [
            s for s in booth_sessions(cat, open_only=True) if s.subject_pseudonym == pseudo and s.round_no == round_no
        ]
        if plan_meta is not None:
            key = (plan_meta["plan"], plan_meta["plan_round"])
            mine = [s for s in mine if (s.meta.get("plan"), s.meta.get("plan_round")) == key]
        same = [s for s in mine if plan_meta is not None or s.script_sha256 == script.sha256]
        if not new and same:
            row = same[-1]
            done = session_coverage(cat, row).items_done(qc_pending_ok=True)
            question = (
                f"Resume session {row.session_id} started {row.started_utc[:19]} ({done} of"
                f" {len(row.items)} items accepted)?"
            )
            if not confirm(question):
                raise BoothError("not resumed; give --new to start a new session for this subject and round")
            sessions.resume_session(row.session_id)
            return row
        if mine and not same and not new:
            say(
                f"note: session {mine[-1].session_id} of this subject and round is open with another version of"
                " the script; starting a new session"
            )
    info = sessions.start_session(
        kind="booth",
        subject_id=subject_id,
        script=script.name,
        round_no=round_no,
        meta={
            "started_by": "fieldcap booth",
            "script_sha256": script.sha256,
            "items": [i.to_dict() for i in script.items],
            "mics": [{"mic": m.mic, "stream": m.stream, "channel": m.channel} for m in station.mics],
            **(plan_meta or {}),
        },
    )
    with station.catalog() as cat:
        return BoothSessionRow.from_row(cat.sessions.session(info.session_id))


class Booth:
    """One sitting: the items to record, where we are, and what happened to the current take."""

    def __init__(
        self,
        station: Station,
        session: BoothSessionRow,
        items: list[PromptItem],
        *,
        countdown_s: int = 3,
        mic_test: bool = True,
        rerecord: bool = False,
        instant_qc: InstantQc | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not items:
            raise BoothError("no items to record")
        self.station = station
        self.session = session
        self.items = items
        self.countdown_s = max(0, countdown_s)
        self.rerecord = rerecord
        self.clock = clock
        self.qc = instant_qc or InstantQc(station.config.qc)
        self.phase = Phase.MIC_TEST if mic_test else Phase.READY
        self.index = 0
        self.message = ""
        self.notices: list[str] = []
        self.current: CheckedTake | None = None
        self.take: Take | None = None
        self.coverage: SessionCoverage | None = None
        self.newest: dict[str, TakeFacts] = {}
        self.handled: set[str] = set()  # items accepted (or skipped) in this sitting
        self.quit_after_check = False
        self._confirm: str | None = None  # a key pressed once that needs a second press
        self._paused_from = Phase.READY
        self._countdown_end = 0.0
        self._rec_start = 0.0
        self._stop_at = 0.0
        self._job: Future[CheckedTake] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="booth-take")
        self._watch: dict[str, str] = {}  # accepted take id -> item, until its full verdict is in
        self._awaiting: set[str] = set()  # take captures whose full verdict has not been seen yet
        self._awaiting_mics: set[str] = set()  # multi-channel take captures not yet screened per microphone
        self._next_poll = 0.0
        self._cat = station.catalog()
        self.station.meter.reset()
        self.refresh()
        if not rerecord:  # resume at the first item without an accepted take
            self.handled = self.coverage.done_items(qc_pending_ok=True) if self.coverage else set()
            self.index = self._next_index(-1)
            if self.index >= len(self.items):
                self.index = len(self.items) - 1
                if not mic_test:
                    self.phase = Phase.DONE

    # ------------------------------------------------------------------ what the UI shows

    @property
    def item(self) -> PromptItem:
        return self.items[min(self.index, len(self.items) - 1)]

    @property
    def finished(self) -> bool:
        return self.phase is Phase.QUIT and self._job is None

    def key_help(self) -> list[tuple[str, str]]:
        return KEYS[self.phase]

    def levels(self) -> list[ChannelLevel]:
        return self.station.meter.levels()

    def countdown_left(self) -> int:
        return max(0, int(self._countdown_end - self.clock() + 0.999))

    def recording_elapsed(self) -> float:
        return max(0.0, self.clock() - self._rec_start) if self.phase is Phase.RECORDING else 0.0

    def accepted_items(self) -> int:
        """Items the operator accepted (counting those whose full QC is still running)."""
        return self.coverage.items_done(qc_pending_ok=True) if self.coverage else 0

    def item_take(self, item_id: str | None = None) -> TakeFacts | None:
        """The newest take of an item in this session's round (from the catalog)."""
        return self.newest.get(item_id or self.item.item_id)

    def mic_test_report(self) -> dict[str, dict[str, Any]]:
        """Per mic: levels since the mic test began and whether it looks usable."""
        th = self.station.meter.thresholds
        out: dict[str, dict[str, Any]] = {}
        for mic, s in self.station.meter.summary().items():
            peak = s["peak_dbfs"]
            if not s["blocks"]:
                status = "no audio"
            elif s["clipped_blocks"]:
                status = "clipping"
            elif peak is None or peak < th.min_peak_dbfs:
                status = "waiting for speech"
            else:
                status = "ok"
            out[mic] = {**s, "status": status}
        return out

    # ------------------------------------------------------------------ input

    def key(self, key: str) -> None:
        """Handle one key ('space', 'enter', 'esc' or a character)."""
        key = key.lower()
        confirm, self._confirm = self._confirm, None
        record = key in ("space", "r")
        phase = self.phase
        if key == "q" and phase not in (Phase.RECORDING, Phase.CHECKING):
            self.phase = Phase.QUIT
        elif phase is Phase.MIC_TEST and key in ("enter", "space"):
            self._end_mic_test(confirm)
        elif phase is Phase.READY and record:
            self._countdown_or_record()
        elif phase is Phase.REVIEW and key == "a":
            self._accept(override_confirmed=confirm == "accept")
        elif phase is Phase.REVIEW and key in ("t", "r", "space"):
            self._countdown_or_record()
        elif phase in (Phase.READY, Phase.REVIEW) and key in ("s", "b", "p"):
            {"s": self._skip, "b": self._back, "p": self._pause}[key]()
        elif phase is Phase.COUNTDOWN and (record or key in ("esc", "p")):
            self.phase = Phase.READY
            self.message = "countdown cancelled"
        elif phase is Phase.RECORDING and (record or key == "q"):
            self.quit_after_check = key == "q"
            self._stop(abort=key == "q")
        elif phase is Phase.CHECKING and key == "q":
            self.quit_after_check = True
            self.message = "quitting once the take is checked ..."
        elif phase is Phase.PAUSED and key == "p":
            self.phase = self._paused_from
            self.message = ""
        elif phase is Phase.DONE:
            self._key_done(key, confirm)

    def _end_mic_test(self, confirm: str | None) -> None:
        report = self.mic_test_report()
        bad = [f"{m}: {r['status']}" for m, r in report.items() if r["status"] != "ok"]
        if bad and confirm != "mic":
            self._confirm = "mic"
            self.message = f"mic test not passed ({'; '.join(bad)}); press Enter again to go on anyway"
            return
        self._cat.add_event(
            MIC_TEST_EVENT,
            "mic test " + ("passed" if not bad else f"overridden by the operator: {'; '.join(bad)}"),
            detail={"session_id": self.session.session_id, "mics": report, "passed": not bad},
        )
        self.message = ""
        self.phase = Phase.READY if not self._all_handled() else Phase.DONE

    def _key_done(self, key: str, confirm: str | None) -> None:
        if key == "n":
            index = self._next_index(-1)
            if index < len(self.items):
                self.index = index
                self._show_item()
            else:
                self.message = "every item has an accepted take"
        elif key == "b":
            self.index = len(self.items) - 1
            self._show_item()
        elif key == "e":
            if self.coverage is not None and not self.coverage.complete and confirm != "end":
                self._confirm = "end"
                self.message = (
                    f"{len(self.coverage.missing)} item x microphone cell(s) still lack an accepted take; press [e]"
                    " again to end the session anyway"
                )
                return
            complete = self.coverage is not None and self.coverage.complete
            self.station.sessions.end_session(self.session.session_id, reason="complete" if complete else "ended")
            self.phase = Phase.QUIT

    # ------------------------------------------------------------------ actions

    def _countdown_or_record(self) -> None:
        self.message = ""
        self.current = None
        if self.countdown_s:
            self.phase = Phase.COUNTDOWN
            self._countdown_end = self.clock() + self.countdown_s
        else:
            self._record()

    def _record(self) -> None:
        item = self.item
        try:
            self.take = self.station.sessions.start_take(self.session.session_id, item.item_id, prompt=item.text)
        except SessionError as exc:
            self.phase = Phase.READY
            self.message = f"cannot record: {exc}"
            return
        self.station.meter.reset()
        self._rec_start = self.clock()
        self._stop_at = self._rec_start + item.max_duration_s
        self.phase = Phase.RECORDING

    def _stop(self, *, abort: bool = False, auto: bool = False) -> None:
        take, self.take = self.take, None
        if take is None:
            return
        pressed = self.clock()
        self.phase = Phase.CHECKING
        self.message = "take aborted" if abort else ""
        profile = self.station.profile_of
        mics = {s.name: [m.mic for m in s.mics] for s in self.station.streams}
        data_dir = self.station.data_dir
        open_catalog = self.station.catalog
        qc, sessions, clock = self.qc, self.station.sessions, self.clock

        def work() -> CheckedTake:
            result = sessions.stop_take(take, abort=abort)
            checked = CheckedTake(take, result, auto_stopped=auto, committed_s=clock() - pressed)
            if result.status == "done":
                try:
                    with open_catalog() as cat:
                        for stream, ids in sorted(result.captures.items()):
                            row = cat.capture(ids[0])
                            if row is None or row["modality"] != "audio" or not row["path"]:
                                continue  # a camera's take is frames plus a summary: nothing to listen to
                            path = data_dir / row["path"]
                            checked.checks += qc.check(path, profile(stream), mics.get(stream, []))
                except Exception as exc:  # shown on screen; the agent's QC still judges the take
                    checked.check_error = f"instant QC could not run: {exc}"
            checked.latency_s = clock() - pressed
            return checked

        self._job = self._pool.submit(work)

    def _accept(self, *, override_confirmed: bool) -> None:
        cur = self.current
        if cur is None:
            return
        if cur.result.status != "done":
            self.message = f"take {cur.take.take_no} {cur.result.status}; retake it [t] or skip [s]"
            return
        verdict, source, reasons = cur.shown()
        override = verdict == "fail"
        if override and not override_confirmed:
            self._confirm = "accept"
            self.message = "QC failed: press [a] again to accept anyway (recorded as an override), or [t] to retake"
            return
        record_decision(
            self._cat,
            session_id=self.session.session_id,
            item_id=cur.take.item_id,
            round_no=cur.take.round_no,
            decision="accept",
            take_id=cur.take.take_id,
            take_no=cur.take.take_no,
            override=override,
            qc={"verdict": verdict, "source": source, "reasons": reasons},
        )
        settled = source == "full" and cur.full is not None and cur.full.judged_per_mic
        if not override and not settled:  # a later verdict (full, or per microphone) may still fail it
            self._watch[cur.take.take_id] = cur.take.item_id
        self.handled.add(cur.take.item_id)
        how = " (QC override)" if override else ""
        self.message = f"accepted take {cur.take.take_no} of {cur.take.item_id}{how}"
        self._advance()

    def _skip(self) -> None:
        item = self.item
        take = self.item_take()
        if take is None or not take.accepted:
            record_decision(
                self._cat,
                session_id=self.session.session_id,
                item_id=item.item_id,
                round_no=self.session.round_no,
                decision="skip",
            )
        self.handled.add(item.item_id)
        self.message = f"skipped {item.item_id}"
        self._advance()

    def _back(self) -> None:
        if self.index == 0:
            self.message = "this is the first item"
            return
        self.index -= 1
        self._show_item()

    def _pause(self) -> None:
        self._paused_from = self.phase
        self.phase = Phase.PAUSED

    def _show_item(self) -> None:
        self.current = None
        self.phase = Phase.READY
        self.refresh()

    def _advance(self) -> None:
        self.current = None
        self.refresh()
        index = self._next_index(self.index)
        if index >= len(self.items):
            self.phase = Phase.DONE
            missing = len(self.coverage.missing) if self.coverage else 0
            self.message = "every item has an accepted take" if missing == 0 else self.message
        else:
            self.index = index
            self.phase = Phase.READY

    def _all_handled(self) -> bool:
        return all(i.item_id in self.handled for i in self.items)

    def _next_index(self, after: int) -> int:
        """The next item not handled yet after ``after``, wrapping to the first; len(items) if none."""
        order = list(range(after + 1, len(self.items))) + list(range(after + 1))
        return next((i for i in order if self.items[i].item_id not in self.handled), len(self.items))

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Advance timers, collect a finished take, re-read the catalog now and then."""
        now = self.clock()
        if self.phase is Phase.COUNTDOWN and now >= self._countdown_end:
            self._record()
        elif self.phase is Phase.RECORDING and now >= self._stop_at:
            self._stop(auto=True)
        job = self._job
        if job is not None and job.done():
            self._job = None
            self._collect(job)
        if (self._awaiting or self._awaiting_mics) and now >= self._next_poll:
            self._poll_verdicts()

    def _poll_verdicts(self) -> None:
        """Look for the full and per-microphone verdicts of recent takes (cheap); refresh when one came."""
        self._next_poll = self.clock() + POLL_S
        found = False
        tables: tuple[tuple[set[str], Literal["verdicts", "channel_verdicts"]], ...] = (
            (self._awaiting, "verdicts"),
            (self._awaiting_mics, "channel_verdicts"),
        )
        for waiting, table in tables:
            if not waiting:
                continue
            seen = self._cat.booth.judged(waiting, table)
            waiting.difference_update(seen)
            found = found or bool(seen)
        if found:
            self.refresh()

    def _collect(self, job: Future[CheckedTake]) -> None:
        try:
            checked = job.result()
        except SessionError as exc:
            self.message = f"the take could not be stopped cleanly: {exc}"
            self.phase = Phase.QUIT if self.quit_after_check else Phase.READY
            return
        self.current = checked
        self._awaiting |= {ids[0] for ids in checked.result.captures.values() if ids}
        multi = {s.name for s in self.station.streams if len(s.mics) > 1}
        self._awaiting_mics |= {ids[0] for s, ids in checked.result.captures.items() if ids and s in multi}
        if checked.auto_stopped:
            self.message = f"stopped at the item's longest take ({self.item.max_duration_s:g} s)"
        if checked.check_error:
            self.message = checked.check_error
        self.refresh()
        self.phase = Phase.QUIT if self.quit_after_check else Phase.REVIEW

    def refresh(self) -> None:
        """Re-read coverage, the newest takes and the full verdicts from the catalog."""
        takes = session_takes(self._cat, self.session.session_id)
        self.newest = {item: t for (item, rnd), t in latest_takes(takes).items() if rnd == self.session.round_no}
        self.coverage = session_coverage(self._cat, self.session, takes=takes)
        if self.current is not None:
            by_id = {t.take_id: t for t in takes}
            self.current.full = by_id.get(self.current.take.take_id)
        for take_id, item in list(self._watch.items()):
            facts = next((t for t in takes if t.take_id == take_id), None)
            if facts is None or not facts.judged or not facts.judged_per_mic:
                continue
            del self._watch[take_id]
            by_mic = facts.verdicts_by_mic().items()
            failed = [f"{label}: {r}" for label, v in by_mic if v.verdict == "fail" for r in v.reasons]
            if failed:
                self.handled.discard(item)
                self.notices.append(
                    f"{item} take {facts.take_no}: full QC failed after it was accepted ({'; '.join(failed)});"
                    " it counts as missing until retaken"
                )

    def close(self) -> None:
        """Stop a take still recording (kept, marked aborted) and release the worker and catalog."""
        if self.take is not None:
            self._stop(abort=True)
        if self._job is not None:
            self._job.result()
            self._job = None
        self._pool.shutdown(wait=True)
        self._cat.close()

    def summary(self, cat: Catalog) -> dict[str, Any]:
        """Where the session stands, from ``cat`` (read after the agent finished QC)."""
        cov = session_coverage(cat, self.session)
        return {
            "session_id": self.session.session_id,
            "items": len(self.session.items),
            "items_accepted": cov.items_done(),
            "complete": cov.complete,
            "missing": [{"item": c.item_id, "mic": c.mic, "status": c.status} for c in cov.missing],
        }
