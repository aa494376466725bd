"""Where media files live on the device, and what start-up recovery finds there.

Files are written with ``sync.files.write_atomic`` (temporary name, fsync, link, fsync dir), so
a crash leaves at most a hidden ``.*.part`` file, never a partial file under a final name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from sync.files import PART_SUFFIX

_PART_RE = re.compile(r"^\.(?P<final>.+)\.\d+" + re.escape(PART_SUFFIX) + "$")

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "audio/wav": "wav", "application/json": "json"}


def media_path(media_root: Path, stream: str, record_stem: str, media_type: str, t_utc_ns: int) -> Path:
    """``media/<stream>/<YYYYMMDD>/<stem>.<ext>``: one folder per stream and day keeps folders small."""
    day = datetime.fromtimestamp(t_utc_ns / 1e9, UTC).strftime("%Y%m%d")
    return media_root / stream / day / f"{record_stem}.{EXTENSIONS[media_type]}"


def leftover_parts(root: Path) -> list[Path]:
    """Temporary files left by a writer that died mid-file."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(f".*{PART_SUFFIX}") if p.is_file())


def final_name_of(part: Path) -> Path | None:
    """The name a temporary file would have had once complete."""
    match = _PART_RE.match(part.name)
    return part.with_name(match["final"]) if match else None
