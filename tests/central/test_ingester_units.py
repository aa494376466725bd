"""The central side without a broker: staging races, crash windows, receipts, store and CLI errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import cli
from central.blobs import BlobTree
from central.errors import StoreError
from central.ingester import Ingester, Outage, _pack
from central.staging import Staging
from central.store import SqliteStore, open_store
from sync import topics
from sync.wire import MAX_MISSING_RANGES, BlobFin, BlobInit, Receipt, encode


@pytest.fixture
def ing(tmp_path: Path) -> Ingester:
    return Ingester(broker="mqtt://127.0.0.1:1", store=SqliteStore(tmp_path / "c.db"), blobs=BlobTree(tmp_path / "b"))


def capture_body(**extra: object) -> dict[str, object]:
    """A capture body as a device's catalog writes it (``sync.records.CaptureV1``)."""
    return {
        "record_id": "0123456789ab-1",
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
        **extra,
    }


def announce(ing: Ingester, data: bytes, device: str = "d1") -> str:
    sha = hashlib.sha256(data).hexdigest()
    init = BlobInit(sha256=sha, size=len(data), chunk_size=65536, media_type="audio/wav")
    ing.handle(topics.blob_init(device, sha), encode(init))
    return sha


def fin(ing: Ingester, sha: str, size: int, device: str = "d1") -> Receipt:
    ing.handle(topics.blob_fin(device, sha), encode(BlobFin(sha256=sha, size=size)))
    return ing.pending_receipts[-1][1]


def test_a_late_chunk_cannot_change_a_verified_blob(tmp_path: Path) -> None:
    tree = BlobTree(tmp_path / "b")
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    # two ingesters sharing the tree
    writer, finisher = Staging(tree, tree.staging_dir), Staging(tree, tree.staging_dir)
    assert writer.create("d1", sha)
    assert writer.write("d1", sha, 0, data)  # the writer keeps its file open, as within a batch
    finisher.finish("d1", sha, len(data))
    assert not writer.write("d1", sha, 0, b"EVIL" * 100)  # its open file is no longer the staging file
    writer.sync()
    assert tree.path_for(sha).read_bytes() == data
    assert not tree.staging_path("d1", sha).exists()


def test_crash_between_publishing_a_blob_and_committing_it(ing: Ingester) -> None:
    data = os.urandom(200_000)
    sha = announce(ing, data)
    for off in range(0, len(data), 65536):
        ing.handle(topics.blob_chunk("d1", sha, off), data[off : off + 65536])
    # The fin handler got as far as linking the verified file, then the process died before commit.
    ing.intake.staging.finish("d1", sha, len(data))
    assert ing.store.blob_size(sha) is None and ing.store.count("chunks") > 0
    assert fin(ing, sha, len(data)).status == "stored"  # the redelivered fin completes it
    assert ing.blobs.verify(sha, len(data)) and ing.store.count("chunks") == 0


def test_lost_staging_bytes_make_the_device_start_over(ing: Ingester) -> None:
    data = os.urandom(70_000)
    sha = announce(ing, data)
    ing.handle(topics.blob_chunk("d1", sha, 0), data[:65536])
    ing.handle(topics.blob_chunk("d1", sha, 65536), data[65536:])
    ing.blobs.staging_path("d1", sha).unlink()  # e.g. someone cleaned the staging directory
    assert fin(ing, sha, len(data)).status == "missing"
    sha2 = announce(ing, data)
    assert ing.pending_receipts[-1][1].status == "missing" and sha2 == sha  # a fresh start
    ing.handle(topics.blob_chunk("d1", sha, 0), data)
    assert fin(ing, sha, len(data)).status == "stored"


def test_chunks_of_another_size_overlap_harmlessly(ing: Ingester) -> None:
    data = os.urandom(300_000)
    sha = announce(ing, data)
    ing.handle(topics.blob_chunk("d1", sha, 0), data[:65536])
    ing.handle(topics.blob_chunk("d1", sha, 65536), data[65536:131072])
    partial = fin(ing, sha, len(data))
    assert partial.status == "partial" and partial.missing == [(131072, 300_000)]
    for off in range(100_000, len(data), 20_000):  # resumed with 20,000-byte chunks, overlapping
        ing.handle(topics.blob_chunk("d1", sha, off), data[off : off + 20_000])
    assert fin(ing, sha, len(data)).status == "stored"
    assert ing.blobs.path_for(sha).read_bytes() == data


def test_partial_receipts_list_a_bounded_number_of_gaps(ing: Ingester) -> None:
    data = os.urandom(1000 * 10)
    sha = announce(ing, data)
    for off in range(0, len(data), 20):  # every other 10-byte piece
        ing.handle(topics.blob_chunk("d1", sha, off), data[off : off + 10])
    r = fin(ing, sha, len(data))
    assert r.status == "partial" and r.missing is not None and len(r.missing) == MAX_MISSING_RANGES


def test_a_record_id_reused_with_another_body_is_kept_once_and_reported(ing: Ingester) -> None:
    env = {
        "schema_version": 1,
        "record_id": "0123456789ab-1",
        "device": "d1",
        "kind": "capture",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "body": capture_body(meta={"v": 1}),
    }
    ing.handle(topics.record("d1", "capture"), json.dumps(env).encode())
    ing.handle(topics.record("d1", "capture"), json.dumps({**env, "body": capture_body(meta={"v": 2})}).encode())
    assert [r.status for _d, r in ing.pending_receipts] == ["stored", "duplicate"]
    assert json.loads(ing.store.record_body("d1", "0123456789ab-1") or "{}")["body"]["meta"] == {"v": 1}
    (dead,) = ing.store.dead_letters()
    assert "already stored with a different body" in dead["reason"]


def test_receipts_are_packed_below_the_packet_limit() -> None:
    receipts = [Receipt(type="record", id=f"{i:012x}-abc", status="stored", reply_to="rec") for i in range(1000)]
    payloads = _pack(receipts, 10_000)
    assert all(len(p) <= 10_000 for p in payloads)
    assert sum(len(json.loads(p)["receipts"]) for p in payloads) == 1000


def test_a_store_that_fails_is_an_outage_not_a_dead_letter(ing: Ingester) -> None:
    ing.store.close()
    with pytest.raises(Outage):
        ing.handle(topics.record("d1", "capture"), b"{}")


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    with store._tx() as cur:
        cur.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    store.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(f"sqlite:///{tmp_path / 'c.db'}")


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["central", "ls", "--store", "ftp://x/y"])
    assert res.exit_code == 1 and "neither sqlite:///PATH nor postgresql://" in res.output
    assert "Traceback" not in res.output
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    res = runner.invoke(cli, ["central", "ls", "--store", f"sqlite:///{tmp_path / 'junk.db'}"])
    assert res.exit_code == 1 and "junk.db: file is not a database" in res.output
    res = runner.invoke(
        cli, ["ingest", "--broker", "http://x", "--store", str(tmp_path / "c.db"), "--blobs", str(tmp_path / "b")]
    )
    assert res.exit_code == 1 and "is not a broker URL" in res.output
    res = runner.invoke(
        cli,
        [
            "ingest",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--store",
            str(tmp_path / "c.db"),
            "--blobs",
            str(tmp_path / "b"),
            "--group",
            "a/b",
        ],
    )
    assert res.exit_code == 1 and "ingest group 'a/b'" in res.output


def test_central_ls_lists_what_is_stored(ing: Ingester, tmp_path: Path) -> None:
    env = {
        "schema_version": 1,
        "record_id": "0123456789ab-2",
        "device": "d1",
        "kind": "capture",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "body": capture_body(record_id="0123456789ab-2"),
    }
    ing.handle(topics.record("d1", "capture"), json.dumps(env).encode())
    ing.handle("fieldcap/v1/d1/up/nonsense", b"x")
    res = CliRunner().invoke(cli, ["central", "ls", "--store", f"sqlite:///{tmp_path / 'c.db'}", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(line) for line in res.output.splitlines()]
    assert row["record_id"] == "0123456789ab-2" and row["device"] == "d1" and row["kind"] == "capture"
    res = CliRunner().invoke(
        cli, ["central", "ls", "--store", f"sqlite:///{tmp_path / 'c.db'}", "--dead-letters", "--json"]
    )
    (dead,) = [json.loads(line) for line in res.output.splitlines()]
    assert "not a fieldcap upload topic" in dead["reason"]


def test_a_wrong_size_announced_first_cannot_block_the_real_upload(ing: Ingester) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    bogus = BlobInit(sha256=sha, size=999_999, chunk_size=65536, media_type="audio/wav")
    ing.handle(topics.blob_init("rogue", sha), encode(bogus))
    announce(ing, data)  # the honest device, with the true size
    ing.handle(topics.blob_chunk("d1", sha, 0), data)
    assert fin(ing, sha, len(data)).status == "stored"
    assert ing.blobs.path_for(sha).read_bytes() == data
