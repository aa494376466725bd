"""The catalog's numbers for status, metrics and the demo's summary: read-only, indexed queries.

They run every few seconds on a catalog that grows for months, so they use indexed columns only
(the QC totals, a full scan, only when asked). ``read_numbers`` opens the catalog read-only, for
``fieldcap status`` without a running daemon.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

ALERT_KINDS = ("media_paused", "stream_failed", "loop_stalled", "config_rejected", "eviction", "capture_refused")


def catalog_numbers(conn: sqlite3.Connection, *, with_qc: bool) -> dict[str, Any]:
    """Outbox backlog, last receipt, recent alerts (and QC totals, a full scan, when asked)."""
    records = conn.execute("SELECT COUNT(*) FROM outbox WHERE record_state IN ('pending', 'sent')").fetchone()[0]
    rejected = conn.execute("SELECT COUNT(*) FROM outbox WHERE record_state = 'rejected'").fetchone()[0]
    size = conn.execute(
        "SELECT COALESCE(SUM(s), 0) FROM (SELECT MAX(blob_size) AS s FROM outbox"
        " WHERE blob_state IN ('pending', 'sent') GROUP BY blob_sha256)"
    ).fetchone()[0]
    row = conn.execute("SELECT value FROM state WHERE key = 'last_receipt_utc'").fetchone()
    marks = ",".join("?" * len(ALERT_KINDS))
    alerts = [
        {"kind": r[0], "stream": r[1], "count": r[2], "message": r[3], "t_utc_ns": r[4]}
        for r in conn.execute(
            f"SELECT kind, stream, count, message, t_utc_ns FROM events WHERE kind IN ({marks})"
            " ORDER BY t_utc_ns DESC LIMIT 5",
            ALERT_KINDS,
        )
    ]
    out: dict[str, Any] = {
        "outbox": {"records": int(records), "bytes": int(size), "rejected": int(rejected)},
        "last_receipt_utc": None if row is None else str(row[0]),
        "recent_alerts": alerts,
    }
    if with_qc:
        out["qc"] = qc_totals(conn)
    return out


def qc_totals(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Verdict counts and pass rate per QC profile."""
    totals: dict[str, dict[str, Any]] = {}
    for profile, verdict, n in conn.execute("SELECT profile, verdict, COUNT(*) FROM verdicts GROUP BY 1, 2"):
        totals.setdefault(profile, {"pass": 0, "fail": 0, "review": 0})[verdict] = int(n)
    for counts in totals.values():
        pass_rate(counts)
    return totals


def pass_rate(counts: dict[str, Any]) -> None:
    total = counts["pass"] + counts["fail"] + counts["review"]
    counts["pass_rate"] = round(counts["pass"] / total, 4) if total else None


def read_numbers(catalog: Path) -> dict[str, Any]:
    """``catalog_numbers`` with QC totals, from a read-only connection (no daemon needed)."""
    conn = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10)
    try:
        return catalog_numbers(conn, with_qc=True)
    finally:
        conn.close()


def event_totals(conn: sqlite3.Connection) -> dict[str, int]:
    """How many of each event kind (drops, overflows, evictions ...) the catalog holds."""
    return {str(kind): int(n) for kind, n in conn.execute("SELECT kind, SUM(count) FROM events GROUP BY kind")}
