"""``fieldcap central status``: is the central side healthy, and what does it know of the devices?

Everything here comes from the central store and the blob store, so it works from any host that
can reach them. What a device has not sent yet is not knowable here: its own backlog is in the
device's metrics (``fieldcap status`` on it); the central side sees uploads it has started and
commands the device has not acknowledged.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from central.heartbeat import ingesters
from central.store import CentralStore

STALE_S = 300.0  # an ingester not seen for this long is taken for dead
DEAD_LETTER_WINDOW = timedelta(days=1)

Health = Literal["healthy", "degraded", "error"]


@dataclass
class Status:
    health: Health = "healthy"
    problems: list[str] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, Any] = field(default_factory=dict)
    ingesters: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def degrade(self, problem: str) -> None:
        self.problems.append(problem)
        if self.health == "healthy":
            self.health = "degraded"

    def fail(self, problem: str) -> None:
        self.problems.append(problem)
        self.health = "error"

    def as_dict(self) -> dict[str, Any]:
        return {
            "health": self.health,
            "problems": self.problems,
            "store": self.store,
            "blobs": self.blobs,
            "ingesters": self.ingesters,
            "devices": self.devices,
            "dead_letters": self.dead_letters,
        }


def _age_s(utc: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(utc)).total_seconds()


def store_status(store: CentralStore, url: str, status: Status, now: datetime, stale_s: float) -> None:
    """Schema, size, ingesters, devices and dead letters, all read from the store."""
    from central.pgstore import redact

    status.store = {"url": redact(url), "reachable": True, "schema": store.schema_version(), "bytes": _size(store)}
    alive = 0
    for ing in ingesters(store):
        age = _age_s(ing["seen_utc"], now)
        ing["state"] = "stopped" if ing["stopped_utc"] else ("stale" if age > stale_s else "alive")
        ing["seen_s_ago"] = round(age, 1)
        alive += ing["state"] == "alive"
        status.ingesters.append(ing)
    if not alive:
        status.degrade(f"no ingester has been seen in the last {stale_s:g} s")
    status.devices = _devices(store)
    since = (now - DEAD_LETTER_WINDOW).isoformat(timespec="microseconds")
    with store._tx() as cur:
        rows = store._exec(
            cur,
            "SELECT device, reason, COUNT(*) FROM dead_letters WHERE received_utc >= ?"
            " GROUP BY device, reason ORDER BY COUNT(*) DESC",
            (since,),
        ).fetchall()
    status.dead_letters = [{"device": r[0], "reason": r[1], "count": int(r[2])} for r in rows]


# Each device and its newest record's arrival, without reading the records: the device names are
# found by skipping through the primary key (device, record_id) from one device to the next, and
# each one's newest arrival is one seek in records_device_received. Two index lookups per device,
# whatever the number of records (a GROUP BY read every row of the index: seconds at 10M records).
DEVICES_SEEN = (
    "WITH RECURSIVE d(device) AS ("
    " SELECT MIN(device) FROM records"
    " UNION ALL"
    " SELECT (SELECT MIN(r.device) FROM records r WHERE r.device > d.device) FROM d WHERE d.device IS NOT NULL)"
    " SELECT d.device, (SELECT MAX(r.received_utc) FROM records r WHERE r.device = d.device)"
    " FROM d WHERE d.device IS NOT NULL"
)


def _devices(store: CentralStore) -> list[dict[str, Any]]:
    """Each device with its newest record's arrival, open uploads (and their bytes) and open
    commands (what the central side knows of its backlog)."""
    out: dict[str, dict[str, Any]] = {}

    def dev(name: str) -> dict[str, Any]:
        return out.setdefault(
            name, {"device": name, "last_seen_utc": None, "open_uploads": 0, "staged_bytes": 0, "open_commands": 0}
        )

    with store._tx() as cur:
        for d, seen in store._exec(cur, DEVICES_SEEN).fetchall():
            dev(str(d))["last_seen_utc"] = seen
        staging = "SELECT device, COUNT(*), COALESCE(SUM(size), 0) FROM staging GROUP BY device"
        for d, n, size in store._exec(cur, staging).fetchall():
            dev(str(d)).update(open_uploads=int(n), staged_bytes=int(size))
        commands = "SELECT device, COUNT(*) FROM commands WHERE acked_utc IS NULL GROUP BY device"
        for d, n in store._exec(cur, commands).fetchall():
            dev(str(d))["open_commands"] = int(n)
    return sorted(out.values(), key=lambda r: r["device"])


def _size(store: CentralStore) -> int | None:
    """Bytes the store takes on disk (the database for PostgreSQL, the file and its WAL for SQLite)."""
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    with store._tx() as cur:
        return int(store._exec(cur, "SELECT pg_database_size(current_database())").fetchone()[0])


def blob_status(spec: str, status: Status) -> None:
    """The object store answers a HEAD on its bucket; a blob directory takes a file."""
    from central.blobs import open_blobs
    from central.errors import StoreError

    status.blobs = {"where": spec, "reachable": False}
    try:
        backend = open_blobs(spec)  # S3: HEAD on the bucket
    except (StoreError, OSError) as exc:  # BlobStoreError is a StoreError
        status.fail(f"blob store {spec}: {exc}")
        return
    try:
        if not spec.startswith("s3://"):
            root = Path(spec)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".status-", delete=True):
                pass
            status.blobs["free_bytes"] = _free(root)
        status.blobs["reachable"] = True
    except OSError as exc:
        status.fail(f"blob directory {spec} is not writable: {exc.strerror}")
    finally:
        backend.close()


def _free(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def now_utc() -> datetime:
    return datetime.now(UTC)
