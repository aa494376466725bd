"""Ingester heartbeats: each ``fieldcap ingest`` says in the central store that it is alive.

A row per process (its MQTT client id) in ``ingesters``, rewritten at start, every
``HEARTBEAT_EVERY_S`` and at a clean stop, with the totals its metrics endpoint serves. Other
ingesters and ``fieldcap central status`` need no access to that process or its host to see it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from importlib import metadata
from typing import Any

from central.store import CentralStore
from sync.wire import utc_now

HEARTBEAT_EVERY_S = 60.0


def fieldcap_version() -> str:
    try:
        return metadata.version("fieldcap")
    except metadata.PackageNotFoundError:
        return "unknown"


def counters(stats: object) -> dict[str, int]:
    """The integer totals of an ingester's stats (the same names as its Prometheus counters)."""
    fields = dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type) else {}
    return {k: v for k, v in fields.items() if isinstance(v, int) and not isinstance(v, bool)}


def beat(store: CentralStore, client_id: str, started_utc: str, stats: object, *, stopped: bool = False) -> None:
    """Write this ingester's row (in its own transaction, outside any batch)."""
    now = utc_now()
    row = (client_id, socket.gethostname(), os.getpid(), fieldcap_version(), started_utc, now)
    with store._tx() as cur:
        store._exec(
            cur,
            "INSERT INTO ingesters (client_id, host, pid, version, started_utc, seen_utc, stopped_utc, counters)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (client_id) DO UPDATE SET host = excluded.host,"
            " pid = excluded.pid, version = excluded.version, started_utc = excluded.started_utc,"
            " seen_utc = excluded.seen_utc, stopped_utc = excluded.stopped_utc, counters = excluded.counters",
            (*row, now if stopped else None, json.dumps(counters(stats), sort_keys=True)),
        )


def ingesters(store: CentralStore) -> list[dict[str, Any]]:
    """Every ingester that has ever written a heartbeat, most recently seen first."""
    keys = ["client_id", "host", "pid", "version", "started_utc", "seen_utc", "stopped_utc", "counters"]
    with store._tx() as cur:
        rows = store._exec(cur, f"SELECT {', '.join(keys)} FROM ingesters ORDER BY seen_utc DESC").fetchall()
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for r in out:
        r["pid"] = int(r["pid"])
        r["counters"] = json.loads(r["counters"])
    return out
