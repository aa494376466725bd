"""Blobs in an S3-compatible object store: a real moto S3 server, a real Mosquitto, the real device
publisher and ``fieldcap ingest --blobs s3://...`` as a process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    ingest_process,
    running_publisher,
    settings,
    stop,
)

from central.blobs import blob_key
from central.broker import LocalBroker
from central.s3blobs import BlobStoreUnavailable, S3Blobs
from central.staging import Staging
from central.store import SqliteStore

REPO = Path(__file__).resolve().parents[2]


def s3_central(root: Path, bucket: str) -> Central:
    spec = f"s3://{bucket}/fleet/a"
    path = root / "central.db"
    return Central(SqliteStore(path), S3Blobs(spec), f"sqlite:///{path}", spec=spec, staging=root / "staging")


def objects(bucket: str) -> dict[str, int]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_an_ingester_process_stores_blobs_in_s3_exactly_once(
    mosquitto: LocalBroker, device: Device, tmp_path: Path, s3_bucket: str
) -> None:
    central = s3_central(tmp_path / "central", s3_bucket)
    sizes = (700_000, 0, 1, 65535, 65536)
    device.add(records=50, seed=4)
    device.add(blob_sizes=sizes, seed=5)
    device.add(blob_sizes=sizes[:1], seed=5, stream="again")  # the same bytes again: one object
    proc = ingest_process(mosquitto.url, central, tmp_path / "ingest.log")
    try:
        with running_publisher(device, settings(mosquitto.url)) as pub:
            assert pub.wait_idle(60), pub.stats
    finally:
        stop(proc)
    assert_exactly_once(device, central)  # every blob read back from S3 and hashed
    stored = objects(s3_bucket)
    assert len(stored) == len(sizes)  # content-addressed: the repeated blob is one object
    assert all(k.startswith("fleet/a/sha256/") for k in stored)
    assert sorted(stored.values()) == sorted(sizes)
    assert not (tmp_path / "central" / "blobs").exists()  # nothing went to a local blob tree
    central.store.close()
    central.blobs.close()


def test_large_blobs_go_up_in_parts_and_are_verified(tmp_path: Path, s3_bucket: str) -> None:
    backend = S3Blobs(f"s3://{s3_bucket}", part_bytes=5 * 1024 * 1024)
    staging = Staging(backend, tmp_path / "staging")
    data = os.urandom(12 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    assert staging.create("d1", sha)
    for off in range(0, len(data), 1 << 20):
        assert staging.write("d1", sha, off, data[off : off + (1 << 20)])
    staging.sync()
    staging.finish("d1", sha, len(data))
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key=blob_key(sha))
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three 5 MiB parts
    assert backend.verify(sha, len(data)) and not backend.exists(sha, len(data) - 1)
    assert not [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    backend.close()


def _ingest(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent", "ingest", "--broker", "mqtt://127.0.0.1:1"]
    return subprocess.run(
        [*command, "--store", str(tmp_path / "c.db"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_s3_setting_mistakes_are_one_clear_line(tmp_path: Path, s3_bucket: str) -> None:
    staging = ["--staging", str(tmp_path / "staging")]
    missing = _ingest(tmp_path, "--blobs", "s3://no-such-bucket-here/x", *staging)
    assert missing.returncode != 0
    assert "the bucket 'no-such-bucket-here' does not exist; create it or correct --blobs" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_staging = _ingest(tmp_path, "--blobs", f"s3://{s3_bucket}/x")
    assert no_staging.returncode != 0 and "needs --staging DIR" in no_staging.stderr


def test_wrong_s3_credentials_are_named(tmp_path: Path, s3_server_with_auth: dict[str, str]) -> None:
    # The server checks keys, and "testing" is not one it issued.
    out = _ingest(tmp_path, "--blobs", "s3://fieldcap/x", "--staging", str(tmp_path / "s"), env=s3_server_with_auth)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "access denied" in out.stderr and "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in out.stderr


def test_an_object_store_outage_keeps_the_verified_bytes_staged(tmp_path: Path, own_s3_server: Any) -> None:
    boto3.client("s3").create_bucket(Bucket="fieldcap-outage")
    backend = S3Blobs("s3://fieldcap-outage")
    staging = Staging(backend, tmp_path / "staging")
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    assert staging.create("d1", sha) and staging.write("d1", sha, 0, data)
    staging.sync()
    own_s3_server.stop()
    with pytest.raises(BlobStoreUnavailable, match="cannot reach the S3 endpoint") as err:
        staging.finish("d1", sha, len(data))
    assert isinstance(err.value, OSError)  # the ingester's outage path: nothing committed, not acknowledged
    assert staging.path("d1", sha).read_bytes() == data  # ready for the retry once the store is back
    backend.close()
