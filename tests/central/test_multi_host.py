"""Ingesters on two hosts (network namespaces made by the test) share one broker, one PostgreSQL and
one blob store; one is killed with SIGKILL in the middle of the uploads and the other finishes them.

The broker and PostgreSQL run on this machine and are reached over the hosts' veth links; a device
syncs from this machine with its upload bandwidth capped, so the kill lands while blobs are half
uploaded. Promise: every record and blob is stored exactly once, every receipt is signed, and the
surviving ingester did the rest.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))  # the sync tests' harness
import netns
from sync_harness import REPO, Central, Device, assert_exactly_once, running_publisher, settings, wait_for

from central.blobs import BlobTree
from central.broker import LocalBroker, free_port
from central.store import open_store
from sync.signing import PRIVATE_NAME, PUBLIC_NAME, ReceiptVerifier, generate

_spec = importlib.util.spec_from_file_location(
    "fieldcap_pg_cluster", Path(__file__).resolve().parents[1] / "pg_cluster.py"
)
assert _spec is not None and _spec.loader is not None
_pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pg)
PgCluster, pg_bin = _pg.PgCluster, _pg.pg_bin

BLOB_MB = 6
BLOBS = 4
METRICS_PORT = 9848  # each host has its own address, so both may use it
BANDWIDTH = 3_000_000  # bytes/s: 24 MB of media take ~8 s, so a kill after the first MB is mid-blob


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[netns.Host]]:
    why = netns.available()
    if why is not None:
        pytest.skip(why)
    with netns.hosts(2) as made:
        yield made


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[Any]:
    if pg_bin() is None:
        pytest.fail("PostgreSQL server binaries are missing: run `./dev test`, which installs Debian's postgresql")
    cluster = PgCluster(trust_nets=(netns.NET,))
    with cluster:
        yield cluster


def start_ingester(
    host: netns.Host, broker_port: int, pg: Any, blobs: Path, key: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``fieldcap ingest`` on ``host``, reaching the broker and PostgreSQL over its link."""
    url = f"postgresql://postgres@{host.gateway}:{pg.port}/{pg.database}"
    argv = [
        sys.executable, "-m", "agent", "-v", "ingest",
        "--broker", f"mqtt://{host.gateway}:{broker_port}",
        "--store", url,
        "--blobs", str(blobs),
        "--group", "multi",
        "--client-id", f"ingest-{host.name}",
        "--receipt-key", str(key),
        "--metrics-address", host.address,
        "--metrics-port", str(METRICS_PORT),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            host.command(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    wait_for(
        lambda: b"ingesting from" in log.read_bytes() or proc.poll() is not None, 90, f"the ingester on {host.name}"
    )
    assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
    return proc


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return {name: float(value) for name, value in (ln.rsplit(" ", 1) for ln in lines if ln and ln[0] != "#")}


def test_one_ingester_killed_mid_blob_the_other_finishes(
    hosts: list[netns.Host], shared_pg: Any, tmp_path: Path
) -> None:
    port = free_port()
    listener = f"listener {port} 0.0.0.0\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
    private, public, _ = generate(tmp_path / "keys")
    assert private.name == PRIVATE_NAME and public.name == PUBLIC_NAME
    blobs = tmp_path / "blobs"  # one blob store both hosts mount
    device = Device(tmp_path / "device", "dev-multi")
    device.add(records=300, blob_sizes=tuple([BLOB_MB * 1_000_000] * BLOBS), seed=5)
    with LocalBroker(tmp_path / "broker", port=port, config=listener) as broker:
        a = start_ingester(hosts[0], port, shared_pg, blobs, private, tmp_path / "a.log")
        b = start_ingester(hosts[1], port, shared_pg, blobs, private, tmp_path / "b.log")
        try:
            sync = settings(f"mqtt://127.0.0.1:{broker.port}", bandwidth_bps=BANDWIDTH, receipt_timeout_s=5.0)
            with running_publisher(device, sync, verifier=ReceiptVerifier.load(public)) as pub:
                wait_for(lambda: pub.stats.chunks_sent >= 16, 120, "the first megabyte of media on its way")
                assert device.confirmed() < device.total(), "the uploads finished before the kill: raise BLOB_MB"
                a.send_signal(signal.SIGKILL)
                a.wait(10)
                killed_at = time.monotonic()
                wait_for(lambda: device.confirmed() == device.total(), 300, "every item confirmed by the survivor")
                print(f"\nall confirmed {time.monotonic() - killed_at:.1f} s after the kill")
            survivor = scrape(f"http://{hosts[1].address}:{METRICS_PORT}/metrics")
        finally:
            for proc in (a, b):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(20)
    store = open_store(shared_pg.url)
    try:
        central = Central(store, BlobTree(blobs), shared_pg.url)
        assert_exactly_once(device, central)
        assert len(store.list_blobs()) == BLOBS
    finally:
        store.close()
    blobs_b, records_b = (survivor[f"fieldcap_ingest_{k}_stored_total"] for k in ("blobs", "records"))
    print(f"the survivor stored {blobs_b:.0f} blobs and {records_b:.0f} records")
    assert blobs_b >= 1  # the blobs in flight at the kill were finished here
