"""``fieldcap review``: every take of booth sessions with its QC verdict, metrics and reasons.

One row per take and stream (a take records all its microphones together; a two-channel stream's
verdict is its worse channel's). Superseded takes are listed too, marked, because they are kept:
the reviewer sees the whole history of an item, not just its newest take.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from agent.booth.records import BoothSessionRow, TakeFacts, session_takes
from agent.catalog import Catalog

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
    capture_id: str | None
    sync_state: str | None
    verdict: str | None
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
            "capture_id": self.capture_id,
            "sync_state": self.sync_state,
            "verdict": self.verdict,
            "profile": self.profile,
            "reasons": list(self.reasons),
            "metrics": self.metrics,
            "prompt": self.prompt,
        }


def _rows_of(take: TakeFacts) -> Iterable[ReviewRow]:
    streams: list[str | None] = [*sorted(take.captures)] or [None]
    for stream in streams:
        v = take.verdicts.get(stream) if stream else None
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
            capture_id=take.captures.get(stream) if stream else None,
            sync_state=take.states.get(stream) if stream else None,
            verdict=v.verdict if v else None,
            profile=f"{v.profile} {v.profile_version}" if v else None,
            reasons=v.reasons if v else (),
            metrics=v.metrics if v else {},
            prompt=take.prompt,
        )


def review_rows(cat: Catalog, sessions: Iterable[BoothSessionRow], *, failed: bool = False) -> list[ReviewRow]:
    """Rows for every take of the sessions (only failed ones when ``failed``)."""
    rows: list[ReviewRow] = []
    for session in sessions:
        for take in session_takes(cat, session.session_id):
            rows += [r for r in _rows_of(take) if r.failed or not failed]
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
        for col in ("item", "take", "state", "stream", "QC"):
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
                Text(r.stream or "-"),
                Text(r.verdict or "pending", style=style.get(r.verdict or "", "dim")),
                Text(", ".join(metrics) or "-"),
                Text("; ".join(r.reasons) or "-"),
                style="dim" if r.superseded_by else None,
            )
        tables.append(table)
    return tables
