"""Sessions and takes: who, where, what was prompted, in which round — and nothing overwritten.

A session is one sitting at one station (a booth subject reading a script, or the daemon's
continuous recording); every capture made while it is open carries its id. A take is one
recording of one prompt item: a retake gets the next take number and ``supersedes`` the take it
replaces, which stays in the catalog. Subjects are never stored by name or ID: the catalog, the
outbox and the central side only ever see ``HMAC-SHA256(key, subject_id)``, with the key read
from a file (``[session] subject_key_file``, systemd credentials), and a key id so that
pseudonyms made with different keys are not confused.

This is the API the booth UI calls::

    info = sessions.start_session(kind="booth", subject_id="S-0042", script="zh-digits.tsv", round_no=1)
    take = sessions.start_take(info.session_id, "item-007", prompt="七")
    result = sessions.stop_take(take)          # waits until the take's WAVs are committed
    take = sessions.retake(info.session_id, "item-007")   # supersedes the previous take
    sessions.end_session(info.session_id)

State lives in the catalog, so a booth that crashed resumes with ``resume_session``. An ended
session can be reopened (``reopen_session``, what ``fieldcap rerecord`` does when a reviewer asks
for items again later): the takes go into the same session, superseding its older takes, so its
coverage and history stay in one place. Nothing of the first ending is lost: it moves into the
session's metadata (``reopened``, then ``reopenings`` once it ends again), a ``session_reopened``
event is recorded, and the central side receives ``start``, ``end``, ``reopen`` and ``end``
session records in turn.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.capture.clock import Clock
from agent.capture.environment import LatestReadings
from agent.catalog.db import Catalog, new_record_id
from agent.catalog.writer import CaptureContext
from agent.config import resolve_secret_path
from agent.errors import ConfigError, FieldcapError
from sync.wire import utc_now

if TYPE_CHECKING:
    from agent.capture.recorder import StreamRecorder

MIN_KEY_BYTES = 16
KEY_ID_LABEL = b"fieldcap subject key id v1"


class SessionError(FieldcapError):
    """A session or take request that cannot be carried out (says why and what to do)."""


def load_subject_key(name: str, *, config_file: str = "<config>", key: str = "session.subject_key_file") -> bytes:
    """Read the pseudonym key (relative names in ``$CREDENTIALS_DIRECTORY``); at least 16 bytes."""
    path = resolve_secret_path(config_file, key, name)
    try:
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(config_file, key, f"cannot read the subject key file {str(path)!r}: {exc.strerror}") from None
    if len(data) < MIN_KEY_BYTES:
        raise ConfigError(
            config_file,
            key,
            f"the subject key in {str(path)!r} has {len(data)} bytes; use at least {MIN_KEY_BYTES}"
            " random bytes (e.g. `head -c 32 /dev/urandom > FILE`)",
        )
    return data


def pseudonym(subject_id: str, key: bytes) -> str:
    """The subject's pseudonym: hex HMAC-SHA256 of the (stripped) ID. Same ID + key, same pseudonym."""
    if not subject_id.strip():
        raise SessionError("the subject ID is empty; give the subject's ID (it is never stored, only its pseudonym)")
    return hmac.new(key, subject_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public id of the key (an HMAC of a fixed label: reveals nothing about the key)."""
    return hmac.new(key, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    kind: str
    site: str
    station: str
    operator: str
    subject_pseudonym: str | None
    script: str | None
    round_no: int | None
    started_utc: str
    ended_utc: str | None
    environment: dict[str, Any]
    clock: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> SessionInfo:
        return cls(
            session_id=row["session_id"],
            kind=row["kind"],
            site=row["site"],
            station=row["station"],
            operator=row["operator"],
            subject_pseudonym=row["subject_pseudonym"],
            script=row["script"],
            round_no=row["round"],
            started_utc=row["started_utc"],
            ended_utc=row["ended_utc"],
            environment=json.loads(row["environment_json"] or "{}"),
            clock=json.loads(row["clock_json"] or "{}"),
        )


@dataclass
class Take:
    """A take being recorded (returned by ``start_take``, handed back to ``stop_take``)."""

    take_id: str
    session_id: str
    item_id: str
    round_no: int | None
    take_no: int
    supersedes: str | None
    streams: tuple[str, ...]
    context: CaptureContext
    t_start_mono_ns: int


@dataclass(frozen=True, slots=True)
class TakeResult:
    take_id: str
    item_id: str
    take_no: int
    status: str
    supersedes: str | None
    captures: dict[str, list[str]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    duration_s: float = 0.0


class Sessions:
    """Starts and ends sessions and takes; one per agent process (thread-safe).

    ``open_catalog`` returns a new catalog connection (used from the caller's thread);
    ``recorders`` returns the stream recorders currently running, by stream name.
    """

    def __init__(
        self,
        open_catalog: Callable[[], AbstractContextManager[Catalog]],
        clock: Clock,
        *,
        site: str,
        station: str,
        operator: str = "",
        subject_key: bytes | None = None,
        live: LatestReadings | None = None,
        recorders: Callable[[], Mapping[str, StreamRecorder]] | None = None,
    ) -> None:
        self.open_catalog = open_catalog
        self.clock = clock
        self.site = site
        self.station = station
        self.operator = operator
        self.subject_key = subject_key
        self.live = live
        self.recorders = recorders or dict
        self._lock = threading.Lock()
        self._active: list[str] = []  # open sessions of this process, newest last
        self._takes: dict[str, Take] = {}

    # ------------------------------------------------------------------ sessions

    def current(self) -> str | None:
        """The session new captures belong to: the newest one this process opened."""
        with self._lock:
            return self._active[-1] if self._active else None

    def environment(self, cat: Catalog) -> dict[str, Any]:
        """Sensor values in force now: live values over the newest committed ones."""
        env: dict[str, Any] = cat.newest_readings()
        if self.live is not None:
            for stream, fields in self.live.snapshot().items():
                env.setdefault(stream, {}).update(fields)
        return env

    def start_session(
        self,
        *,
        kind: str = "booth",
        subject_id: str | None = None,
        script: str | None = None,
        round_no: int | None = None,
        operator: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Open a session; the subject ID is turned into its pseudonym here and then forgotten."""
        pseudo = kid = None
        if subject_id is not None:
            if self.subject_key is None:
                raise SessionError(
                    "a subject ID was given but no pseudonym key is configured: set [session] subject_key_file"
                    " to a file with at least 16 random bytes"
                )
            pseudo, kid = pseudonym(subject_id, self.subject_key), key_id(self.subject_key)
        session_id = new_record_id()
        t_mono = time.monotonic_ns()
        with self.open_catalog() as cat:
            cat.sessions.add_session(
                {
                    "session_id": session_id,
                    "kind": kind,
                    "site": self.site,
                    "station": self.station,
                    "operator": self.operator if operator is None else operator,
                    "subject_pseudonym": pseudo,
                    "subject_key_id": kid,
                    "script": script,
                    "round": round_no,
                    "environment_json": json.dumps(self.environment(cat), sort_keys=True, default=str),
                    "clock_json": json.dumps(self.clock.entry_at(t_mono).health.as_dict(), sort_keys=True),
                    "started_utc": utc_now(),
                    "started_mono_ns": t_mono,
                    "meta_json": json.dumps(dict(meta or {}), sort_keys=True, default=str),
                }
            )
            row = cat.sessions.session(session_id)
        with self._lock:
            self._active.append(session_id)
        return SessionInfo.from_row(row)

    def resume_session(self, session_id: str) -> SessionInfo:
        """Reopen a session that was left open (a booth that quit or crashed)."""
        with self.open_catalog() as cat:
            row = self._row(cat, session_id)
        if row["ended_utc"] is not None:
            raise SessionError(
                f"session {session_id} ended at {row['ended_utc']}; start a new session, or reopen it to add takes"
                " (`fieldcap rerecord`)"
            )
        with self._lock:
            if session_id not in self._active:
                self._active.append(session_id)
        return SessionInfo.from_row(row)

    def reopen_session(self, session_id: str, *, by: str, reason: str = "") -> SessionInfo:
        """Open an ended session again so that takes can be added to it (an open one is just resumed).

        The previous end (time, reason, environment, clock health) is kept in ``meta["reopened"]``
        and in a ``session_reopened`` event; ``end_session`` later moves it to ``meta["reopenings"]``.
        """
        t_mono = time.monotonic_ns()
        with self.open_catalog() as cat:
            row = self._row(cat, session_id)
            if row["ended_utc"] is not None:
                row = self._reopen(cat, row, t_mono, by=by, reason=reason)
        with self._lock:
            if session_id not in self._active:
                self._active.append(session_id)
        return SessionInfo.from_row(row)

    def _reopen(self, cat: Catalog, row: Any, t_mono: int, *, by: str, reason: str) -> Any:
        """Clear the end fields, keeping them in the metadata and an event; return the new row."""
        session_id = row["session_id"]
        meta = json.loads(row["meta_json"] or "{}")
        previous_end = {
            "ended_utc": row["ended_utc"],
            "ended_mono_ns": row["ended_mono_ns"],
            "end_reason": meta.pop("end_reason", None),
            "environment_end": json.loads(row["environment_end_json"] or "null"),
            "clock_end": json.loads(row["clock_end_json"] or "null"),
        }
        now = utc_now()
        meta["reopened"] = {
            "reopened_utc": now,
            "reopened_mono_ns": t_mono,
            "by": by,
            "reason": reason,
            "clock": self.clock.entry_at(t_mono).health.as_dict(),
            "previous_end": previous_end,
        }
        cat.sessions.reopen_session_row(
            session_id,
            {
                "ended_utc": None,
                "ended_mono_ns": None,
                "environment_end_json": None,
                "clock_end_json": None,
                "meta_json": json.dumps(meta, sort_keys=True, default=str),
            },
            event="session_reopened",
            message=f"session {session_id} (ended {row['ended_utc']}) reopened by {by}"
            + (f": {reason}" if reason else ""),
            detail={"session_id": session_id, "by": by, "reason": reason, "previous_end": previous_end},
        )
        return cat.sessions.session(session_id)

    def end_session(self, session_id: str, *, reason: str = "ended") -> SessionInfo:
        """Close a session, recording the environment and clock health at its end."""
        with self._lock:
            recording = [t.take_id for t in self._takes.values() if t.session_id == session_id]
        if recording:
            raise SessionError(f"session {session_id} still has a take recording ({recording[0]}); stop it first")
        t_mono = time.monotonic_ns()
        with self.open_catalog() as cat:
            row = self._row(cat, session_id)
            if row["ended_utc"] is None:
                meta = json.loads(row["meta_json"] or "{}")
                meta["end_reason"] = reason
                now = utc_now()
                if "reopened" in meta:  # ending a reopened session: its earlier life goes to the history
                    meta.setdefault("reopenings", []).append({**meta.pop("reopened"), "ended_again_utc": now})
                cat.sessions.end_session_row(
                    session_id,
                    {
                        "ended_utc": now,
                        "ended_mono_ns": t_mono,
                        "environment_end_json": json.dumps(self.environment(cat), sort_keys=True, default=str),
                        "clock_end_json": json.dumps(self.clock.entry_at(t_mono).health.as_dict(), sort_keys=True),
                        "meta_json": json.dumps(meta, sort_keys=True, default=str),
                    },
                )
            row = cat.sessions.session(session_id)
        with self._lock:
            if session_id in self._active:
                self._active.remove(session_id)
        return SessionInfo.from_row(row)

    @staticmethod
    def _row(cat: Catalog, session_id: str) -> Any:
        row = cat.sessions.session(session_id)
        if row is None:
            raise SessionError(f"no session {session_id!r} in the catalog {cat.path}")
        return row

    # ------------------------------------------------------------------ takes

    def _take_streams(self, streams: Sequence[str] | None) -> dict[str, StreamRecorder]:
        running = {n: r for n, r in self.recorders().items() if r.policy.policy == "take"}
        if streams is None:
            chosen = running
        else:
            missing = [s for s in streams if s not in running]
            if missing:
                raise SessionError(
                    f"stream(s) {', '.join(missing)} are not recording with policy 'take'"
                    f" (take streams running: {', '.join(sorted(running)) or 'none'})"
                )
            chosen = {s: running[s] for s in streams}
        if not chosen:
            raise SessionError(
                "no stream is recording with policy 'take': set [capture.NAME] policy = 'take' for the booth"
                " microphones, and check that the devices are open"
            )
        return chosen

    def start_take(
        self,
        session_id: str,
        item_id: str,
        *,
        prompt: str | None = None,
        round_no: int | None = None,
        streams: Sequence[str] | None = None,
        require_previous: bool = False,
    ) -> Take:
        """Start recording a prompt item; an item recorded before gets a new take that supersedes it."""
        chosen = self._take_streams(streams)
        with self._lock:
            busy = [t for t in self._takes.values() if set(t.streams) & set(chosen)]
        if busy:
            raise SessionError(f"take {busy[0].take_id} ({busy[0].item_id}) is still recording; stop it first")
        t_mono = time.monotonic_ns()
        with self.open_catalog() as cat:
            session = self._row(cat, session_id)
            if session["ended_utc"] is not None:
                raise SessionError(f"session {session_id} has ended; resume or start a session first")
            rnd = session["round"] if round_no is None else round_no
            previous = cat.sessions.latest_take(session_id, item_id, rnd)
            if require_previous and previous is None:
                raise SessionError(f"item {item_id!r} has no take in round {rnd} of session {session_id} to redo")
            take_no = 1 if previous is None else int(previous["take_no"]) + 1
            supersedes = None if previous is None else str(previous["take_id"])
            superseded_captures: dict[str, str] = {}
            if previous is not None:
                for stream, ids in json.loads(previous["captures_json"] or "{}").items():
                    if ids:
                        superseded_captures[stream] = ids[0]
            take_id = new_record_id()
            ctx = CaptureContext(
                "take",
                take_id,
                session_id=session_id,
                item_id=item_id,
                take_no=take_no,
                supersedes=superseded_captures,
                meta={"round": rnd, "prompt": prompt, "supersedes_take": supersedes},
            )
            cat.sessions.add_take(
                {
                    "take_id": take_id,
                    "session_id": session_id,
                    "item_id": item_id,
                    "prompt": prompt,
                    "round": rnd,
                    "take_no": take_no,
                    "supersedes": supersedes,
                    "status": "recording",
                    "streams_json": json.dumps(sorted(chosen)),
                    "t_start_mono_ns": t_mono,
                    "t_start_utc_ns": self.clock.utc_ns(t_mono),
                    "clock_json": json.dumps(self.clock.entry_at(t_mono).health.as_dict(), sort_keys=True),
                    "created_utc": utc_now(),
                }
            )
        take = Take(take_id, session_id, item_id, rnd, take_no, supersedes, tuple(sorted(chosen)), ctx, t_mono)
        with self._lock:
            self._takes[take_id] = take
        started: list[StreamRecorder] = []
        try:
            for recorder in chosen.values():
                recorder.begin_take(ctx, t_mono)
                started.append(recorder)
        except RuntimeError as exc:
            for recorder in started:
                recorder.end_take(take_id)
            self._finish(take, "failed", time.monotonic_ns(), errors=(str(exc),))
            raise SessionError(str(exc)) from None
        return take

    def retake(self, session_id: str, item_id: str, **kwargs: Any) -> Take:
        """Record an item again; the new take supersedes the latest one (which is kept)."""
        return self.start_take(session_id, item_id, require_previous=True, **kwargs)

    def stop_take(self, take: Take | str, *, wait_s: float = 30.0, abort: bool = False) -> TakeResult:
        """Stop a take and wait (up to ``wait_s``) until its captures are committed.

        ``abort=True`` keeps the media but marks the take ``aborted`` (the operator cut it short).
        """
        take_id = take if isinstance(take, str) else take.take_id
        with self._lock:
            current = self._takes.get(take_id)
        if current is None:
            raise SessionError(f"take {take_id} is not recording in this process")
        t_stop = time.monotonic_ns()
        recorders = self.recorders()
        for stream in current.streams:
            recorder = recorders.get(stream)
            if recorder is None:
                current.context.stream_closed(stream, "the stream stopped during the take")
            else:
                recorder.end_take(take_id, t_stop)
        done = current.context.wait(wait_s)
        errors = list(current.context.errors)
        if not done:
            errors.append(f"captures not committed within {wait_s:g} s")
        missing = [s for s in current.streams if not current.context.records.get(s)]
        status = "aborted" if abort else "failed" if (errors or missing) else "done"
        errors += [f"{s}: no capture" for s in missing if not any(e.startswith(f"{s}:") for e in errors)]
        return self._finish(current, status, t_stop, errors=tuple(errors))

    def _finish(self, take: Take, status: str, t_stop: int, *, errors: tuple[str, ...]) -> TakeResult:
        captures = {s: list(ids) for s, ids in take.context.records.items()}
        with self.open_catalog() as cat:
            cat.sessions.finish_take(
                take.take_id,
                {
                    "status": status,
                    "t_stop_mono_ns": t_stop,
                    "captures_json": json.dumps(captures, sort_keys=True),
                    "ended_utc": utc_now(),
                },
            )
            if status != "done":
                cat.add_event(
                    "take_" + status,
                    f"take {take.take_no} of item {take.item_id!r} {status}"
                    + (f": {'; '.join(errors)}" if errors else ""),
                    detail={"take_id": take.take_id, "session_id": take.session_id, "errors": list(errors)},
                )
        with self._lock:
            self._takes.pop(take.take_id, None)
        return TakeResult(
            take.take_id,
            take.item_id,
            take.take_no,
            status,
            take.supersedes,
            captures,
            errors,
            round((t_stop - take.t_start_mono_ns) / 1e9, 3),
        )

    def takes(self, session_id: str, item_id: str | None = None) -> list[dict[str, Any]]:
        """Every take of a session (superseded ones included), oldest first."""
        with self.open_catalog() as cat:
            rows = cat.sessions.takes(session_id, item_id)
        out = []
        for row in rows:
            d = dict(row)
            for key in ("streams_json", "captures_json", "clock_json"):
                d[key.removesuffix("_json")] = json.loads(d.pop(key) or "null")
            out.append(d)
        return out
