"""Shared pieces of the sync tests: a device with a real catalog, real peers, and the one final check.

Every fault test ends with ``assert_exactly_once``: every committed capture is centrally stored
exactly once with the right sha256, and the device has deleted nothing that was not confirmed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.catalog.db import Catalog
from central.blobs import BlobBackend, BlobTree
from central.ingester import Ingester
from central.store import CentralStore, SqliteStore
from sync.files import write_atomic
from sync.outbox import BlobRef
from sync.publisher import Publisher
from sync.settings import SyncSettings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS = HERE / "peers"


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Wait for a condition with a generous deadline; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    if not cond():
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class Device:
    """A device's data directory with a real catalog full of committed captures."""

    root: Path
    device_id: str

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    def catalog(self) -> Catalog:
        return Catalog(self.catalog_path, self.device_id, synchronous="normal")

    def add(self, *, records: int = 0, blob_sizes: tuple[int, ...] = (), seed: int = 0, stream: str = "s") -> list[str]:
        """Commit ``records`` media-less captures and one capture per blob size (random bytes)."""
        rng = random.Random(seed)
        ids = []
        with self.catalog() as cat:
            for i in range(records):
                ids.append(_capture(cat, stream, i, None, None, {"reading": rng.random()}))
            for i, size in enumerate(blob_sizes):
                data = rng.randbytes(size)
                rel = f"media/{stream}/{seed}-{i}.bin"
                written = write_atomic(self.root / rel, data)
                ref = BlobRef(written.sha256, written.size, written.path, "application/octet-stream")
                ids.append(_capture(cat, stream, records + i, ref, rel, {"n": i}))
        return ids

    def states(self) -> dict[str, tuple[str, str | None]]:
        with self._ro() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT record_id, record_state, blob_state FROM outbox")}

    def confirmed(self) -> int:
        with self._ro() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE confirmed_utc IS NOT NULL").fetchone()[0])

    def total(self) -> int:
        with self._ro() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def events(self, kind: str | None = None) -> list[sqlite3.Row]:
        with self._ro() as conn:
            sql = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "")
            return list(conn.execute(sql, (kind,) if kind else ()))

    @contextmanager
    def _ro(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.catalog_path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()


def _capture(cat: Catalog, stream: str, i: int, ref: BlobRef | None, rel: str | None, meta: dict[str, Any]) -> str:
    now = time.monotonic_ns()
    return cat.add_capture(
        stream=stream,
        kind="frame" if ref else "reading",
        modality="test",
        t_start_mono_ns=now,
        t_end_mono_ns=now,
        t_start_utc_ns=time.time_ns(),
        seq_first=i,
        seq_last=i,
        media=ref,
        media_rel=rel,
        meta=meta,
    )


def settings(broker_url: str, **overrides: Any) -> SyncSettings:
    """Sync settings tuned for tests: short timeouts so recovery paths run within seconds."""
    base: dict[str, Any] = {
        "broker": broker_url,
        "receipt_timeout_s": 2.0,
        "keepalive_s": 2,
        "reconnect_max_s": 1.0,
        "session_expiry_s": 600,
    }
    base.update(overrides)
    return SyncSettings.model_validate(base)


def publisher(device: Device, sync: SyncSettings, credentials: Any = None, verifier: Any = None) -> Publisher:
    from sync.mqtt import Credentials

    return Publisher(
        device_id=device.device_id,
        settings=sync,
        credentials=credentials or Credentials(),
        open_store=lambda: device.catalog().outbox,
        verifier=verifier,
    )


@contextmanager
def running_publisher(
    device: Device, sync: SyncSettings, credentials: Any = None, verifier: Any = None
) -> Iterator[Publisher]:
    pub = publisher(device, sync, credentials, verifier)
    pub.start()
    try:
        yield pub
    finally:
        pub.stop(15)


@dataclass
class Central:
    """The central side of one test: a store (SQLite or PostgreSQL) and a blob tree or object store.

    With an object store, ``spec`` is its ``s3://`` URL and ``staging`` the local staging directory.
    """

    store: CentralStore
    tree: Any  # BlobTree, or another BlobBackend with ``spec`` and ``staging``
    url: str
    spec: str | None = None
    staging: Path | None = None

    @property
    def blobs(self) -> BlobBackend:
        backend: BlobBackend = self.tree
        return backend


def sqlite_central(root: Path) -> Central:
    path = root / "central.db"
    return Central(SqliteStore(path), BlobTree(root / "blobs"), f"sqlite:///{path}")


@contextmanager
def running_ingester(broker_url: str, central: Central, **kwargs: Any) -> Iterator[Ingester]:
    """An ingester in a thread of this process, with its own store connection."""
    from central.store import open_store

    store = open_store(central.url)
    ing = Ingester(
        broker=broker_url,
        store=store,
        blobs=central.tree,
        staging_dir=central.staging,
        reconnect_max_s=1.0,
        **kwargs,
    )
    thread = threading.Thread(target=ing.run, name="test-ingester", daemon=True)
    thread.start()
    try:
        assert ing.wait_subscribed(20), "the ingester did not subscribe"
        yield ing
    finally:
        ing.stop()
        thread.join(15)
        store.close()


def ingest_process(
    broker_url: str, central: Central, log: Path, *extra: str, ready: bool = True
) -> subprocess.Popen[bytes]:
    """``fieldcap ingest`` as a real process (the same command a central server runs).

    With ``ready``, wait until it has subscribed (its log says so), so nothing published later is
    dropped by a broker that has no subscriber yet.
    """
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "-v",
                "ingest",
                "--broker",
                broker_url,
                "--store",
                central.url,
                "--blobs",
                central.spec or str(central.tree.root),
                *(["--staging", str(central.staging)] if central.staging else []),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if ready:
        wait_for(
            lambda: b"ingesting from" in log.read_bytes()[start:] or proc.poll() is not None,
            60,
            "the ingester to subscribe",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
    return proc


def publisher_process(device: Device, sync: SyncSettings, log: Path) -> subprocess.Popen[bytes]:
    """The publisher alone in a child process over the device's catalog file (to be killed -9)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(PEERS / "publisher_child.py"),
                str(device.root),
                device.device_id,
                sync.model_dump_json(),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            kill9(proc)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def staged_bytes(central: Central) -> int:
    """Bytes of blobs still being uploaded that the central side already has on disk."""
    keys = central.store.staging_keys()
    return sum(n for device, sha in keys for _o, n in central.store.chunk_pieces(device, sha))


def assert_exactly_once(device: Device, central: Central, *, all_confirmed: bool = True) -> None:
    """Every committed capture is centrally stored exactly once with the right sha256, and the device
    has deleted nothing that was not confirmed.

    With ``all_confirmed`` every outbox item must also be confirmed (the run drained completely);
    without it, only what is confirmed must be stored (a check in the middle of an outage).
    """
    with device._ro() as conn:
        outbox = list(
            conn.execute(
                "SELECT record_id, kind, blob_sha256, blob_size, record_state, blob_state, confirmed_utc FROM outbox"
            )
        )
        captures = list(conn.execute("SELECT record_id, path, sha256, size, state, media_deleted_utc FROM captures"))
    central_rows = central.store.list_records(device=device.device_id)
    ids = [r["record_id"] for r in central_rows]
    assert len(ids) == len(set(ids)), "a record is stored twice centrally"
    by_id = {r["record_id"]: r for r in central_rows}
    local_ids = {r["record_id"] for r in outbox}
    assert set(ids) <= local_ids, f"central records the device never committed: {sorted(set(ids) - local_ids)[:5]}"
    blobs = {b["sha256"]: b for b in central.store.list_blobs()}
    problems: list[str] = []
    for row in outbox:
        rid, sha = row["record_id"], row["blob_sha256"]
        rejected = "rejected" in (row["record_state"], row["blob_state"])
        assert not rejected, f"{rid} was rejected: nothing in these tests may be refused"
        confirmed = row["confirmed_utc"] is not None
        if all_confirmed and not confirmed:
            problems.append(f"{rid} ({row['kind']}) is not confirmed: {row['record_state']}/{row['blob_state']}")
        if not (confirmed or all_confirmed):
            continue
        remote = by_id.get(rid)
        if remote is None:
            problems.append(f"{rid} ({row['kind']}) is not stored centrally")
            continue
        if sha is None:
            continue
        if remote["sha256"] != sha or remote["size"] != row["blob_size"]:
            problems.append(f"{rid}: central record names {remote['sha256']}/{remote['size']}")
        blob = blobs.get(sha)
        if blob is None or blob["size"] != row["blob_size"]:
            problems.append(f"{rid}: blob {sha[:12]} is not in the central blob index with its size")
            continue
        if not central.blobs.verify(sha, row["blob_size"]):
            problems.append(f"{rid}: the central blob {sha} is missing or does not hash to its name")
    for cap in captures:
        if cap["path"] is None:
            continue
        local = device.root / cap["path"]
        if not local.exists():
            if cap["state"] != "confirmed":
                problems.append(f"{cap['record_id']}: local media deleted although {cap['state']}")
        elif sha256_of(local) != cap["sha256"]:
            problems.append(f"{cap['record_id']}: local media no longer hashes to its catalog sha256")
    if all_confirmed:
        leftovers = [p.name for p in (central.staging or central.tree.staging_dir).rglob("*") if p.is_file()]
        if leftovers:
            problems.append(f"staging files left over after every blob was stored: {leftovers[:3]}")
        if central.store.count("chunks") or central.store.count("staging"):
            problems.append("chunk or staging rows left over after every blob was stored")
    assert not problems, "\n".join(problems[:20])
