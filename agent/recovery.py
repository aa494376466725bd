"""Start-up recovery: make the media tree and the catalog agree after a crash.

The write order (file fsynced and linked, then the catalog row committed) means a crash can leave
(1) a hidden ``.part`` file from a write in progress, or (2) a complete file whose row was never
committed. Neither is deleted: both are moved to ``lost+found/`` and recorded as events, so an
operator can see exactly what a crash cost. A row whose file is missing is recorded too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.catalog import Catalog
from agent.media import final_name_of, leftover_parts

log = logging.getLogger("fieldcap.recovery")


def _park(data_dir: Path, path: Path) -> Path:
    target = data_dir / "lost+found" / path.relative_to(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    return target


def recover(cat: Catalog, data_dir: Path) -> dict[str, int]:
    """Find and record what a crash left behind; return counts per kind."""
    media = data_dir / "media"
    counts = {"partial": 0, "orphan": 0, "missing": 0}
    for part in leftover_parts(media):
        final = final_name_of(part)
        if final is not None and final.exists() and final.stat().st_ino == part.stat().st_ino:
            part.unlink()  # crash between link and unlink: the file is complete under its name
            continue
        parked = _park(data_dir, part)
        counts["partial"] += 1
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
                counts["orphan"] += 1
                cat.add_event(
                    "loss",
                    f"media written but never committed (crash before commit); kept at {parked}",
                    detail={"path": str(parked)},
                )
    for (rel,) in cat.conn.execute(
        "SELECT path FROM captures WHERE path IS NOT NULL AND media_deleted_utc IS NULL"
    ).fetchall():
        if not (data_dir / rel).exists():
            counts["missing"] += 1
            cat.add_event("loss", f"catalog row points at missing media {rel}", detail={"path": rel})
            with cat.transaction() as conn:  # reported once, not at every start
                conn.execute("UPDATE captures SET media_deleted_utc = 'missing' WHERE path = ?", (rel,))
    if any(counts.values()):
        log.warning("recovery after an unclean stop: %s", counts)
    return counts
