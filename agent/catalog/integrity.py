"""Does the media tree agree with the catalog? The check behind the crash tests and soak.

Every file under ``media/`` must decode completely (WAV frames as long as its header says, JPEG /
PNG images that OpenCV can read) and hash to the sha256 of the one catalog row that points at it;
every row must point at such a file (unless retention deleted it) and have its outbox row; no
``.part`` or sidecar may remain once recovery has run; and SQLite must pass ``integrity_check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from agent.catalog.db import Catalog
from agent.catalog.wav_part import HEADER_BYTES, parse_wav_header
from sync.files import sha256_file


@dataclass
class IntegrityReport:
    files: int = 0
    rows: int = 0
    corrupt: list[str] = field(default_factory=list)  # files that do not decode or do not match their row
    dangling: list[str] = field(default_factory=list)  # rows pointing at nothing (or without outbox row)
    orphans: list[str] = field(default_factory=list)  # final-named files with no row
    leftovers: list[str] = field(default_factory=list)  # .part files / sidecars still present
    sqlite: str = "ok"

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.dangling or self.orphans or self.leftovers) and self.sqlite == "ok"


def check_media_file(path: Path) -> str | None:
    """Why a media file is not a complete, decodable file (None when it is)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".wav":
            with path.open("rb") as fh:
                fmt = parse_wav_header(fh.read(HEADER_BYTES))
            size = path.stat().st_size
            if (size - HEADER_BYTES) % fmt.block_align:
                return f"{size - HEADER_BYTES} data bytes is not a whole number of frames"
            info = sf.info(str(path))
            if info.frames != (size - HEADER_BYTES) // fmt.block_align:
                return f"header says {info.frames} frames, file holds {(size - HEADER_BYTES) // fmt.block_align}"
            sf.read(str(path), dtype="int16")
            return None
        if suffix in (".jpg", ".png"):
            data = np.fromfile(path, dtype=np.uint8)
            if suffix == ".jpg" and data[-2:].tobytes() != b"\xff\xd9":
                return "JPEG without its end marker (truncated)"
            if cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is None:
                return "OpenCV cannot decode the image"
            return None
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as exc:
        return str(exc)
    return None


def check_integrity(cat: Catalog, data_dir: Path, *, decode: bool = True) -> IntegrityReport:
    """Check every file and row; ``decode=False`` checks hashes only (faster)."""
    report = IntegrityReport()
    report.sqlite = str(cat.conn.execute("PRAGMA integrity_check").fetchone()[0])
    rows = cat.conn.execute(
        "SELECT c.record_id, c.path, c.sha256, c.size, o.record_id AS outbox FROM captures c"
        " LEFT JOIN outbox o ON o.record_id = c.record_id WHERE c.media_deleted_utc IS NULL"
    ).fetchall()
    by_path = {}
    for row in rows:
        report.rows += 1
        if row["outbox"] is None:
            report.dangling.append(f"{row['record_id']}: no outbox row")
        if row["path"] is None:
            continue
        by_path[row["path"]] = row
        path = data_dir / row["path"]
        if not path.is_file():
            report.dangling.append(f"{row['record_id']}: {row['path']} does not exist")
    media = data_dir / "media"
    for path in sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []:
        if path.name.startswith("."):
            report.leftovers.append(str(path.relative_to(data_dir)))
            continue
        report.files += 1
        rel = str(path.relative_to(data_dir))
        row = by_path.get(rel)
        if row is None:
            report.orphans.append(rel)
            continue
        sha, size = sha256_file(path)
        if sha != row["sha256"] or size != row["size"]:
            report.corrupt.append(f"{rel}: sha256/size differ from the catalog row {row['record_id']}")
            continue
        if decode and (why := check_media_file(path)) is not None:
            report.corrupt.append(f"{rel}: {why}")
    return report
