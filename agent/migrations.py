"""Numbered schema migrations of the local catalog.

Migrations are append-only: a released migration is never edited, a change is a new function.
Each runs in a transaction together with the record of it having been applied (sqlite-utils).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

catalog_migrations = Migrations("fieldcap.catalog")


@catalog_migrations(name="0001_initial")
def m0001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE devices (
            name TEXT PRIMARY KEY,
            driver TEXT NOT NULL,
            modality TEXT NOT NULL,
            settings_json TEXT NOT NULL,
            updated_utc TEXT NOT NULL
        );
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            site TEXT NOT NULL,
            station TEXT NOT NULL,
            operator TEXT NOT NULL DEFAULT '',
            subject_pseudonym TEXT,
            script TEXT,
            round INTEGER,
            environment_json TEXT NOT NULL DEFAULT '{}',
            clock_json TEXT NOT NULL DEFAULT '{}',
            started_utc TEXT NOT NULL,
            ended_utc TEXT
        );
        CREATE TABLE streams (
            stream_id TEXT PRIMARY KEY,
            device TEXT NOT NULL,
            session_id TEXT REFERENCES sessions(session_id),
            modality TEXT NOT NULL,
            settings_json TEXT NOT NULL,
            created_utc TEXT NOT NULL
        );
        CREATE TABLE captures (
            record_id TEXT PRIMARY KEY,
            stream TEXT NOT NULL,
            stream_id TEXT REFERENCES streams(stream_id),
            session_id TEXT REFERENCES sessions(session_id),
            kind TEXT NOT NULL,
            modality TEXT NOT NULL,
            path TEXT,
            sha256 TEXT,
            size INTEGER,
            media_type TEXT,
            t_start_mono_ns INTEGER NOT NULL,
            t_end_mono_ns INTEGER NOT NULL,
            t_start_utc_ns INTEGER NOT NULL,
            seq_first INTEGER NOT NULL,
            seq_last INTEGER NOT NULL,
            item_id TEXT,
            take INTEGER,
            supersedes TEXT REFERENCES captures(record_id),
            meta_json TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT 'committed'
                CHECK (state IN ('committed', 'synced', 'confirmed', 'rejected')),
            created_utc TEXT NOT NULL,
            confirmed_utc TEXT,
            media_deleted_utc TEXT
        );
        CREATE INDEX captures_stream ON captures(stream, t_start_mono_ns);
        CREATE INDEX captures_sha ON captures(sha256);
        CREATE TABLE readings (
            id INTEGER PRIMARY KEY,
            stream TEXT NOT NULL,
            seq INTEGER NOT NULL,
            t_mono_ns INTEGER NOT NULL,
            t_utc_ns INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL,
            record_id TEXT
        );
        CREATE INDEX readings_stream ON readings(stream, t_mono_ns);
        CREATE TABLE clock_map (
            id INTEGER PRIMARY KEY,
            t_mono_ns INTEGER NOT NULL,
            t_realtime_ns INTEGER NOT NULL,
            synced INTEGER NOT NULL,
            maxerror_us INTEGER,
            esterror_us INTEGER,
            reason TEXT NOT NULL
        );
        CREATE TABLE alignments (
            id INTEGER PRIMARY KEY,
            session_id TEXT,
            stream_a TEXT NOT NULL,
            stream_b TEXT NOT NULL,
            record_a TEXT,
            record_b TEXT,
            offset_ns INTEGER,
            matched INTEGER NOT NULL,
            detail_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE annotations (
            record_id TEXT PRIMARY KEY,
            capture_id TEXT NOT NULL REFERENCES captures(record_id),
            kind TEXT NOT NULL,
            label TEXT NOT NULL,
            score REAL,
            t_start_s REAL,
            t_end_s REAL,
            geometry_json TEXT,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            model_sha256 TEXT,
            created_utc TEXT NOT NULL
        );
        CREATE INDEX annotations_capture ON annotations(capture_id);
        CREATE TABLE verdicts (
            record_id TEXT PRIMARY KEY,
            capture_id TEXT NOT NULL UNIQUE REFERENCES captures(record_id),
            profile TEXT NOT NULL,
            profile_version TEXT NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'review')),
            reasons_json TEXT NOT NULL,
            metrics_json TEXT NOT NULL,
            analyzers_json TEXT NOT NULL,
            created_utc TEXT NOT NULL
        );
        CREATE TABLE events (
            record_id TEXT PRIMARY KEY,
            t_utc_ns INTEGER NOT NULL,
            t_mono_ns INTEGER NOT NULL,
            kind TEXT NOT NULL,
            stream TEXT,
            count INTEGER NOT NULL DEFAULT 1,
            message TEXT NOT NULL,
            detail_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_kind ON events(kind, t_utc_ns);
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            record_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            body_json TEXT NOT NULL,
            blob_sha256 TEXT,
            blob_size INTEGER,
            blob_path TEXT,
            media_type TEXT,
            priority INTEGER NOT NULL DEFAULT 0,
            record_state TEXT NOT NULL DEFAULT 'pending'
                CHECK (record_state IN ('pending', 'sent', 'confirmed', 'rejected')),
            blob_state TEXT
                CHECK (blob_state IN ('pending', 'sent', 'confirmed', 'rejected')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_utc TEXT NOT NULL,
            confirmed_utc TEXT
        );
        CREATE INDEX outbox_pending ON outbox(record_state, priority, seq);
        CREATE INDEX outbox_blob ON outbox(blob_sha256);
        CREATE TABLE state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """
    )
