"""Disk quota and retention on a real, small filesystem (a tmpfs mounted for the test).

First the policy on its own (a real catalog, files and receipts applied the way the publisher does),
then the whole agent filling the disk during capture while the broker is down, and recovering once
a real broker and ingester confirm what it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

from agent.catalog.db import Catalog
from agent.catalog.media import media_path
from agent.config import StorageSettings, parse_config
from agent.daemon import Agent
from agent.ops.disk import disk_usage
from agent.ops.retention import PENDING_KEY, DiskGuard
from central.broker import LocalBroker, free_port
from sync.files import write_atomic
from sync.outbox import BlobRef
from sync.signing import generate


@pytest.fixture
def small_fs(tmpfs: Callable[[int], Path]) -> Path:
    """An 8 MiB filesystem the test can fill."""
    return tmpfs(8)


def ballast(fs: Path, pct: float) -> Path:
    """A file outside the data directory that takes ``pct`` % of the filesystem."""
    usage = disk_usage(fs)
    path = fs / f"ballast-{time.monotonic_ns()}"
    path.write_bytes(b"\0" * int(usage.total_bytes * pct / 100))
    return path


class Store:
    """Captures with real media files in a real catalog; receipts applied like the publisher does."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.cat = Catalog(data / "catalog.sqlite", "ret-01")
        # The migrations of a new catalog leave ~400 kB of WAL; a running device checkpoints it. On an
        # 8 MiB filesystem that is 5 % of the disk, so the watermarks below are measured without it.
        self.cat.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.t = 0

    def add(self, size: int, *, confirmed: bool, verdict: str | None = None, stream: str = "cam") -> str:
        self.t += 1
        utc = 1_700_000_000_000_000_000 + self.t * 1_000_000_000
        path = media_path(self.data / "media", stream, f"f{self.t}", "image/jpeg", utc)
        written = write_atomic(path, os.urandom(size))
        rid = self.cat.add_capture(
            stream=stream,
            kind="frame",
            modality="visible",
            t_start_mono_ns=self.t,
            t_end_mono_ns=self.t,
            t_start_utc_ns=utc,
            seq_first=self.t,
            seq_last=self.t,
            media=BlobRef(written.sha256, written.size, path, "image/jpeg"),
            media_rel=str(path.relative_to(self.data)),
            meta={},
        )
        if verdict:
            self.cat.add_verdict(
                rid,
                profile="camera-visible",
                profile_version="1",
                verdict=verdict,
                reasons=[],
                metrics={},
                analyzers=[],
                annotations=[],
            )
        if confirmed:
            self.receipt(rid)
        return rid

    def receipt(self, rid: str) -> None:
        sha = self.cat.conn.execute("SELECT sha256 FROM captures WHERE record_id = ?", (rid,)).fetchone()[0]
        self.cat.outbox.mark_records([rid], "sent")
        self.cat.outbox.mark_records([rid], "confirmed")
        self.cat.outbox.mark_blob(sha, "confirmed")

    def row(self, rid: str) -> Any:
        return self.cat.conn.execute("SELECT * FROM captures WHERE record_id = ?", (rid,)).fetchone()

    def exists(self, rid: str) -> bool:
        return (self.data / self.row(rid)["path"]).exists()

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.cat.conn.execute("SELECT * FROM events WHERE kind = ? ORDER BY t_mono_ns", (kind,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail_json"])} for r in rows]


def test_guard_evicts_confirmed_media_only_pauses_when_only_unsynced_is_left_and_resumes(small_fs: Path) -> None:
    data = small_fs / "data"
    store = Store(data)
    settings = StorageSettings(high_watermark_pct=60, low_watermark_pct=40)
    hold = ballast(small_fs, 5)
    kb = 1024
    old_pass = [store.add(300 * kb, confirmed=True, verdict="pass") for _ in range(4)]
    unsynced = [store.add(300 * kb, confirmed=False, verdict="pass") for _ in range(3)]
    newer_fail = [store.add(300 * kb, confirmed=True, verdict="fail") for _ in range(2)]
    unscreened = [store.add(300 * kb, confirmed=True) for _ in range(2)]
    guard = DiskGuard(data / "catalog.sqlite", "ret-01", settings)
    assert disk_usage(data).used_pct >= 60

    usage = guard.check()
    assert usage.used_pct <= 40
    assert not guard.paused
    evicted = {r for r in old_pass + newer_fail + unscreened if store.row(r)["media_deleted_utc"]}
    # Lowest value first: failed QC (although newest), then screened oldest first, unscreened last;
    # only as many as needed to reach the low watermark.
    order = newer_fail + old_pass + unscreened
    assert len(newer_fail) < len(evicted) < len(order)
    assert evicted == set(order[: len(evicted)])
    for rid in evicted:
        assert not store.exists(rid)
    for rid in unsynced:
        assert store.exists(rid) and store.row(rid)["media_deleted_utc"] is None
    logged = {rid for e in store.events("eviction") for rid in e["detail"]["record_ids"]}
    assert logged == evicted  # every eviction is an event (synced like data)
    assert sum(e["count"] for e in store.events("eviction")) == len(evicted)
    assert store.cat.get_state(PENDING_KEY) is None

    # Fill up with unsynced data only: whatever confirmed media is left goes, then media pauses.
    more = [store.add(300 * kb, confirmed=False) for _ in range(8)]
    guard.check()
    assert guard.paused
    assert all(store.exists(r) for r in unsynced + more)  # unsynced data is never deleted
    assert all(store.row(r)["media_deleted_utc"] for r in old_pass + newer_fail + unscreened)
    paused = store.events("media_paused")
    assert len(paused) == 1
    assert "media capture paused" in paused[0]["message"] and "unsynced" in paused[0]["message"]
    assert paused[0]["detail"]["unsynced_files"] == len(unsynced + more)
    assert not guard.media_allowed("cam", "frame", 10, 100)
    assert not guard.media_allowed("cam", "frame", 20, 101)
    assert not guard.media_allowed("mic", "segment", 30, 7)
    guard.check()
    refused = {e["stream"]: e for e in store.events("capture_refused")}
    assert refused["cam"]["count"] == 2 and refused["mic"]["count"] == 1
    assert refused["cam"]["detail"]["seq_first"] == 100 and refused["cam"]["detail"]["seq_last"] == 101
    assert guard.stats()["refused"] == {"cam": 2, "mic": 1}

    # Space returns (someone removes other files): media resumes on its own.
    hold.unlink()
    for r in more[:3]:
        store.receipt(r)  # and receipts arrive for some of the unsynced media
    guard.check()
    assert not guard.paused
    resumed = store.events("media_resumed")
    assert len(resumed) == 1 and resumed[0]["detail"]["refused"] == 3
    assert guard.media_allowed("cam", "frame", 40, 102)
    assert all(store.exists(r) for r in unsynced + more[3:])
    guard.close()


def test_an_interrupted_eviction_is_finished_at_start(small_fs: Path) -> None:
    data = small_fs / "data"
    store = Store(data)
    rid = store.add(1000, confirmed=True)
    rel = store.row(rid)["path"]
    with store.cat.transaction() as conn:  # what a crash between commit and unlink leaves behind
        conn.execute("UPDATE captures SET media_deleted_utc = 'x' WHERE record_id = ?", (rid,))
        conn.execute("INSERT INTO state (key, value) VALUES (?, ?)", (PENDING_KEY, json.dumps([rel])))
    assert (data / rel).exists()
    DiskGuard(data / "catalog.sqlite", "ret-01", StorageSettings()).close()
    assert not (data / rel).exists()
    assert store.cat.get_state(PENDING_KEY) is None


def test_a_device_that_cannot_verify_receipts_never_evicts(small_fs: Path) -> None:
    """Without a receipt key "confirmed" may come from a forger: the disk fills, media pauses, nothing goes."""
    data = small_fs / "data"
    store = Store(data)
    ballast(small_fs, 5)
    confirmed = [store.add(300 * 1024, confirmed=True, verdict="fail") for _ in range(6)]
    settings = StorageSettings(high_watermark_pct=20, low_watermark_pct=10)
    guard = DiskGuard(data / "catalog.sqlite", "ret-01", settings, evict_confirmed=False)
    assert disk_usage(data).used_pct >= 20
    guard.check()
    assert guard.paused
    assert all(store.exists(r) and store.row(r)["media_deleted_utc"] is None for r in confirmed)
    assert not store.events("eviction")
    (paused,) = store.events("media_paused")
    assert "sync.receipt_public_key is not set" in paused["message"]
    guard.evict_confirmed = True  # a key is configured (config reload): eviction works again
    guard.check()
    assert not guard.paused and store.events("eviction")
    guard.close()


# ---------------------------------------------------------------------------- the whole agent


def test_disk_full_during_capture_pauses_media_and_recovers_after_receipts(small_fs: Path, tmp_path: Path) -> None:
    data = small_fs / "data"
    port = free_port()
    private, public, _ = generate(tmp_path / "keys")  # eviction trusts only signed receipts
    config = parse_config(
        {
            "agent": {"device_id": "ret-02", "data_dir": str(data)},
            "devices": [
                {"name": "cam", "type": "sim-camera", "width": 640, "height": 480, "fps": 8},
                {"name": "mic", "type": "sim-microphone", "sample_rate": 8000, "channels": 1, "blocksize": 400},
                {"name": "env", "type": "sim-serial", "rate_hz": 5},
            ],
            "capture": {
                "cam": {"policy": "every"},
                "mic": {"policy": "segment", "segment_s": 1.0},
                "env": {"policy": "readings", "batch_s": 0.5},
            },
            "storage": {"high_watermark_pct": 60, "low_watermark_pct": 40, "check_interval_s": 0.3},
            "sync": {
                "broker": f"mqtt://127.0.0.1:{port}",
                "receipt_timeout_s": 2.0,
                "receipt_public_key": str(public),
            },
        }
    )
    agent = Agent(config)
    broker: LocalBroker | None = None
    ingester: subprocess.Popen[bytes] | None = None
    agent.start()
    try:
        with agent.catalog() as cat:

            def events(kind: str) -> list[Any]:
                return list(cat.conn.execute("SELECT * FROM events WHERE kind = ? ORDER BY t_mono_ns", (kind,)))

            # Phase 1: no broker, so nothing is confirmed; the disk fills and media pauses.
            wait_until("media to pause", lambda: agent.guard is not None and agent.guard.paused, timeout=120)
            paused = events("media_paused")
            assert len(paused) == 1 and "media capture paused" in paused[0]["message"]
            assert not cat.conn.execute("SELECT 1 FROM captures WHERE media_deleted_utc IS NOT NULL").fetchall()
            snap = agent.snapshot()
            assert snap["disk"]["media_paused"] and snap["disk"]["used_pct"] >= 60
            readings_at_pause = cat.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            wait_until(
                "refused captures recorded", lambda: {r["stream"] for r in events("capture_refused")} >= {"cam", "mic"}
            )
            # Sensor readings keep being committed while media is refused.
            wait_until(
                "readings while paused",
                lambda: cat.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] > readings_at_pause,
            )
            assert agent.guard is not None and agent.guard.paused
            assert agent.snapshot()["streams"]["cam"]["dropped"]["disk_full"] > 0
            for (rel,) in cat.conn.execute("SELECT path FROM captures WHERE path IS NOT NULL"):
                assert (data / rel).exists()  # nothing unsynced was deleted to make room

            # Phase 2: the central side appears; receipts confirm media, which is evicted; capture resumes.
            broker = LocalBroker(tmp_path / "broker", port=port).start()
            ingester = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "ingest",
                    "--broker",
                    broker.url,
                    "--store",
                    f"sqlite:///{tmp_path / 'central.db'}",
                    "--blobs",
                    str(tmp_path / "blobs"),
                    "--receipt-key",
                    str(private),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "ingest.log").open("wb"),
            )
            resumed = wait_until("media to resume", lambda: events("media_resumed"), timeout=150)
            evictions = events("eviction")
            assert evictions
            for ev in evictions:
                for rid in json.loads(ev["detail_json"])["record_ids"]:
                    row = cat.conn.execute(
                        "SELECT c.state, c.path, c.media_deleted_utc, o.confirmed_utc FROM captures c"
                        " JOIN outbox o ON o.record_id = c.record_id WHERE c.record_id = ?",
                        (rid,),
                    ).fetchone()
                    assert row["state"] == "confirmed" and row["media_deleted_utc"]
                    assert row["confirmed_utc"] is not None and not (data / row["path"]).exists()
            t_resumed = resumed[0]["t_mono_ns"]
            age = wait_until(
                "the last receipt in the status",
                lambda: (
                    agent.snapshot()["last_receipt_age_s"] is not None
                    and agent.snapshot()["last_receipt_age_s"] + 0.001
                ),
                timeout=30,
            )
            assert 0 < age < 120
            assert agent.snapshot()["broker_connected"] is True
            wait_until(
                "new media after the resume",
                lambda: (
                    cat.conn.execute(
                        "SELECT COUNT(*) FROM captures"
                        " WHERE stream = 'cam' AND path IS NOT NULL AND t_start_mono_ns > ?",
                        (t_resumed,),
                    ).fetchone()[0]
                    > 0
                ),
                timeout=30,
            )
    finally:
        agent.stop(30)
        if ingester is not None:
            ingester.terminate()
            ingester.wait(15)
        if broker is not None:
            broker.stop()
            shutil.rmtree(tmp_path / "broker", ignore_errors=True)
    with agent.catalog() as cat:
        for rel, state, deleted in cat.conn.execute(
            "SELECT path, state, media_deleted_utc FROM captures WHERE path IS NOT NULL"
        ):
            if deleted:
                assert state == "confirmed"  # only confirmed media was ever deleted
            else:
                assert (data / rel).exists()
