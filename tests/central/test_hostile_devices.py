"""Hostile devices against a real Mosquitto and a real ingester, with an honest device syncing meanwhile.

Each attack must fail or be bounded, and each refusal must be visible (a dead letter with its reason,
a counter, a ``rejected`` receipt to the device); the honest device's data must all be stored exactly
once and the ingester must stay up. The hostile device is a raw MQTT client: the broker here has no
ACL, standing in for a device whose credentials allow it exactly its own topic tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))  # the sync tests' harness

from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    ingest_process,
    running_ingester,
    running_publisher,
    settings,
    sqlite_central,
    stop,
    wait_for,
)

from agent.cli import cli
from central.broker import LocalBroker
from central.ingester import Ingester
from central.limits import IntakeLimits, MiB
from sync import topics
from sync.wire import BlobFin, BlobInit, encode

EVIL = "evil-1"

LIMITS = IntakeLimits(
    max_blob_bytes=32 * MiB,
    device_staged_bytes=8 * MiB,
    device_open_uploads=5,
    query_items_burst=3000,
    query_items_per_s=100.0,
    dead_letter_burst=40,
    dead_letters_per_s=1.0,
    dead_letters_per_device=100,
)


class Attacker:
    """A device that publishes whatever it likes and collects the receipts it gets back."""

    def __init__(self, broker: LocalBroker, device: str = EVIL) -> None:
        self.device = device
        self.receipts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{device}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        sub = threading.Event()
        self.client.on_subscribe = lambda *_a: sub.set()
        self.client.subscribe(topics.receipts(device), qos=1)
        assert sub.wait(20)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.receipts.extend(json.loads(msg.payload)["receipts"])

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(60)

    def init(self, sha: str, size: int) -> None:
        init = BlobInit(sha256=sha, size=size, chunk_size=65536, media_type="application/octet-stream")
        self.send(topics.blob_init(self.device, sha), encode(init))

    def receipt(self, sha: str, reply_to: str, timeout: float = 60) -> dict[str, Any]:
        """The newest receipt about ``sha`` answering ``reply_to`` (waits for one)."""

        def found() -> dict[str, Any] | None:
            with self._lock:
                hits = [r for r in self.receipts if r["id"] == sha and r.get("reply_to") == reply_to]
            return hits[-1] if hits else None

        wait_for(lambda: found() is not None, timeout, f"a receipt for {sha[:12]} ({reply_to})")
        r = found()
        assert r is not None
        with self._lock:
            self.receipts.remove(r)
        return r

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    c = sqlite_central(tmp_path / "central")
    try:
        yield c
    finally:
        c.store.close()


@pytest.fixture
def pg_central(postgres_url: str, tmp_path: Path) -> Iterator[Central]:
    """A fresh database on the throwaway PostgreSQL cluster, dropped afterwards."""
    import uuid

    import psycopg

    from central.blobs import BlobTree
    from central.store import open_store

    name = f"hostile_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    c = Central(open_store(url), BlobTree(tmp_path / "pg-blobs"), url)
    try:
        yield c
    finally:
        c.store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sweep_now(ing: Ingester, **changes: Any) -> None:
    """Have the running ingester sweep at once (in its own thread), with changed limits."""
    before = ing.stats.batches
    ing.intake.limits = dataclasses.replace(ing.intake.limits, **changes)
    ing._next_sweep = 0.0
    wait_for(lambda: ing._next_sweep > 0.0, 60, "the ingester to sweep")
    assert ing.stats.batches >= before


@contextlib.contextmanager
def attacker(broker: LocalBroker) -> Iterator[Attacker]:
    a = Attacker(broker)
    try:
        yield a
    finally:
        a.close()


def reasons(central: Central, device: str = EVIL) -> list[str]:
    return [d["reason"] for d in central.store.dead_letters(100_000) if d["device"] == device]


def capture_env(device: str, rid: str, **body: Any) -> bytes:
    base = {
        "record_id": rid,
        "stream": "cam0",
        "kind": "frame",
        "modality": "visible",
        "t_start_mono_ns": 1,
        "t_end_mono_ns": 2,
        "t_start_utc_ns": 3,
        "seq_first": 0,
        "seq_last": 0,
        "created_utc": "2026-01-01T00:00:00+00:00",
        "meta": {},
    }
    env = {
        "schema_version": 1,
        "record_id": rid,
        "device": device,
        "kind": "capture",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "body": {**base, **body},
    }
    if body.get("sha256"):
        env["blob"] = {"sha256": body["sha256"], "size": body["size"], "media_type": "application/octet-stream"}
    return json.dumps(env).encode()


# One poisoned body per record kind: a wrong type where the exports expect a number, object or enum.
POISONED: dict[str, dict[str, Any]] = {
    "capture": {"t_start_mono_ns": "x"},
    "verdict": {"capture_id": "0123456789ab-1", "profile": "p", "profile_version": "1", "verdict": "great",
                "reasons": [], "metrics": {}, "analyzers": []},
    "annotation": {"record_id": "0123456789ab-2", "capture_id": "0123456789ab-1", "kind": "box", "label": "cat",
                   "t_start_s": "x", "model": "m", "model_version": "1", "created_utc": "2026-01-01T00:00:00Z"},
    "channel_verdict": {"capture_id": "0123456789ab-1", "channels": [{"channel": "left"}]},
    "clock": {"t_mono_ns": 1, "t_realtime_ns": True, "reason": "r", "health": {}},
    "alignment": {"run_id": "r", "session_id": "s", "summary": {}, "clock_fits": [], "parts": 0},
    "alignment_pairs": {"run_id": "r", "session_id": "s", "part": 0, "columns": [], "rows": "all"},
    "event": {"record_id": "0123456789ab-3", "t_utc_ns": 1, "t_mono_ns": 1, "kind": "drop", "count": "3",
              "message": "m", "detail": {}},
    "session": {"event": "start", "session_id": "s", "kind": "booth", "site": "x", "station": "y", "operator": "",
                "round": "two", "started_utc": "2026-01-01T00:00:00Z"},
    "stream": {"stream_id": "s", "device": EVIL, "modality": "audio", "settings": "fast",
               "created_utc": "2026-01-01T00:00:00Z"},
    "take": {"take_id": "t", "session_id": "s", "item_id": "i", "take_no": "one", "status": "done", "streams": [],
             "captures": {}, "t_start_mono_ns": 1, "t_start_utc_ns": 1, "clock": {},
             "created_utc": "2026-01-01T00:00:00Z"},
    "reading": {"value": 1},  # a kind no schema exists for
}  # fmt: skip


def run_attacks(broker: LocalBroker, central: Central, ing: Ingester, honest: Device, blob: bytes) -> None:
    """Every attack of the hostile device, while the honest device's publisher runs."""
    sha_honest = hashlib.sha256(blob).hexdigest()
    with attacker(broker) as evil:
        # 2. staging keyed only by sha256: the honest device's blob is not the attacker's
        wait_for(lambda: central.store.owned_size(honest.device_id, sha_honest) is not None, 120, "the honest blob")
        evil.init(sha_honest, len(blob))  # probing: it learns nothing, it must upload the bytes itself
        assert evil.receipt(sha_honest, "init")["status"] == "missing"
        evil.send(topics.blob_fin(EVIL, sha_honest), encode(BlobFin(sha256=sha_honest, size=len(blob))))
        assert evil.receipt(sha_honest, "fin")["status"] == "missing"  # not "duplicate": it sent nothing
        evil.send(topics.blob_chunk(EVIL, sha_honest, 0), b"EVIL" * 1000)  # lands in its own staging file only
        evil.send(topics.query(EVIL), json.dumps({"blobs": [sha_honest]}).encode())
        assert evil.receipt(sha_honest, "query")["status"] == "partial"
        rid = "0123456789ab-7"
        evil.send(topics.record(EVIL, "capture"), capture_env(EVIL, rid, sha256=sha_honest, size=len(blob)))
        wait_for(lambda: central.store.record_body(EVIL, rid) is not None, 60, "the attacker's record")
        (row,) = central.store.list_records(device=EVIL)
        assert row["sha256"] == sha_honest and not row["blob_stored"]  # it points at nothing it may use

        # 1. disk fill by one message: a 64 GiB announcement is refused outright, nothing reserved
        huge = hashlib.sha256(b"huge").hexdigest()
        evil.init(huge, 64 << 30)
        r = evil.receipt(huge, "init")
        assert r["status"] == "rejected" and "exceeds the" in r["reason"], r
        assert not central.tree.staging_path(EVIL, huge).exists()

        # ... and quotas: open uploads and announced bytes per device
        # (one upload is open already: its own of the honest blob, 1.5 MB)
        shas = [hashlib.sha256(b"junk%d" % i).hexdigest() for i in range(6)]
        for sha in shas[:3]:
            evil.init(sha, 2 * MiB)
            assert evil.receipt(sha, "init")["status"] == "missing"
        evil.init(shas[3], 1 * MiB)  # 8.4 MiB announced > 8 MiB quota
        r = evil.receipt(shas[3], "init")
        assert r["status"] == "rejected" and "staging quota" in r["reason"], r
        evil.init(shas[4], 1)
        assert evil.receipt(shas[4], "init")["status"] == "missing"  # 5 open uploads now: the limit
        evil.init(shas[5], 1)
        r = evil.receipt(shas[5], "init")
        assert r["status"] == "rejected" and "uploads open" in r["reason"], r
        for sha in shas[:3]:  # fill its open uploads with garbage: bounded by what it announced
            for off in range(0, 2 * MiB, 256 * 1024):
                evil.send(topics.blob_chunk(EVIL, sha, off), os.urandom(256 * 1024))
        evil.send(topics.blob_chunk(EVIL, shas[0], 2 * MiB), b"beyond the announced end")

        # 3. query amplification: one query naming the honest blob 1000 times, then a flood
        t0 = time.monotonic()
        evil.send(topics.query(EVIL), json.dumps({"blobs": [sha_honest] * 1000}).encode())
        assert evil.receipt(sha_honest, "query")["status"] == "partial"
        assert time.monotonic() - t0 < 30
        for _ in range(5):
            evil.send(topics.query(EVIL), json.dumps({"blobs": [f"{i:064x}" for i in range(1000)]}).encode())
        wait_for(lambda: ing.stats.query_items_limited >= 1000, 60, "a query over the rate to be refused")

        # 4. record poisoning: one bad body per kind, each dead-lettered with its reason
        for n, (kind, body) in enumerate(POISONED.items()):
            env = {
                "schema_version": 1,
                "record_id": f"0123456789ab-{100 + n}",
                "device": EVIL,
                "kind": kind,
                "created_utc": "2026-01-01T00:00:00+00:00",
                "body": json.loads(capture_env(EVIL, f"0123456789ab-{100 + n}", **body))["body"]
                if kind == "capture"
                else body,
            }
            evil.send(topics.record(EVIL, kind), json.dumps(env).encode())
        wait_for(lambda: ing.stats.records_invalid >= len(POISONED), 60, "every poisoned record to be refused")

        # 5. dead-letter flood: 2,000 bad messages keep at most the burst plus the rate
        for i in range(2000):
            evil.client.publish(topics.record(EVIL, "capture"), b"\xff" * 100 + str(i).encode(), qos=1)
        evil.send(topics.record(EVIL, "capture"), b"last")
        wait_for(lambda: ing.stats.dead_letters_dropped_by_device.get(EVIL, 0) >= 1000, 120, "dropped dead letters")


def check_visible(central: Central, ing: Ingester, elapsed_s: float) -> None:
    """Each refusal is a dead letter with its reason, and counted."""
    found = reasons(central)
    for needle in ("exceeds the", "staging quota", "uploads open", "lies outside", "query rate"):
        assert any(needle in r for r in found), (needle, found[:20])
    for kind in POISONED:
        assert any(r.startswith(f"{kind} body.") or f"record kind '{kind}'" in r for r in found), kind
    assert ing.stats.quota_refusals == 3 and ing.stats.records_invalid >= len(POISONED)
    kept = len(found)
    elapsed_bound = LIMITS.dead_letter_burst + elapsed_s * LIMITS.dead_letters_per_s + 1
    assert kept <= elapsed_bound, kept
    sweep_now(ing)  # the summary: one dead letter and one log line for everything dropped
    summary = [r for r in reasons(central) if "counted but not kept" in r]
    assert summary, reasons(central)[:5]


def expire_and_check(central: Central, ing: Ingester, honest: Device) -> None:
    """Abandoned uploads are removed after their age; then nothing of the attacker is staged."""
    assert central.store.device_staging(EVIL)[0] == 4
    staged = sum(f.stat().st_blocks * 512 for f in (central.tree.staging_dir / EVIL).iterdir())
    assert staged <= LIMITS.device_staged_bytes + 64 * 1024, staged  # bounded by its quota, nothing reserved
    time.sleep(0.05)
    sweep_now(ing, upload_max_age_s=0.0)
    assert central.store.device_staging(EVIL) == (0, 0)
    assert ing.stats.uploads_expired >= 4
    assert not [p for p in central.tree.staging_dir.rglob("*") if p.is_file()]
    assert_exactly_once(honest, central)


def honest_run(broker: LocalBroker, central: Central, tmp_path: Path) -> None:
    honest = Device(tmp_path / "honest", "dev-1")
    honest.add(records=300, blob_sizes=(300_000, 1_500_000, 120_000), seed=5)
    blob = (honest.root / "media/s/5-1.bin").read_bytes()
    with (
        running_ingester(broker.url, central, limits=LIMITS) as ing,
        running_publisher(honest, settings(broker.url)) as pub,
    ):
        t0 = time.monotonic()
        run_attacks(broker, central, ing, honest, blob)
        wait_for(lambda: honest.confirmed() == honest.total(), 180, "the honest device to be confirmed")
        assert ing.stats.connected and pub.stats.records_sent >= 300
        check_visible(central, ing, time.monotonic() - t0)
        # the same bytes from a second device: it uploads them itself, storage keeps one file
        with attacker(broker) as evil:
            sha = hashlib.sha256(blob).hexdigest()
            evil.init(sha, len(blob))
            assert evil.receipt(sha, "init")["status"] == "partial"  # its own upload, with its own "EVIL" bytes
            evil.send(topics.blob_chunk(EVIL, sha, 0), blob)
            evil.send(topics.blob_fin(EVIL, sha), encode(BlobFin(sha256=sha, size=len(blob))))
            assert evil.receipt(sha, "fin")["status"] == "stored"
            assert central.store.count("blob_owners") == 4 and central.store.count("blobs") == 3
            (row,) = central.store.list_records(device=EVIL)
            assert row["blob_stored"]  # now it uploaded them, its record may use them
        expire_and_check(central, ing, honest)


def test_hostile_device_beside_an_honest_one_sqlite(mosquitto: LocalBroker, central: Central, tmp_path: Path) -> None:
    honest_run(mosquitto, central, tmp_path)


def test_hostile_device_beside_an_honest_one_postgresql(
    mosquitto: LocalBroker, pg_central: Central, tmp_path: Path
) -> None:
    honest_run(mosquitto, pg_central, tmp_path)


@pytest.fixture
def small_disk(tmpfs: Callable[[int], Path]) -> Path:
    """A 48 MiB filesystem for the central blobs."""
    return tmpfs(48)


def test_disk_fill_on_a_small_filesystem(mosquitto: LocalBroker, small_disk: Path, tmp_path: Path) -> None:
    """One device cannot fill the blob disk; the other device's media still fits and is stored."""
    from central.blobs import BlobTree

    lite = sqlite_central(tmp_path / "c")
    central = Central(lite.store, BlobTree(small_disk / "blobs"), lite.url)
    limits = dataclasses.replace(LIMITS, device_staged_bytes=16 * MiB, device_open_uploads=8)
    honest = Device(tmp_path / "honest", "dev-1")
    honest.add(records=20, blob_sizes=(4 * MiB, 4 * MiB, 4 * MiB), seed=9)
    with (
        running_ingester(mosquitto.url, central, limits=limits) as ing,
        running_publisher(honest, settings(mosquitto.url)),
        attacker(mosquitto) as evil,
    ):
        for i in range(12):  # 12 × 8 MiB announced: 96 MiB, twice the disk
            sha = hashlib.sha256(b"fill%d" % i).hexdigest()
            evil.init(sha, 8 * MiB)
            r = evil.receipt(sha, "init")
            if r["status"] == "rejected":
                assert "quota" in r["reason"] or "uploads open" in r["reason"], r
                continue
            for off in range(0, 8 * MiB, 1 * MiB):
                evil.send(topics.blob_chunk(EVIL, sha, off), os.urandom(MiB))
        wait_for(lambda: honest.confirmed() == honest.total(), 180, "the honest device to be confirmed")
        assert ing.stats.connected and ing.stats.outages == 0
        assert ing.stats.quota_refusals == 10  # two uploads of 8 MiB fit its 16 MiB quota
        st = os.statvfs(small_disk)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        assert used <= 16 * MiB + 12 * MiB + 2 * MiB, used
        assert [r for r in reasons(central) if "quota" in r]
        sweep_now(ing, upload_max_age_s=0.0)
    assert_exactly_once(honest, central)
    central.store.close()


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


RSS_BOUND_MIB = 160


def test_a_100_mb_message_does_not_blow_up_the_ingester(
    mosquitto: LocalBroker, central: Central, tmp_path: Path
) -> None:
    """The broker is asked for packets no larger than a chunk, so 100 MB never reach the ingester's memory."""
    honest = Device(tmp_path / "honest", "dev-1")
    honest.add(records=50, blob_sizes=(200_000,), seed=3)
    log = tmp_path / "ingest.log"
    proc = ingest_process(mosquitto.url, central, log)
    try:
        before = vm_hwm_kib(proc.pid)
        with attacker(mosquitto) as evil, running_publisher(honest, settings(mosquitto.url)):
            sha = hashlib.sha256(b"big").hexdigest()
            for _ in range(2):
                evil.send(topics.blob_chunk(EVIL, sha, 0), b"\0" * (100 * 1000 * 1000))
            wait_for(lambda: honest.confirmed() == honest.total(), 180, "the honest device to be confirmed")
        peak = vm_hwm_kib(proc.pid)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert peak < RSS_BOUND_MIB * 1024, f"peak RSS {peak // 1024} MiB (before: {before // 1024} MiB)"
        print(f"\ningester peak RSS {peak // 1024} MiB after two 100 MB messages (started at {before // 1024} MiB)")
    finally:
        stop(proc)
    assert_exactly_once(honest, central)


def test_oversize_messages_are_dropped_at_the_door(central: Central) -> None:
    """A broker that ignores the maximum packet size: the payload is dropped unparsed and counted."""
    ing = Ingester(broker="mqtt://127.0.0.1:1", store=central.store, blobs=central.tree, max_chunk=1024)

    class Msg:
        topic = topics.blob_chunk(EVIL, "a" * 64, 0)
        payload = b"x" * (ing.max_message + 1)
        mid, qos = 1, 1

    ing._on_message(None, None, Msg())  # type: ignore[arg-type]
    (msg,) = ing._inbox
    assert msg.payload == b"" and msg.oversize == ing.max_message + 1
    ing.handle_batch(ing._inbox)
    assert ing.stats.oversize_dropped == 1
    (dead,) = central.store.dead_letters()
    assert "dropped unread" in dead["reason"] and dead["device"] == EVIL


def test_dead_letters_are_listed_without_terminal_escapes(central: Central) -> None:
    link = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \x1b[31mred\x1b[0m [link=http://x]markup[/link]"
    central.store.dead_letter(f"fieldcap/v1/{EVIL}/up/rec/x{link}", EVIL + link, link, b"")
    res = CliRunner().invoke(cli, ["central", "ls", "--store", central.url, "--dead-letters"], color=True)
    assert res.exit_code == 0, res.output
    assert "\x1b]8" not in res.output and "\x1b[31m" not in res.output
    assert "\\x1b" in res.output or "x1b" in res.output


def test_central_files_are_not_world_readable(central: Central, tmp_path: Path) -> None:
    ing = Ingester(broker="mqtt://127.0.0.1:1", store=central.store, blobs=central.tree)
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    init = BlobInit(sha256=sha, size=len(data), chunk_size=65536, media_type="audio/wav")
    ing.handle(topics.blob_init("d1", sha), encode(init))
    ing.handle(topics.blob_chunk("d1", sha, 0), data[:100])
    staged = central.tree.staging_path("d1", sha)
    ing.handle(topics.blob_chunk("d1", sha, 100), data[100:])
    ing.handle(topics.blob_fin("d1", sha), encode(BlobFin(sha256=sha, size=len(data))))
    paths = [
        central.tree.root,
        *central.tree.root.rglob("*"),
        *Path(central.url.removeprefix("sqlite://")).parent.iterdir(),
    ]
    assert central.tree.path_for(sha).exists() and not staged.exists()
    loose = [f"{p} {p.stat().st_mode & 0o777:o}" for p in paths if p.stat().st_mode & 0o007]
    assert not loose, loose


def test_ingest_cli_refuses_a_bad_size(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        ["ingest", "--broker", "mqtt://127.0.0.1:1", "--store", str(tmp_path / "c.db"), "--blobs", str(tmp_path),
         "--max-blob-size", "lots"],
    )  # fmt: skip
    assert res.exit_code == 2 and "is not a size" in res.output and "Traceback" not in res.output


def scrape(url: str) -> dict[str, float]:
    """``name{labels} value`` lines of a Prometheus text scrape."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_refusals_are_metrics_of_a_running_ingest(mosquitto: LocalBroker, central: Central, tmp_path: Path) -> None:
    """`fieldcap ingest --metrics-port`: a poisoned record and an over-quota upload show up in a scrape."""
    from central.broker import free_port

    port = free_port()
    log = tmp_path / "ingest.log"
    proc = ingest_process(mosquitto.url, central, log, "--metrics-port", str(port), "--max-blob-size", "1MiB")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with attacker(mosquitto) as evil:
            evil.send(topics.record(EVIL, "capture"), capture_env(EVIL, "01a252975072-0000000000000001", take="one"))
            evil.init(hashlib.sha256(b"huge").hexdigest(), 64 << 30)
            wait_for(
                lambda: (
                    scrape(url).get("fieldcap_ingest_quota_refusals_total", 0) >= 1
                    and scrape(url).get("fieldcap_ingest_records_invalid_total", 0) >= 1
                ),
                60,
                "the refusals in the metrics",
            )
            evil.send(topics.record(EVIL, "capture"), capture_env(EVIL, "01a252975072-0000000000000002"))
            wait_for(lambda: scrape(url).get("fieldcap_ingest_records_stored_total", 0) >= 1, 60, "a valid record")
            wait_for(lambda: "fieldcap_ingest_open_uploads" in scrape(url), 60, "the staging gauges")
        metrics = scrape(url)
        assert metrics["fieldcap_ingest_messages_total"] >= 3
        assert metrics["fieldcap_ingest_connected"] == 1.0
        assert metrics["fieldcap_ingest_records_stored_total"] == 1
        assert metrics['fieldcap_ingest_records_stored_by_kind_total{kind="capture"}'] == 1
        reasons_seen = {k: v for k, v in metrics.items() if k.startswith("fieldcap_ingest_rejected_by_reason_total")}
        assert sum(reasons_seen.values()) == metrics["fieldcap_ingest_rejected_total"] >= 2, reasons_seen
        assert len(reasons_seen) >= 2  # a schema refusal and a quota refusal are told apart
        for hist in ("receipt_latency", "store_latency"):
            count = metrics[f"fieldcap_ingest_{hist}_seconds_count"]
            assert count >= 1 and metrics[f'fieldcap_ingest_{hist}_seconds_bucket{{le="+Inf"}}'] == count
        assert metrics["fieldcap_ingest_receipt_latency_seconds_count"] >= 3  # one per message
    finally:
        stop(proc)
    assert "metrics on http://127.0.0.1:" in log.read_text()
    assert len(reasons(central)) >= 2


def test_the_minute_line_says_the_same_totals() -> None:
    from central.ingester import IngestStats
    from central.metrics import summary_line

    stats = IngestStats(messages=12, records_stored=10, records_invalid=2)
    first = summary_line(stats, None)
    assert first.startswith("messages 12, records_stored 10,") and "records_invalid 2" in first
    stats.messages += 3
    assert "messages 15 (+3)" in summary_line(stats, {"messages": 12, "records_stored": 10, "records_invalid": 2})
