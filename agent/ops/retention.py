"""Disk quota and retention on the data directory's filesystem.

Above the high watermark, media whose capture the central side has confirmed (record receipt and
blob receipt with matching size and sha256) is deleted, lowest value first (failed QC or
superseded takes, then screened, then not yet screened; oldest first within each), until use is
back at the low watermark. The catalog row stays, with ``media_deleted_utc`` set. Unsynced media is
never a candidate. If eviction cannot get below the high watermark, only unsynced data is left:
new media is refused (the writer asks ``media_allowed`` before each file) while catalog rows,
sensor readings, verdicts and events keep flowing, an alert event is written and the
``media_paused`` metric goes to 1. It resumes by itself once use drops below the high watermark
(receipts arrived and eviction ran, or someone freed space).

Every eviction and every refused capture is an ``events`` row, and the event is committed before
the files go: a crash can leave an event for files still on disk (evicted again later), never a
deletion without its event. Deletions are journalled in the catalog's ``state`` table and
finished at the next start.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.catalog.db import Catalog
from agent.config import StorageSettings
from agent.errors import CatalogError
from agent.ops.disk import DiskUsage, disk_usage
from sync.wire import utc_now

log = logging.getLogger("fieldcap.retention")

PENDING_KEY = "retention_pending"
BATCH = 200


@dataclass
class _Refused:
    count: int = 0
    kinds: set[str] = field(default_factory=set)
    first_mono_ns: int = 0
    last_mono_ns: int = 0
    seq_first: int = 0
    seq_last: int = 0


class DiskGuard:
    """Evicts confirmed media between the watermarks and refuses media when only unsynced data is left.

    Thread-safe: the writer calls ``media_allowed`` before each file, the retention loop calls
    ``check`` every ``check_interval_s``; both share one catalog connection under a lock.
    """

    def __init__(
        self,
        catalog_path: Path,
        device_id: str,
        settings: StorageSettings,
        *,
        synchronous: Literal["full", "normal"] = "full",
        evict_confirmed: bool = True,
    ) -> None:
        """``evict_confirmed`` False (a device that cannot verify its receipts) never deletes media:
        a forged receipt could have confirmed it; above the high watermark media then pauses."""
        self.data_dir = catalog_path.parent
        self.evict_confirmed = evict_confirmed
        self.settings = settings
        self._lock = threading.RLock()
        self._cat = Catalog(catalog_path, device_id, synchronous=synchronous)
        self.paused = False
        self.paused_since: str | None = None
        self.evicted_files = 0
        self.evicted_bytes = 0
        self.refused_total: dict[str, int] = {}
        self._refused: dict[str, _Refused] = {}
        self._refused_in_pause = 0
        self.last_usage = disk_usage(self.data_dir)
        self._finish_pending()

    # ------------------------------------------------------------------ public

    def update(self, settings: StorageSettings) -> None:
        """New watermarks (config reload); applied at the next check."""
        with self._lock:
            self.settings = settings

    def media_allowed(self, stream: str, kind: str, t_mono_ns: int, seq: int) -> bool:
        """The writer's hook: may media of ``stream`` be written now? A refusal is recorded (as an event).

        ``kind`` (frame, segment, ...), ``t_mono_ns`` and ``seq`` say what was refused.
        """
        with self._lock:
            if not self.paused:
                usage = disk_usage(self.data_dir)
                self.last_usage = usage
                if usage.used_pct < self.settings.high_watermark_pct:
                    return True
                self._enforce(usage)
                if not self.paused:
                    return True
            self._note_refused(stream, kind, t_mono_ns, seq)
            return False

    def check(self) -> DiskUsage:
        """Evict, pause or resume as the disk requires, and record pending refusals."""
        with self._lock:
            usage = self._enforce(disk_usage(self.data_dir))
            self._flush_refused()
            return usage

    def close(self) -> None:
        with self._lock:
            self._flush_refused()
            self._cat.close()

    def stats(self) -> dict[str, Any]:
        """Numbers for status and metrics (the usage is measured now)."""
        usage = disk_usage(self.data_dir)
        with self._lock:
            return {
                "path": str(self.data_dir),
                "total_bytes": usage.total_bytes,
                "free_bytes": usage.free_bytes,
                "used_pct": usage.used_pct,
                "high_watermark_pct": self.settings.high_watermark_pct,
                "low_watermark_pct": self.settings.low_watermark_pct,
                "media_paused": self.paused,
                "paused_since_utc": self.paused_since,
                "evicted_files": self.evicted_files,
                "evicted_bytes": self.evicted_bytes,
                "refused": dict(self.refused_total),
            }

    # ------------------------------------------------------------------ policy

    def _enforce(self, usage: DiskUsage) -> DiskUsage:
        high = self.settings.high_watermark_pct
        if usage.used_pct >= high and self.evict_confirmed:
            usage = self._evict(usage)
        self.last_usage = usage
        if usage.used_pct >= high and not self.paused:
            self._pause(usage)
        elif usage.used_pct < high and self.paused:
            self._resume(usage)
        return usage

    def _pause(self, usage: DiskUsage) -> None:
        self.paused_since = utc_now()
        self._refused_in_pause = 0
        files, size = self._cat.media.unsynced()
        why = (
            f"holds no confirmed media to evict; {files} unsynced file(s) ({size} bytes) wait for central receipts"
            if self.evict_confirmed
            else "eviction is off because sync.receipt_public_key is not set (receipts cannot be verified, so "
            f"no media is deleted on their word); {files} unsynced file(s) ({size} bytes)"
        )
        message = (
            f"media capture paused: {usage.path} is {usage.used_pct:.1f}% full (high watermark "
            f"{self.settings.high_watermark_pct:g}%) and {why}. New media is refused until use drops below "
            "the high watermark; sensor readings and records continue. Check the broker connection or free space."
        )
        log.error("%s", message, extra={"event": "media_paused"})
        self._event(
            "media_paused",
            message,
            detail={
                "used_pct": usage.used_pct,
                "free_bytes": usage.free_bytes,
                "unsynced_files": files,
                "unsynced_bytes": size,
            },
        )
        self.paused = True  # after the alert: whoever sees the flag finds the event

    def _resume(self, usage: DiskUsage) -> None:
        self._flush_refused()
        message = (
            f"media capture resumed: {usage.path} is {usage.used_pct:.1f}% full (high watermark "
            f"{self.settings.high_watermark_pct:g}%); {self._refused_in_pause} capture(s) were refused while paused"
        )
        log.warning("%s", message, extra={"event": "media_resumed"})
        self._event(
            "media_resumed",
            message,
            detail={
                "used_pct": usage.used_pct,
                "paused_since_utc": self.paused_since,
                "refused": self._refused_in_pause,
            },
        )
        self.paused = False
        self.paused_since = None

    # ------------------------------------------------------------------ eviction

    def _evict(self, usage: DiskUsage) -> DiskUsage:
        """Delete confirmed media until use is at the low watermark or nothing confirmed is left."""
        low = self.settings.low_watermark_pct
        start = usage
        while usage.used_pct > low:
            need = usage.used_bytes - int(usage.total_bytes * low / 100.0)
            rows = self._cat.media.eviction_candidates(BATCH)
            chosen: list[sqlite3.Row] = []
            freed = 0
            for row in rows:
                chosen.append(row)
                freed += int(row["size"] or 0)
                if freed >= need:
                    break
            if not chosen:
                break
            try:
                self._delete(chosen, start, low)
            except (sqlite3.Error, CatalogError) as exc:
                log.error("eviction stopped: cannot update the catalog: %s", exc)
                break
            usage = disk_usage(self.data_dir)
        return usage

    def _delete(self, rows: list[sqlite3.Row], start: DiskUsage, low: float) -> None:
        by_stream: dict[str, list[sqlite3.Row]] = {}
        for row in rows:
            by_stream.setdefault(row["stream"], []).append(row)
        for stream, group in by_stream.items():  # the event first: no deletion without its record
            size = sum(int(r["size"] or 0) for r in group)
            self._cat.add_event(
                "eviction",
                f"{stream}: evicted {len(group)} confirmed media file(s), {size} bytes, because {start.path} was "
                f"{start.used_pct:.1f}% full (high watermark {self.settings.high_watermark_pct:g}%, target {low:g}%)",
                stream=stream,
                count=len(group),
                detail={"record_ids": [r["record_id"] for r in group], "bytes": size, "used_pct": start.used_pct},
            )
        paths = [str(r["path"]) for r in rows]
        self._cat.media.mark_deleted([r["record_id"] for r in rows], PENDING_KEY, paths)
        self._unlink(paths)
        self.evicted_files += len(rows)
        self.evicted_bytes += sum(int(r["size"] or 0) for r in rows)
        log.info("evicted %d confirmed media file(s)", len(rows), extra={"event": "eviction"})

    def _unlink(self, paths: list[str]) -> None:
        for rel in paths:
            path = self.data_dir / rel
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot delete evicted media %s: %s", path, exc.strerror)
        self._cat.media.unlinked(PENDING_KEY)

    def _finish_pending(self) -> None:
        """Finish deletions a crash interrupted (their rows and events are already committed)."""
        raw = self._cat.get_state(PENDING_KEY)
        if raw:
            paths = [str(p) for p in json.loads(raw)]
            log.info("finishing %d interrupted eviction(s)", len(paths))
            self._unlink(paths)

    # ------------------------------------------------------------------ refusals and events

    def _note_refused(self, stream: str, kind: str, t_mono_ns: int, seq: int) -> None:
        r = self._refused.get(stream)
        if r is None:
            r = self._refused[stream] = _Refused(first_mono_ns=t_mono_ns, seq_first=seq)
        r.count += 1
        r.kinds.add(kind)
        r.last_mono_ns = t_mono_ns
        r.seq_last = seq
        self.refused_total[stream] = self.refused_total.get(stream, 0) + 1
        self._refused_in_pause += 1

    def _flush_refused(self) -> None:
        for stream in list(self._refused):
            r = self._refused[stream]
            usage = self.last_usage
            ok = self._event(
                "capture_refused",
                f"{stream}: {r.count} {'/'.join(sorted(r.kinds))} capture(s) not written: media paused, "
                f"{usage.path} {usage.used_pct:.1f}% full with only unsynced media",
                stream=stream,
                count=r.count,
                detail={
                    "t_first_mono_ns": r.first_mono_ns,
                    "t_last_mono_ns": r.last_mono_ns,
                    "seq_first": r.seq_first,
                    "seq_last": r.seq_last,
                    "kinds": sorted(r.kinds),
                },
            )
            if ok:
                del self._refused[stream]

    def _event(
        self,
        kind: str,
        message: str,
        *,
        stream: str | None = None,
        count: int = 1,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Add an event; False (kept for a retry) when even the catalog cannot be written."""
        try:
            self._cat.add_event(kind, message, stream=stream, count=count, detail=detail)
        except (sqlite3.Error, CatalogError) as exc:
            log.error("cannot record a %s event (will retry): %s", kind, exc)
            return False
        return True
