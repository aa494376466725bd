"""``fieldcap booth``, ``review``, ``rerecord`` and ``coverage``: the booth operator's commands.

``booth`` and ``rerecord`` run the full-screen UI over the booth's own agent (see
``agent.booth.station``); ``review`` and ``coverage`` only read the local catalog, so they work
while a booth or the daemon runs. Every user mistake — a missing or unreadable script, a config
or key file that is missing, a microphone that does not open, an unknown session or item — ends
in one line saying what and where, and exit status 1.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent.cli.common import (
    DEFAULT_CONFIG,
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    UserError,
    data_dir_option,
    default_config,
    json_option,
    user_errors,
)
from agent.cli.common import config_option as _config_option
from agent.errors import FieldcapError

__all__ = ["booth_command", "coverage_command", "rerecord_command", "review_command"]

EXIT_INCOMPLETE = EXIT_DEGRADED
REREC_END = "re-recorded"  # the end reason of a session ended again after `fieldcap rerecord` reopened it

config_option = _config_option(help_text=f"Agent config file (default: $FIELDCAP_CONFIG, else {DEFAULT_CONFIG}).")
countdown_option = click.option(
    "--countdown",
    default=3,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Seconds counted down before each take.",
)
sync_wait_option = click.option(
    "--sync-wait",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait at the end for the central store to confirm the session.",
)


def _load(config_file: Path | None) -> tuple[Any, str]:
    from agent.config import check_secrets, load_config

    path = config_file or default_config()
    if config_file is None and not path.exists():
        raise UserError(f"{path}: no such config file; give --config FILE (or set $FIELDCAP_CONFIG)")
    config = load_config(path)
    check_secrets(config, str(path))
    return config, str(path)


def _catalog(config_file: Path | None, data_dir: Path | None) -> Any:
    """The local catalog of ``--data-dir`` or of the config's data directory."""
    from agent.catalog.db import Catalog
    from agent.config import load_config

    if data_dir is None:
        path = config_file or default_config()
        if config_file is None and not path.exists():
            raise UserError(f"{path}: no such config file; give --config FILE or --data-dir DIR")
        config = load_config(path)
        data_dir, device = config.agent.data_dir, config.agent.device_id
    else:
        device = "local"
    file = data_dir / "catalog.sqlite"
    if not file.exists():
        raise UserError(f"{file}: no catalog here yet (has a booth or the agent run with this data directory?)")
    return Catalog(file, device)


def _guarded(run: Callable[[], int | None]) -> None:
    """Run a command body; user errors become one line and exit 1."""
    try:
        with user_errors():
            code = run()
    except KeyboardInterrupt:
        click.echo("interrupted; what was committed stays in the catalog and its outbox", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if code:
        sys.exit(code)


def _need_tty() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(
            "the booth UI needs an interactive terminal (stdin and stdout must be a tty); for scripted use see"
            " `fieldcap review --json` and `fieldcap coverage --json`"
        )


def _ask_subject() -> str:
    """The subject ID typed at a hidden prompt, twice (a typo would file the takes under another pseudonym)."""
    value = str(click.prompt("subject ID", hide_input=True, confirmation_prompt=True)).strip()
    if not value:
        raise UserError("the subject ID is empty; type it at the prompt or give --subject ID")
    return value


def _sitting(station: Any, booth: Any, sync_wait: float, *, end_reason: str | None = None) -> int:
    """Run the UI, then stop the agent (QC finished, sync given ``sync_wait``) and say where things stand.

    ``end_reason``: end the session when the UI is done (a session ``rerecord`` reopened).
    """
    from agent.booth.ui import run_ui

    try:
        try:
            run_ui(booth)
        finally:
            try:
                booth.close()
            finally:
                if end_reason is not None:
                    _end_again(station, booth.session.session_id, end_reason)
    except BaseException:
        station.close(sync_wait_s=0.0)
        raise
    result = station.close(sync_wait_s=sync_wait, progress=click.echo)
    from agent.catalog.db import Catalog

    with Catalog(station.data_dir / "catalog.sqlite", station.config.agent.device_id) as cat:
        summary = booth.summary(cat)
    click.echo(
        f"session {summary['session_id']}: {summary['items_accepted']} of {summary['items']} items accepted"
        + (" - complete" if summary["complete"] else "")
    )
    if summary["missing"]:
        shown = sorted({m["item"] for m in summary["missing"]})
        click.echo(f"still missing: {', '.join(shown[:20])}{' ...' if len(shown) > 20 else ''}")
    records, size = result.get("backlog_records", 0), result.get("backlog_bytes", 0)
    if records:
        click.echo(
            f"{records} record(s) ({size / 1e6:.1f} MB of media) not yet confirmed by the central store; they stay"
            " in the outbox and are sent the next time the agent or a booth runs"
        )
    else:
        click.echo("everything recorded is confirmed by the central store")
    return 0


def _end_again(station: Any, session_id: str, reason: str) -> None:
    """End a session that was reopened for re-recording (it was ended before; it stays so)."""
    info = station.sessions.end_session(session_id, reason=reason)
    click.echo(f"session {session_id} ended again at {info.ended_utc[:19]}")


def _open_station(config: Any, config_file: str, notes: list[str]) -> Any:
    from agent.booth.station import Station

    for note in notes:
        click.echo(f"note: {note}")
    station = Station(config, config_file, notes=notes)
    click.echo("opening the microphones ...")
    station.open()
    return station


# ---------------------------------------------------------------------------- booth


@click.command("booth")
@click.option(
    "--script",
    "script_file",
    type=click.Path(path_type=Path),
    help="Prompt script (.tsv, .csv or .json). Without it: the collection plan the central side pushed.",
)
@click.option(
    "--subject",
    help="The subject's ID; only its pseudonym (HMAC with the key file) is stored. '-' or none: asked at a "
    "prompt (input hidden), so the ID never shows in the process list.",
)
@click.option(
    "--round",
    "round_arg",
    help="Recording round: a number with --script (default 1); under a plan its round name (default: the first"
    " with items left for this participant).",
)
@click.option("--attr", "attrs", multiple=True, help="Participant attribute NAME=VALUE of the plan (repeatable).")
@click.option("--consent-scope", help="What the participant consented to (comma-separated scopes).")
@click.option("--consent-ref", help="Reference of the signed consent document.")
@click.option("--consent-date", help="Date consent was given, YYYY-MM-DD (default: today).")
@click.option("--consent-expires", help="Date the consent expires, YYYY-MM-DD (default: none).")
@config_option
@countdown_option
@click.option(
    "--new",
    "new_session",
    is_flag=True,
    help="Start a new session even if one is open for this subject, script and round.",
)
@click.option(
    "-y", "--yes", is_flag=True, help="Do not ask: resume the open session of this subject, script and round."
)
@click.option("--no-mic-test", is_flag=True, help="Skip the mic test (e.g. when resuming a session minutes later).")
@sync_wait_option
def booth_command(
    script_file: Path | None,
    subject: str | None,
    round_arg: str | None,
    attrs: tuple[str, ...],
    consent_scope: str | None,
    consent_ref: str | None,
    consent_date: str | None,
    consent_expires: str | None,
    config_file: Path | None,
    countdown: int,
    new_session: bool,
    yes: bool,
    no_mic_test: bool,
    sync_wait: float,
) -> None:
    """Record a subject reading a prompt script, item by item, with live levels and instant QC.

    Starts with a mic test, then shows each prompt in large type; space records and stops, and
    the QC verdict with its reasons follows at once. Accept [a], retake [t], skip [s], go back
    [b], pause [p] and quit [q]. Every take is kept (a retake supersedes it); the session lives
    in the catalog, so running the same command again resumes it after a quit or a crash.

    Without --script the booth records for the collection plan the central side pushed: it enrols
    (or resumes) the participant with --attr and --consent-* (asked for when missing), refuses to
    record without valid consent, and shows the plan, site, round, items left and quota.
    """

    def run() -> int:
        import os

        from agent.booth.scripts import load_script

        os.umask(0o027)  # takes and the catalog hold participants' voices: no world access
        from agent.booth.session import Booth, open_booth_session
        from agent.booth.station import booth_config

        plan_opts = attrs or consent_scope or consent_ref or consent_date or consent_expires
        if script_file is not None and plan_opts:
            raise click.UsageError("--attr and --consent-* belong to plan sittings: leave out --script to use them")
        if script_file is not None:
            if round_arg is not None and not (round_arg.isdigit() and 1 <= int(round_arg) <= 10000):
                raise click.UsageError(f"--round {round_arg!r}: with --script the round is a number from 1 to 10000")
            script = load_script(script_file)
        config, file = _load(config_file)
        config, notes = booth_config(config, file)
        _need_tty()
        _announce_requests(config_file)
        subject_id = _ask_subject() if subject in (None, "-") else subject
        assert subject_id is not None
        plan_meta = None
        only: list[Any] | None = None
        if script_file is None:
            from agent.booth.plan_sitting import prepare

            sitting = prepare(
                config,
                file,
                subject_id,
                round_arg,
                attrs,
                (consent_scope, consent_ref, consent_date, consent_expires),
                say=click.echo,
            )
            if sitting is None:
                return 0
            script, round_no, plan_meta, only = sitting.script, sitting.round_no, sitting.meta, sitting.items
        else:
            round_no = int(round_arg or 1)
        station = _open_station(config, file, notes)
        booth = None
        try:
            confirm = (lambda _q: True) if yes else (lambda q: click.confirm(q, default=True))
            row = open_booth_session(
                station,
                script,
                subject_id,
                round_no,
                new=new_session,
                confirm=confirm,
                say=click.echo,
                plan_meta=plan_meta,
            )
            items = list(row.items) if only is None else only
            booth = Booth(station, row, items, countdown_s=countdown, mic_test=not no_mic_test)
            click.echo("loading the QC models ...")
            booth.qc.warm(station.streams[0].profile, station.streams[0].sample_rate)
        except BaseException:
            if booth is not None:
                booth.close()
            station.close(sync_wait_s=0.0)
            raise
        return _sitting(station, booth, sync_wait)

    _guarded(run)


def _announce_requests(config_file: Path | None) -> None:
    """The booth's start screen names the central side's open re-record requests, once per session."""
    from agent.catalog.command_rows import pending_rerecords

    try:
        with _catalog(config_file or default_config(), None) as cat:
            requests = pending_rerecords(cat)
    except UserError:  # no catalog yet (the first sitting on this data directory): nothing was asked
        return
    if requests:
        sessions = sorted({r.session_id for r in requests})
        click.echo(
            f"{len(requests)} re-record request(s) from the central side in session(s) {', '.join(sessions)}:"
            f" see `fieldcap rerecord --pending`, record them with `fieldcap rerecord SESSION`"
        )


# ---------------------------------------------------------------------------- rerecord


@click.command("rerecord")
@click.argument("session", required=False)
@click.argument("items", nargs=-1)
@config_option
@click.option(
    "--pending",
    is_flag=True,
    help="List the re-record requests sent by the central side that no retake has answered yet, and exit.",
)
@countdown_option
@click.option(
    "-y", "--yes", is_flag=True, help="Do not ask before re-recording items that already have an accepted take."
)
@click.option("--no-mic-test", is_flag=True, help="Skip the mic test.")
@sync_wait_option
def rerecord_command(
    session: str,
    items: tuple[str, ...],
    config_file: Path | None,
    countdown: int,
    yes: bool,
    no_mic_test: bool,
    sync_wait: float,
    pending: bool,
) -> None:
    """Record ITEMS of booth SESSION again (an id, a unique prefix, or 'latest').

    Without ITEMS, the items the central side asked to re-record in SESSION (``--pending`` lists
    those requests); each request closes when its retake is recorded.

    The prompts are shown again as the script had them; each new take supersedes the item's
    newest take, which stays in the catalog (and centrally) as a superseded version. A session
    that was ended is reopened for this (recorded as an event, its first end kept) and ended
    again when you quit.
    """

    wanted = items

    def run() -> int:
        items = wanted
        from agent.booth.coverage import session_coverage
        from agent.booth.records import BoothSessionRow, resolve_booth_session
        from agent.booth.session import Booth
        from agent.booth.station import booth_config
        from agent.catalog.command_rows import pending_rerecords

        if pending:
            with _catalog(config_file or default_config(), None) as cat:
                requests = pending_rerecords(cat)
            if not requests:
                click.echo("no re-record requests pending")
            for r in requests:
                click.echo(f"{r.session_id}  {r.item_id}  take {r.take_id}  {r.received_utc[:19]}  {r.reason}")
            return 0
        if session is None:
            raise click.UsageError("give a SESSION (and ITEMS), or --pending to list the central side's requests")
        config, file = _load(config_file)
        config, notes = booth_config(config, file)
        with _catalog(config_file or default_config(), None) as cat:
            row = resolve_booth_session(cat, session)
            cov = session_coverage(cat, row)
            if not items:
                items = tuple(
                    dict.fromkeys(r.item_id for r in pending_rerecords(cat) if r.session_id == row.session_id)
                )
                if not items:
                    raise UserError(
                        f"name the ITEMS to record again: the central side asked for none in session {row.session_id}"
                    )
        known = {i.item_id: i for i in row.items}
        unknown = [i for i in items if i not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f"; its items: {', '.join(list(known)[:10])}"
            raise UserError(f"session {row.session_id} has no item {', '.join(map(repr, unknown))}{hint}")
        covered = sorted({c.item_id for c in cov.cells if c.ok and c.item_id in items})
        if covered and not yes:
            question = (
                f"{', '.join(covered)} already {'has' if len(covered) == 1 else 'have'} an accepted take; record"
                " again (the accepted take is kept, superseded)?"
            )
            if not click.confirm(question, default=False):
                return 1
        _need_tty()
        chosen = [known[i] for i in dict.fromkeys(items)]
        # An ended session is reopened and ended again at the end; so is one that an earlier rerecord
        # reopened and then could not end (it was killed).
        end_again = row.ended_utc is not None or "reopened" in row.meta
        station = _open_station(config, file, notes)
        booth = None
        try:
            if row.ended_utc is not None:
                click.echo(
                    f"session {row.session_id} was ended at {row.ended_utc[:19]}; reopening it for these takes"
                    " (it is ended again when you quit)"
                )
            station.sessions.reopen_session(row.session_id, by="fieldcap rerecord", reason=f"items {', '.join(items)}")
            with station.catalog() as cat:
                row = BoothSessionRow.from_row(cat.sessions.session(row.session_id))
            booth = Booth(station, row, chosen, countdown_s=countdown, mic_test=not no_mic_test, rerecord=True)
            click.echo("loading the QC models ...")
            booth.qc.warm(station.streams[0].profile, station.streams[0].sample_rate)
        except BaseException:
            try:
                if booth is not None:
                    booth.close()
                if end_again and station.agent is not None:
                    with contextlib.suppress(FieldcapError):
                        station.sessions.end_session(row.session_id, reason=REREC_END)
            finally:
                station.close(sync_wait_s=0.0)
            raise
        return _sitting(station, booth, sync_wait, end_reason=REREC_END if end_again else None)

    _guarded(run)


# ---------------------------------------------------------------------------- review and coverage


def _sessions(cat: Any, session: str | None) -> list[Any]:
    from agent.booth.records import booth_sessions, resolve_booth_session

    return [resolve_booth_session(cat, session)] if session else booth_sessions(cat)


@click.command("review")
@click.option("--session", help="Only this booth session (an id, a unique prefix, or 'latest').")
@click.option("--failed", is_flag=True, help="Only takes that failed QC (or failed to record).")
@config_option
@data_dir_option
@json_option("One JSON object per take and microphone per line.")
def review_command(
    session: str | None, failed: bool, config_file: Path | None, data_dir: Path | None, as_json: bool
) -> None:
    """Booth takes with their QC verdicts, metrics and reasons, per microphone (superseded takes marked)."""

    def run() -> int:
        from agent.booth.review import review_rows, review_tables

        with _catalog(config_file, data_dir) as cat:
            rows = review_rows(cat, _sessions(cat, session), failed=failed)
        if as_json:
            for r in rows:
                click.echo(json.dumps(r.to_dict(), default=str, ensure_ascii=False))
            return 0
        if not rows:
            click.echo("no failed takes" if failed else "no takes")
            return 0
        from rich.console import Console

        console = Console()
        for table in review_tables(rows):
            console.print(table)
        return 0

    _guarded(run)


@click.command("coverage")
@click.option("--session", help="Only this booth session (an id, a unique prefix, or 'latest').")
@config_option
@data_dir_option
@json_option("One JSON object: every session with its missing cells.")
def coverage_command(session: str | None, config_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Which script item x round x microphone still lacks an accepted take.

    Exit status 0 when every cell of the sessions shown is covered, 4 when some are missing.
    """

    def run() -> int:
        from agent.booth.coverage import session_coverage

        with _catalog(config_file, data_dir) as cat:
            covs = [session_coverage(cat, s) for s in _sessions(cat, session)]
        complete = all(c.complete for c in covs)
        if as_json:
            doc = {"complete": complete, "sessions": [c.to_dict() for c in covs]}
            click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return 0 if complete else EXIT_INCOMPLETE
        if not covs:
            click.echo("no booth sessions")
            return 0
        for cov in covs:
            d = cov.to_dict()
            state = "complete" if cov.complete else f"{len(cov.missing)} cell(s) missing"
            click.echo(
                f"session {d['session_id']} (script {d['script']}, round {d['round']},"
                f" {'ended' if d['ended_utc'] else 'open'}): {d['covered']} of {d['cells']} item x microphone"
                f" cells covered - {state}"
            )
            for cell in cov.missing:
                whole = "whole take: " if cell.scope == "take" else ""
                extra = f" ({whole}{'; '.join(cell.reasons)})" if cell.reasons else ""
                take = f" take {cell.take_no}" if cell.take_no else ""
                click.echo(f"  {cell.item_id}  round {cell.round}  {cell.mic}:{take} {cell.status}{extra}")
        return 0 if complete else EXIT_INCOMPLETE

    _guarded(run)
