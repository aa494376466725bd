"""The agent's health numbers: one snapshot for ``fieldcap status``, systemd ``STATUS=`` and metrics.

The running daemon builds a snapshot (``Agent.snapshot`` plus the supervisor's own fields) and
writes it atomically to ``DATA_DIR/status.json`` every ``status_interval_s``; the metrics endpoint
serves the same dictionary. ``fieldcap status`` reads that file, so it works while the daemon runs
without talking to it; when the daemon is not running it reads the catalog (read-only) instead and
says so. The numbers come from ``agent.catalog.reports``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.catalog.reports import read_numbers

STATUS_FILE = "status.json"


def age_seconds(utc_iso: str | None) -> float | None:
    """Seconds since an ISO-8601 UTC timestamp (None when unknown or unreadable)."""
    if not utc_iso:
        return None
    try:
        then = datetime.fromisoformat(utc_iso)
    except ValueError:
        return None
    return round(max(0.0, time.time() - then.timestamp()), 3)


# ---------------------------------------------------------------------------- judging a snapshot


def problems_of(snap: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What makes the agent degraded (problems) and what an operator should know (warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    for name, s in snap.get("streams", {}).items():
        if s["state"] in ("failed", "restarting"):
            problems.append(f"{name} {s['state']}: {s.get('last_error') or 'no error text'}")
    disk = snap.get("disk") or {}
    if disk.get("media_paused"):
        problems.append(
            f"media paused: disk {disk['used_pct']:.1f}% full with only unsynced media"
            f" (high watermark {disk['high_watermark_pct']:g}%)"
        )
    backlog = snap.get("qc_backlog") or {}
    if backlog.get("behind"):
        problems.append(
            f"QC behind: {backlog['captures']}{'+' if backlog.get('capped') else ''} capture(s) waiting, oldest"
            f" {backlog['oldest_age_s']:.0f} s (limit {backlog['max_age_s']:g} s)"
            + ("; screening a sample, the rest marked unscreened" if backlog.get("policy") == "sample" else "")
        )
    for name, loop in snap.get("loops", {}).items():
        if loop.get("stalled"):
            problems.append(f"loop {name} stalled for {loop['age_s']:.0f} s")
    if snap.get("broker_connected") is False:
        warnings.append("not connected to the broker")
    if not (snap.get("clock") or {}).get("synced", True):
        warnings.append("clock not synchronised")
    if snap.get("last_reload_error"):
        warnings.append(f"last reload rejected: {snap['last_reload_error']}")
    return problems, warnings


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def summary_line(snap: dict[str, Any]) -> str:
    """One line for systemd's ``STATUS=``: health, streams, outbox, last receipt, disk, problems."""
    streams = snap.get("streams", {})
    up = sum(1 for s in streams.values() if s["state"] == "running")
    outbox = snap.get("outbox") or {}
    disk = snap.get("disk") or {}
    problems, _ = problems_of(snap)
    head = "degraded" if problems else snap.get("state", "running")
    parts = [
        f"{up}/{len(streams)} streams up",
        f"outbox {outbox.get('records', 0)} rec / {_bytes(outbox.get('bytes', 0))}",
        f"last receipt {_age(snap.get('last_receipt_age_s'))}",
        f"disk {disk.get('used_pct', 0):.0f}% used",
    ]
    line = f"{head}: " + ", ".join(parts)
    if problems:
        line += " | " + "; ".join(problems)
    return line


def render_text(snap: dict[str, Any]) -> str:
    """The human form of ``fieldcap status``."""
    lines = []
    running = snap.get("running")
    if running:
        lines.append(
            f"agent {snap.get('device_id')}: {snap.get('state')} (pid {snap.get('pid')}, up "
            f"{snap.get('uptime_s', 0):.0f} s, status written {_age(snap.get('status_age_s'))})"
        )
    else:
        lines.append(f"agent {snap.get('device_id')}: not running ({snap.get('why_not_running')})")
    problems, warnings = problems_of(snap) if running else ([], [])
    lines.append(f"health: {'degraded' if problems else 'ok' if running else 'unknown'}")
    lines.extend(f"  problem: {p}" for p in problems)
    lines.extend(f"  warning: {w}" for w in warnings)
    streams = snap.get("streams") or {}
    if streams:
        lines.append("streams:")
        for name, s in streams.items():
            dropped = sum((s.get("dropped") or {}).values())
            lines.append(
                f"  {name:<16} {s['state']:<10} samples {s.get('samples', 0):>9}  dropped {dropped:>6}"
                f"  restarts {s.get('restarts', 0):>3}" + (f"  ({s['last_error']})" if s.get("last_error") else "")
            )
    for profile, q in (snap.get("qc") or {}).items():
        rate = q.get("pass_rate")
        lines.append(
            f"qc {profile}: pass {q['pass']} fail {q['fail']} review {q['review']}"
            + (f" (pass rate {rate:.0%})" if rate is not None else "")
        )
    backlog = snap.get("qc_backlog") or {}
    if backlog:
        age = backlog.get("oldest_age_s")
        lines.append(
            f"qc backlog: {backlog.get('captures', 0)}{'+' if backlog.get('capped') else ''} waiting"
            + (f", oldest {age:.0f} s" if age is not None else "")
            + (f"; {backlog['unscreened']} marked unscreened" if backlog.get("unscreened") else "")
        )
    outbox = snap.get("outbox") or {}
    lines.append(
        f"outbox: {outbox.get('records', 0)} records, {_bytes(outbox.get('bytes', 0))} of media unconfirmed"
        f"; {outbox.get('rejected', 0)} rejected"
    )
    lines.append(
        f"last receipt: {_age(snap.get('last_receipt_age_s'))}"
        + (
            ""
            if snap.get("broker_connected") is None
            else f"; broker {'connected' if snap['broker_connected'] else 'disconnected'}"
        )
    )
    disk = snap.get("disk") or {}
    if disk:
        lines.append(
            f"disk {disk['path']}: {disk['used_pct']:.1f}% used, {_bytes(disk['free_bytes'])} free"
            f" (watermarks {disk.get('low_watermark_pct', '?')}/{disk.get('high_watermark_pct', '?')}%)"
            + ("; MEDIA PAUSED" if disk.get("media_paused") else "")
        )
    clock = snap.get("clock") or {}
    if clock:
        lines.append(
            f"clock: {'synchronised' if clock.get('synced') else 'NOT synchronised'}"
            f" (maxerror {clock.get('maxerror_us')} us)"
        )
    if snap.get("metrics_url"):
        lines.append(f"metrics: {snap['metrics_url']}")
    for a in snap.get("recent_alerts") or []:
        lines.append(f"  recent {a['kind']}: {a['message']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the status file


def write_status(data_dir: Path, snap: dict[str, Any]) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    final = data_dir / STATUS_FILE
    tmp = final.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(snap, default=str, sort_keys=True))
    tmp.chmod(0o640)
    tmp.replace(final)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(data_dir: Path, *, device_id: str, stale_after_s: float = 60.0) -> dict[str, Any]:
    """The daemon's snapshot if it runs; else the catalog's numbers, with ``running`` false and why."""
    path = data_dir / STATUS_FILE
    snap: dict[str, Any] = {}
    why = "no status file: the agent has not run with this data directory"
    try:
        snap = json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        why = f"cannot read {path}: {exc}"
    if snap:
        age = age_seconds(snap.get("written_utc"))
        snap["status_age_s"] = age
        pid = int(snap.get("pid") or 0)
        if snap.get("state") == "stopped":
            why = f"stopped {_age(age)}"
        elif not pid or not _pid_alive(pid):
            why = f"pid {pid} is gone (the agent died {_age(age)}; see the journal)"
        elif age is None or age > stale_after_s:
            why = f"status file not updated for {_age(age)} (the agent may be hung)"
        else:
            snap["running"] = True
            return snap
    cold = cold_numbers(data_dir)
    disk_now = cold.pop("disk_now", None)
    out = {**snap, **cold, "device_id": snap.get("device_id", device_id), "running": False, "why_not_running": why}
    if disk_now is not None:  # the disk as it is now; nothing is paused without a running agent
        out["disk"] = {**(snap.get("disk") or {}), **disk_now, "media_paused": False}
    for s in (out.get("streams") or {}).values():
        s["state"] = "stopped"
    out["loops"] = {}
    return out


def cold_numbers(data_dir: Path) -> dict[str, Any]:
    """What the catalog says without the daemon (read-only), and the disk as it is now."""
    from agent.ops.disk import disk_usage

    out: dict[str, Any] = {}
    catalog = data_dir / "catalog.sqlite"
    if catalog.exists():
        out.update(read_numbers(catalog))
        out["last_receipt_age_s"] = age_seconds(out.get("last_receipt_utc"))
    if data_dir.exists():
        usage = disk_usage(data_dir)
        out["disk_now"] = {
            "path": usage.path,
            "total_bytes": usage.total_bytes,
            "free_bytes": usage.free_bytes,
            "used_pct": usage.used_pct,
        }
    return out
