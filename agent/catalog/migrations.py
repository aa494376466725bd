"""Numbered schema migrations of the local catalog.

Migrations are append-only: a released migration is never edited, a change is a new function.
Each runs in a transaction together with the record of it having been applied (sqlite-utils).
"""

from __future__ import annotations

import sys


def _import_sqlite_utils_without_pandas() -> None:
    """Import sqlite-utils without letting it import pandas.

    sqlite-utils imports pandas (and through it pyarrow, ~100 MB of RSS) whenever pandas is installed,
    only to accept DataFrames, which fieldcap never passes. The agent runs for months on small boxes,
    so pandas is hidden for the length of this one import; other code can still import it later.
    """
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` raise ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]


_import_sqlite_utils_without_pandas()

from sqlite_utils import Database  # noqa: E402
from sqlite_utils.migrations import Migrations  # noqa: E402

__all__ = ["Database", "catalog_migrations"]

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


@catalog_migrations(name="0002_recording_sessions_alignment")
def m0002_recording_sessions_alignment(db: Database) -> None:
    """Takes, session timing and key fingerprint, streamed-segment metadata, alignment runs, clock fits."""
    db.executescript(
        """
        ALTER TABLE sessions ADD COLUMN started_mono_ns INTEGER;
        ALTER TABLE sessions ADD COLUMN ended_mono_ns INTEGER;
        ALTER TABLE sessions ADD COLUMN subject_key_id TEXT;
        ALTER TABLE sessions ADD COLUMN environment_end_json TEXT;
        ALTER TABLE sessions ADD COLUMN clock_end_json TEXT;
        ALTER TABLE sessions ADD COLUMN meta_json TEXT NOT NULL DEFAULT '{}';
        CREATE TABLE takes (
            take_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(session_id),
            item_id TEXT NOT NULL,
            prompt TEXT,
            round INTEGER,
            take_no INTEGER NOT NULL,
            supersedes TEXT REFERENCES takes(take_id),
            status TEXT NOT NULL DEFAULT 'recording'
                CHECK (status IN ('recording', 'done', 'aborted', 'failed')),
            streams_json TEXT NOT NULL DEFAULT '[]',
            captures_json TEXT NOT NULL DEFAULT '{}',
            t_start_mono_ns INTEGER NOT NULL,
            t_stop_mono_ns INTEGER,
            t_start_utc_ns INTEGER NOT NULL,
            clock_json TEXT NOT NULL DEFAULT '{}',
            created_utc TEXT NOT NULL,
            ended_utc TEXT,
            UNIQUE (session_id, item_id, round, take_no)
        );
        CREATE INDEX takes_item ON takes(session_id, item_id, round, take_no);
        CREATE INDEX captures_session ON captures(session_id, t_start_mono_ns);
        ALTER TABLE clock_map ADD COLUMN health_json TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE alignments ADD COLUMN run_id TEXT;
        ALTER TABLE alignments ADD COLUMN kind TEXT;
        ALTER TABLE alignments ADD COLUMN t_mono_ns INTEGER;
        CREATE INDEX alignments_run ON alignments(run_id, kind);
        CREATE TABLE alignment_runs (
            run_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            t_from_mono_ns INTEGER,
            t_to_mono_ns INTEGER,
            summary_json TEXT NOT NULL,
            created_utc TEXT NOT NULL
        );
        CREATE TABLE clock_fits (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES alignment_runs(run_id),
            session_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            device_time TEXT NOT NULL,
            drift_ppm REAL,
            points INTEGER NOT NULL,
            span_s REAL NOT NULL,
            residual_rms_ns REAL,
            detail_json TEXT NOT NULL DEFAULT '{}'
        );
        """
    )


@catalog_migrations(name="0003_operations_indexes")
def m0003_operations_indexes(db: Database) -> None:
    """Indexes for retention (media still on disk, superseded takes) and the backlog of unsent blobs."""
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS captures_media_kept ON captures(t_start_utc_ns)
            WHERE path IS NOT NULL AND media_deleted_utc IS NULL;
        CREATE INDEX IF NOT EXISTS captures_supersedes ON captures(supersedes) WHERE supersedes IS NOT NULL;
        CREATE INDEX IF NOT EXISTS outbox_blob_state ON outbox(blob_state) WHERE blob_state IN ('pending', 'sent');
        """
    )


@catalog_migrations(name="0004_channel_verdicts")
def m0004_channel_verdicts(db: Database) -> None:
    """Per-microphone QC verdicts of multi-channel audio takes, beside the per-capture verdict.

    ``verdicts`` keeps one verdict per capture (the worst channel's), which sync and the rest of the
    agent use. A booth records near and mid microphones as two channels of one take, and the
    operator needs to know which of them failed, so each channel's own screening is kept here: one
    row per (capture, channel), all channels of a capture synced as one ``channel_verdict`` record.
    The partial index lets the booth find takes still to be screened per channel without scanning
    the frames and segments of a long-running daemon.
    """
    db.executescript(
        """
        CREATE TABLE channel_verdicts (
            capture_id TEXT NOT NULL REFERENCES captures(record_id),
            channel INTEGER NOT NULL,
            mic TEXT NOT NULL,
            record_id TEXT NOT NULL,
            profile TEXT NOT NULL,
            profile_version TEXT NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'review')),
            reasons_json TEXT NOT NULL,
            metrics_json TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            PRIMARY KEY (capture_id, channel)
        );
        CREATE INDEX IF NOT EXISTS captures_takes ON captures(t_start_mono_ns) WHERE kind = 'take';
        """
    )


@catalog_migrations(name="0005_drift_uncertainty")
def m0005_drift_uncertainty(db: Database) -> None:
    """Each clock fit's drift uncertainty and whether the drift is significant (its interval excludes zero)."""
    db.executescript(
        """
        ALTER TABLE clock_fits ADD COLUMN drift_uncertainty_ppm REAL;
        ALTER TABLE clock_fits ADD COLUMN drift_significant INTEGER;
        """
    )


@catalog_migrations(name="0006_central_commands")
def m0006_central_commands(db: Database) -> None:
    """Central commands applied (each id once) and the re-record requests they brought to the booth."""
    db.executescript(
        """
        CREATE TABLE commands (
            command_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('applied', 'refused')),
            message TEXT NOT NULL,
            body_json TEXT NOT NULL,
            received_utc TEXT NOT NULL
        );
        CREATE TABLE rerecord_requests (
            command_id TEXT NOT NULL,
            take_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            received_utc TEXT NOT NULL,
            PRIMARY KEY (command_id, take_id)
        );
        CREATE INDEX rerecord_requests_take ON rerecord_requests(take_id);
        """
    )


@catalog_migrations(name="0007_plans_participants")
def m0007_plans_participants(db: Database) -> None:
    """Collection-plan assignments pushed by the central side, and the participants enrolled here."""
    db.executescript(
        """
        CREATE TABLE assignments (
            command_id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            version TEXT NOT NULL,
            site TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            body_json TEXT NOT NULL,
            received_utc TEXT NOT NULL,
            superseded_by TEXT
        );
        CREATE INDEX assignments_current ON assignments(superseded_by, created_utc);
        CREATE TABLE participants (
            subject_pseudonym TEXT PRIMARY KEY,
            subject_key_id TEXT,
            plan TEXT NOT NULL,
            site TEXT NOT NULL,
            attributes_json TEXT NOT NULL,
            consent_scope TEXT NOT NULL,
            consent_date TEXT NOT NULL,
            consent_expires TEXT,
            consent_ref TEXT NOT NULL,
            enrolled_utc TEXT NOT NULL,
            updated_utc TEXT NOT NULL
        );
        """
    )


@catalog_migrations(name="0008_scale_indexes")
def m0008_scale_indexes(db: Database) -> None:
    """Indexes that keep the publisher's receipt wait and ``fieldcap ls --limit`` flat as the catalog grows.

    ``unconfirmed`` walked the whole outbox in seq order looking for the few 'sent' rows (SQLite
    prefers the rowid order to a sort), and ``ls`` sorted every capture to print the first few.
    """
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS outbox_sent ON outbox(seq) WHERE record_state = 'sent';
        CREATE INDEX IF NOT EXISTS captures_time ON captures(t_start_mono_ns, record_id);
        """
    )
