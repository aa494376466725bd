"""Disk use as ``df`` reports it; standard library only, so ``fieldcap status`` stays fast."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DiskUsage", "disk_usage"]


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Use of a filesystem as ``df`` reports it (blocks reserved for root are not available)."""

    path: str
    total_bytes: int
    free_bytes: int
    used_pct: float

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes


def disk_usage(path: Path) -> DiskUsage:
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    capacity = used + avail
    pct = 100.0 * used / capacity if capacity else 100.0
    return DiskUsage(str(path), capacity, avail, round(pct, 3))
