"""Start-up recovery: make the media tree and the catalog agree after a crash.

The write order (file fsynced and linked, then the catalog row committed) means a crash can leave
(1) a hidden ``.part`` file from a write in progress, (2) a complete file whose row was never
committed, or (3) an audio file that was being streamed (a ``.part`` with a JSON sidecar).
Streamed audio is *salvaged*: cut to whole frames, its WAV header rewritten to the real length,
linked to its final name and committed like any capture, with a ``salvage`` event saying how much
was kept. Anything else is not deleted: it is moved to ``lost+found/`` and recorded as a ``loss``
event, so an operator can see exactly what a crash cost. A row whose file is missing is recorded
too. Takes left recording become ``failed`` and the daemon's continuous sessions are closed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.catalog.db import Catalog
from agent.catalog.media import final_name_of, leftover_parts
from agent.catalog.wav_part import boot_id, leftover_sidecars, part_of_sidecar, salvage_part
from sync.files import fsync_dir, sha256_file
from sync.outbox import BlobRef
from sync.wire import utc_now

log = logging.getLogger("fieldcap.recovery")


@dataclass
class RecoveryReport:
    partial: int = 0  # interrupted writes parked in lost+found
    orphan: int = 0  # complete files never committed, parked
    missing: int = 0  # rows whose file is gone
    salvaged: int = 0  # streamed audio files salvaged and committed
    unsalvageable: int = 0  # streamed audio parts that could not be salvaged (parked, loss event)
    finished: int = 0  # streamed files already committed whose cleanup was interrupted
    takes_failed: int = 0
    sessions_closed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _park(data_dir: Path, path: Path) -> Path:
    target = data_dir / "lost+found" / path.relative_to(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    return target


def _salvage_one(cat: Catalog, data_dir: Path, sidecar: Path, report: RecoveryReport) -> None:
    part = part_of_sidecar(sidecar)
    try:
        info: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        final = part.with_name(str(info["final"]))
        if final.parent != part.parent:
            raise ValueError(f"sidecar names a file outside its folder: {info['final']!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        info, final = {}, None
        reason = f"unreadable sidecar: {exc}"
    else:
        reason = ""
    if final is not None:
        rel = str(final.relative_to(data_dir))
        if cat.conn.execute("SELECT 1 FROM captures WHERE path = ?", (rel,)).fetchone():
            part.unlink(missing_ok=True)  # committed; only the cleanup was interrupted
            sidecar.unlink()
            report.finished += 1
            return
    if not part.exists():
        sidecar.unlink()  # crashed before the first byte of audio existed: nothing was captured
        return
    frames = 0
    if final is not None:
        try:
            fmt, frames = salvage_part(part)
        except (OSError, ValueError) as exc:
            reason = f"cannot salvage: {exc}"
        else:
            if frames == 0:
                reason = "the crash came before any audio was written"
            elif final.exists() and final.stat().st_ino != part.stat().st_ino:
                reason = f"{final.name} already exists and is another file"
    if reason:
        parked = _park(data_dir, part)
        side = _park(data_dir, sidecar)
        report.unsalvageable += 1
        cat.add_event(
            "loss",
            f"an audio file being recorded was interrupted by a crash and could not be salvaged ({reason});"
            f" kept at {parked}",
            stream=info.get("stream"),
            detail={"path": str(parked), "sidecar": str(side), "reason": reason, "frames": frames},
        )
        return
    assert final is not None
    if not final.exists():
        os.link(part, final)
        fsync_dir(final.parent)
    sha, size = sha256_file(final)
    rate = int(fmt.sample_rate)
    t_start = int(info["t_start_mono_ns"])
    same_boot = info.get("boot_id") is not None and info.get("boot_id") == boot_id()
    salvage = {
        "reason": "crash",
        "frames": frames,
        "seconds": round(frames / rate, 3),
        "same_boot": same_boot,
        "recovered_utc": utc_now(),
    }
    meta = {
        "sample_rate": rate,
        "channels": fmt.channels,
        "frames": frames,
        "sample_index_first": info.get("sample_index_first"),
        "clock": info.get("clock") or {},
        "clock_points": [[info["sample_index_first"], t_start]] if info.get("sample_index_first") is not None else [],
        "salvaged": salvage,
    }
    context = info.get("context") or {}
    if context:
        meta[str(context.get("kind"))] = context.get("id")
    session = info.get("session_id")
    if session is not None and cat.sessions.session(session) is None:
        meta["session_id_unknown"], session = session, None
    supersedes = info.get("supersedes")
    if (
        supersedes is not None
        and not cat.conn.execute("SELECT 1 FROM captures WHERE record_id = ?", (supersedes,)).fetchone()
    ):
        meta["supersedes_unknown"], supersedes = supersedes, None
    record_id = cat.add_capture(
        stream=str(info["stream"]),
        kind=str(info.get("kind") or "segment"),
        modality="audio",
        t_start_mono_ns=t_start,
        t_end_mono_ns=t_start + round(frames * 1e9 / rate),
        t_start_utc_ns=int(info["t_start_utc_ns"]),
        seq_first=int(info.get("seq_first") or 0),
        seq_last=int(info.get("seq_first") or 0),
        media=BlobRef(sha, size, final, "audio/wav"),
        media_rel=str(final.relative_to(data_dir)),
        meta=meta,
        session_id=session,
        item_id=info.get("item_id"),
        take=info.get("take"),
        supersedes=supersedes,
    )
    part.unlink()
    sidecar.unlink()
    report.salvaged += 1
    cat.add_event(
        "salvage",
        f"{info['stream']}: audio interrupted by a crash salvaged as {final.name} ({salvage['seconds']} s);"
        " the blocks not yet written when it crashed are lost",
        stream=str(info["stream"]),
        detail={"capture": record_id, "path": str(final.relative_to(data_dir)), **salvage},
    )


def _close_interrupted(cat: Catalog, report: RecoveryReport) -> None:
    """Takes that were recording become ``failed``; the daemon's continuous sessions are closed."""
    for row in cat.conn.execute("SELECT take_id, item_id, session_id FROM takes WHERE status = 'recording'").fetchall():
        cat.sessions.finish_take(row["take_id"], {"status": "failed", "ended_utc": utc_now()})
        cat.add_event(
            "take_failed",
            f"take of item {row['item_id']!r} was interrupted by a crash; record it again",
            detail={"take_id": row["take_id"], "session_id": row["session_id"]},
        )
        report.takes_failed += 1
    for row in cat.sessions.open_sessions("continuous"):
        last = cat.conn.execute(
            "SELECT MAX(t_end_mono_ns) FROM captures WHERE session_id = ?", (row["session_id"],)
        ).fetchone()[0]
        meta = json.loads(row["meta_json"] or "{}")
        meta["end_reason"] = "crash (closed at the next start; ended_mono_ns is its last capture)"
        cat.sessions.end_session_row(
            row["session_id"],
            {"ended_utc": utc_now(), "ended_mono_ns": last, "meta_json": json.dumps(meta, sort_keys=True)},
        )
        report.sessions_closed += 1


def recover_report(cat: Catalog, data_dir: Path) -> RecoveryReport:
    """Find, salvage and record what a crash left behind."""
    media = data_dir / "media"
    report = RecoveryReport()
    for sidecar in leftover_sidecars(media):
        _salvage_one(cat, data_dir, sidecar, report)
    for part in leftover_parts(media):
        final = final_name_of(part)
        if final is not None and final.exists() and final.stat().st_ino == part.stat().st_ino:
            part.unlink()  # crash between link and unlink: the file is complete under its name
            continue
        parked = _park(data_dir, part)
        report.partial += 1
        cat.add_event(
            "loss",
            f"a media write was interrupted by a crash; partial file kept at {parked}",
            detail={"path": str(parked), "size": parked.stat().st_size},
        )
    known = {row[0] for row in cat.conn.execute("SELECT path FROM captures WHERE path IS NOT NULL")}
    if media.exists():
        for path in sorted(p for p in media.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rel = str(path.relative_to(data_dir))
            if rel not in known:
                parked = _park(data_dir, path)
                report.orphan += 1
                cat.add_event(
                    "loss",
                    f"media written but never committed (crash before commit); kept at {parked}",
                    detail={"path": str(parked)},
                )
    for (rel,) in cat.conn.execute(
        "SELECT path FROM captures WHERE path IS NOT NULL AND media_deleted_utc IS NULL"
    ).fetchall():
        if not (data_dir / rel).exists():
            report.missing += 1
            cat.add_event("loss", f"catalog row points at missing media {rel}", detail={"path": rel})
            with cat.transaction() as conn:  # reported once, not at every start
                conn.execute("UPDATE captures SET media_deleted_utc = 'missing' WHERE path = ?", (rel,))
    _close_interrupted(cat, report)
    if any(report.as_dict().values()):
        log.warning("recovery after an unclean stop: %s", report.as_dict())
    return report


def recover(cat: Catalog, data_dir: Path) -> dict[str, int]:
    """Recover after a crash; return the counts of partial, orphan and missing media."""
    report = recover_report(cat, data_dir)
    return {"partial": report.partial, "orphan": report.orphan, "missing": report.missing}
