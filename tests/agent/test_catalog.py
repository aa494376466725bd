"""The local catalog: migrations on existing databases, capture + outbox atomicity, state mirroring."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from agent.catalog import migrations
from agent.catalog.db import Catalog
from sync.outbox import BlobRef


def add_capture(cat: Catalog, media: BlobRef | None = None, rel: str | None = None) -> str:
    return cat.add_capture(
        stream="cam",
        kind="frame",
        modality="visible",
        t_start_mono_ns=1,
        t_end_mono_ns=2,
        t_start_utc_ns=3,
        seq_first=0,
        seq_last=0,
        media=media,
        media_rel=rel,
        meta={"k": 1},
    )


def test_new_catalog_is_wal_and_migrated(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {m.name for m in migrations.catalog_migrations.applied(cat.db)}
        assert "0001_initial" in names
        assert not migrations.catalog_migrations.pending(cat.db)


def test_migrations_upgrade_an_existing_database_and_keep_its_rows(tmp_path: Path, monkeypatch: object) -> None:
    path = tmp_path / "catalog.sqlite"
    with Catalog(path, "dev") as cat:
        rid = add_capture(cat)
    # A later release adds a migration; the existing database must be upgraded in place.
    newer = copy.deepcopy(migrations.catalog_migrations)

    @newer(name="9999_add_note")
    def _add_note(db: Database) -> None:
        db.execute("ALTER TABLE captures ADD COLUMN note TEXT")
        db.execute("UPDATE captures SET note = 'migrated'")

    mp = pytest.MonkeyPatch()
    mp.setattr("agent.catalog.store.catalog_migrations", newer)
    try:
        with Catalog(path, "dev") as cat:
            row = cat.conn.execute("SELECT record_id, note FROM captures").fetchone()
            assert tuple(row) == (rid, "migrated")
            assert [m.name for m in newer.applied(cat.db)][-1] == "9999_add_note"
        with Catalog(path, "dev") as cat:  # applying again is a no-op
            assert cat.conn.execute("SELECT COUNT(*) FROM captures").fetchone()[0] == 1
    finally:
        mp.undo()


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    Catalog(path, "dev").close()
    broken = copy.deepcopy(migrations.catalog_migrations)

    @broken(name="9998_broken")
    def _broken(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("boom")

    db = Database(sqlite3.connect(path))
    with pytest.raises(sqlite3.OperationalError):
        broken.apply(db)
    assert "half" not in db.table_names()
    assert "9998_broken" not in {m.name for m in broken.applied(db)}


def test_capture_and_outbox_row_commit_together(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        media = BlobRef("ab" * 32, 5, tmp_path / "m.jpg", "image/jpeg")
        rid = add_capture(cat, media, "media/m.jpg")
        (out,) = cat.outbox.records_to_send(10, set())
        assert out.record_id == rid and out.blob is not None
        assert out.blob.path == tmp_path / "media/m.jpg"
        assert cat.outbox.blobs_to_send(10, set())[0].sha256 == "ab" * 32
        # A failing insert leaves neither row behind.
        with pytest.raises(sqlite3.IntegrityError), cat.transaction() as conn:
            conn.execute("INSERT INTO outbox (record_id, kind, body_json, created_utc) VALUES ('x','k','{}','t')")
            conn.execute("INSERT INTO captures (record_id) VALUES ('broken')")
        assert cat.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1


def test_capture_state_follows_receipts(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        media = BlobRef("cd" * 32, 5, tmp_path / "m.jpg", "image/jpeg")
        rid = add_capture(cat, media, "media/m.jpg")
        assert cat.captures()[0].state == "committed"
        cat.outbox.mark_records([rid], "sent")
        assert cat.captures()[0].state == "synced"
        cat.outbox.mark_records([rid], "confirmed")
        assert cat.captures()[0].state == "synced"  # the blob is not confirmed yet
        cat.outbox.mark_blob("cd" * 32, "confirmed")
        assert cat.captures()[0].state == "confirmed"
        cat.outbox.mark_records([rid], "pending")  # a confirmed record never goes back
        assert cat.captures()[0].state == "confirmed"
        assert cat.outbox_backlog() == (0, 0)
