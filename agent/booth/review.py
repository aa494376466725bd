"""``fieldcap review``: every take of booth sessions with its QC verdict, metrics and reasons.

One row per take and microphone, so the reviewer sees which microphone failed: a take records all
its microphones together (near and mid are two channels of one capture), each channel is screened
on its own (``agent.qc``), and each row carries its microphone's verdict, reasons and metrics
beside the whole take's verdict (its worst channel's, the one that syncs). Where a take has not
been screened per microphone yet, its rows carry the whole take's verdict, marked as such
(``scope``). Superseded takes are listed too, marked, because they are kept: the reviewer sees the
whole history of an item, not just its newest take.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from agent.booth.records import BoothSessionRow, Mic, TakeFacts, mic_verdict, session_takes
from agent.catalog.db import Catalog

__all__ = ["ReviewRow", "review_rows", "review_tables"]

SHOWN_METRICS = (
    ("duration_s", "dur s", "{:.1f}"),
    ("snr_db", "SNR dB", "{:.1f}"),
    ("peak_dbfs", "peak", "{:.1f}"),
    ("rms_dbfs", "RMS", "{:.1f}"),
    ("loudness_lufs", "LUFS", "{:.1f}"),
    ("speech_s", "speech s", "{:.1f}"),
    ("clipping_ratio", "clip", "{:.4f}"),
    ("dnsmos_ovrl", "DNSMOS", "{:.2f}"),
)


@dataclass(frozen=True, slots=True)
class ReviewRow:
    session_id: str
    item_id: str
    round: int | None
    take_no: int
    take_id: str
    take_status: str
    superseded_by: str | None
    accepted: bool
    override: bool
    stream: str | None
    mic: str | None
    channel: int | None
    capture_id: str | None
    sync_state: str | None
    verdict: str | None  # this microphone's (see ``scope``)
    scope: str | None  # "microphone": its own channel's verdict; "take": the whole take's
    take_verdict: str | None  # the capture's verdict (worst channel), as synced
    profile: str | None
    reasons: tuple[str, ...]
    metrics: dict[str, Any]
    prompt: str | None

    @property
    def failed(self) -> bool:
        return self.verdict == "fail" or self.take_status in ("failed", "aborted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "item_id": self.item_id,
            "round": self.round,
            "take": self.take_no,
            "take_id": self.take_id,
            "take_status": self.take_status,
            "current": self.superseded_by is None,
            "superseded_by": self.superseded_by,
            "accepted": self.accepted,
            "override": self.override,
            "stream": self.stream,
            "mic": self.mic,
            "channel": self.channel,
            "capture_id": self.capture_id,
            "sync_state": self.sync_state,
            "verdict": self.verdict,
            "scope": self.scope,
            "take_verdict": self.take_verdict,
            "profile": self.profile,
            "reasons": list(self.reasons),
            "metrics": self.metrics,
            "prompt": self.prompt,
        }


def _mics_of(take: TakeFacts, stream: str, session_mics: tuple[Mic, ...]) -> list[Mic | None]:
    """The microphones a take's capture of ``stream`` recorded (None: one row for the stream)."""
    mics: list[Mic | None] = [m for m in session_mics if m.stream == stream]
    if not mics and take.channel_verdicts.get(stream):
        mics = [Mic(v.mic or f"{stream}:ch{c}", stream, c) for c, v in sorted(take.channel_verdicts[stream].items())]
    return mics or [None]


def _rows_of(take: TakeFacts, session_mics: tuple[Mic, ...] = ()) -> Iterable[ReviewRow]:
    pairs: list[tuple[str | None, Mic | None]] = [
        (stream, mic) for stream in sorted(take.captures) for mic in _mics_of(take, stream, session_mics)
    ] or [(None, None)]
    for stream, mic in pairs:
        whole = take.verdicts.get(stream) if stream else None
        v, scope = mic_verdict(take, mic) if mic else (whole, "take")
        yield ReviewRow(
            session_id=take.session_id,
            item_id=take.item_id,
            round=take.round_no,
            take_no=take.take_no,
            take_id=take.take_id,
            take_status=take.status,
            superseded_by=take.superseded_by,
            accepted=take.accepted,
            override=bool(take.decision and take.decision.get("override")),
            stream=stream,
            mic=mic.mic if mic else None,
            channel=mic.channel if mic else None,
            capture_id=take.captures.get(stream) if stream else None,
            sync_state=take.states.get(stream) if stream else None,
            verdict=v.verdict if v else None,
            scope=scope if v else None,
            take_verdict=whole.verdict if whole else None,
            profile=f"{v.profile} {v.profile_version}" if v else None,
            reasons=v.reasons if v else (),
            metrics=v.metrics if v else {},
            prompt=take.prompt,
        )


def review_rows(cat: Catalog, sessions: Iterable[BoothSessionRow], *, failed: bool = False) -> list[ReviewRow]:
    """Rows for every take and microphone of the sessions (only failed ones when ``failed``)."""
    rows: list[ReviewRow] = []
    for session in sessions:
        for take in session_takes(cat, session.session_id):
            rows += [r for r in _rows_of(take, session.mics) if r.failed or not failed]
    return rows


def _state(row: ReviewRow) -> str:
    parts = ["superseded" if row.superseded_by else "current"]
    if row.take_status != "done":
        parts.append(row.take_status)
    if row.accepted:
        parts.append("accepted (override)" if row.override else "accepted")
    return ", ".join(parts)


def review_tables(rows: list[ReviewRow]) -> list[Table]:
    """One rich table per session (metrics and reasons wrap, so they read in 80 columns)."""
    by_session: dict[str, list[ReviewRow]] = {}
    for r in rows:
        by_session.setdefault(r.session_id, []).append(r)
    tables = []
    style = {"pass": "green", "review": "yellow", "fail": "red"}
    for session_id, group in by_session.items():
        rounds = sorted({str(r.round) for r in group})
        table = Table(title=f"session {session_id}, round {', '.join(rounds)}", show_lines=True, title_justify="left")
        for col in ("item", "take", "state", "microphone", "QC"):
            table.add_column(col, no_wrap=col in ("take", "QC"), overflow="fold")
        table.add_column("metrics", ratio=1)
        table.add_column("reasons", ratio=2)
        for r in group:
            metrics = [
                f"{label} {fmt.format(r.metrics[key])}"
                for key, label, fmt in SHOWN_METRICS
                if r.metrics.get(key) is not None
            ]
            table.add_row(
                Text(r.item_id),
                Text(str(r.take_no)),
                Text(_state(r)),
                Text(r.mic or r.stream or "-"),
                Text(
                    (r.verdict or "pending") + (" (take)" if r.scope == "take" and r.mic else ""),
                    style=style.get(r.verdict or "", "dim"),
                ),
                Text(", ".join(metrics) or "-"),
                Text("; ".join(r.reasons) or "-"),
                style="dim" if r.superseded_by else None,
            )
        if any(r.scope == "take" and r.mic for r in group):
            table.caption = "(take): the whole take's verdict; this microphone has not been screened on its own yet"
        tables.append(table)
    return tables
