"""Numbered migrations of the central store's schema (SQLite and PostgreSQL alike).

Append-only: a released migration is never edited; a change is a new entry. Each store records its
version in ``meta.schema`` and every applied step in ``schema_migrations``; opening a store applies
the missing steps in order, in the transaction that also records them, so an upgrade happens
completely or not at all (a store written by a newer fieldcap is refused, never downgraded).
Version numbers continue the ones stores already carried: 2 is the oldest store that can be
upgraded. Statements are written for SQLite; ``CentralStore.dialect`` adapts them to PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


META = """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)"""

APPLIED = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_utc TEXT NOT NULL
)"""

_DEAD_LETTERS = """CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_utc TEXT NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    reason TEXT NOT NULL,
    payload_size BIGINT NOT NULL,
    payload BLOB NOT NULL
)"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "records, blobs, staging by sha256, dead letters",
        (
            """CREATE TABLE IF NOT EXISTS records (
                device TEXT NOT NULL,
                record_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                created_utc TEXT NOT NULL,
                received_utc TEXT NOT NULL,
                blob_sha256 TEXT,
                blob_size BIGINT,
                body TEXT NOT NULL,
                PRIMARY KEY (device, record_id)
            )""",
            "CREATE INDEX IF NOT EXISTS records_kind ON records(kind, received_utc)",
            "CREATE INDEX IF NOT EXISTS records_blob ON records(blob_sha256)",
            """CREATE TABLE IF NOT EXISTS blobs (
                sha256 TEXT PRIMARY KEY,
                size BIGINT NOT NULL,
                media_type TEXT NOT NULL,
                device TEXT NOT NULL,
                received_utc TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS staging (
                sha256 TEXT PRIMARY KEY,
                size BIGINT NOT NULL,
                media_type TEXT NOT NULL,
                device TEXT NOT NULL,
                started_utc TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS chunks (
                sha256 TEXT NOT NULL,
                "offset" BIGINT NOT NULL,
                length BIGINT NOT NULL,
                PRIMARY KEY (sha256, "offset")
            )""",
            _DEAD_LETTERS,
        ),
    ),
    Migration(
        3,
        "per-device staging and blob owners",
        (
            # Uploads in flight are state, not data: their rows go (the devices' next init starts
            # them again) and the old staging files expire.
            "DROP TABLE IF EXISTS chunks",
            "DROP TABLE IF EXISTS staging",
            """CREATE TABLE staging (
                device TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size BIGINT NOT NULL,
                media_type TEXT NOT NULL,
                started_utc TEXT NOT NULL,
                touched_utc TEXT NOT NULL,
                PRIMARY KEY (device, sha256)
            )""",
            """CREATE TABLE chunks (
                device TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                "offset" BIGINT NOT NULL,
                length BIGINT NOT NULL,
                PRIMARY KEY (device, sha256, "offset")
            )""",
            # Which device uploaded (and so may use) which blob: storage is content-addressed and
            # shared, but what a device is told depends only on its own uploads. Stored blobs
            # belong to the device that uploaded them.
            """CREATE TABLE blob_owners (
                device TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                received_utc TEXT NOT NULL,
                PRIMARY KEY (device, sha256)
            )""",
            "INSERT INTO blob_owners (device, sha256, received_utc) SELECT device, sha256, received_utc FROM blobs",
            "CREATE INDEX dead_letters_device ON dead_letters(device, id)",
        ),
    ),
    Migration(
        4,
        "indexes for central ls, exports, reports and the sweep",
        (
            # central ls: records in arrival order, overall, per device and per kind, without sorting the table.
            "CREATE INDEX records_received ON records(received_utc, record_id)",
            "CREATE INDEX records_device_received ON records(device, received_utc, record_id)",
            "DROP INDEX IF EXISTS records_kind",
            # ... and exports/reports select by kind (read_records, the card's counts per kind).
            "CREATE INDEX records_kind_received ON records(kind, received_utc, record_id)",
            # The sweep: abandoned uploads and expired dead letters.
            "CREATE INDEX staging_touched ON staging(touched_utc)",
            "CREATE INDEX dead_letters_received ON dead_letters(received_utc)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "central → device commands and the audit trail",
        (
            # IF NOT EXISTS: stores made between the command channel and this migration have them.
            """CREATE TABLE IF NOT EXISTS commands (
                command_id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_utc TEXT NOT NULL,
                created_by TEXT NOT NULL,
                acked_utc TEXT,
                ack_status TEXT,
                ack_message TEXT,
                ack_counts TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS commands_open ON commands(acked_utc, device)",
            """CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY,
                at_utc TEXT NOT NULL,
                who TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        6,
        "ingester heartbeats",
        (
            # One row per ingester process (its MQTT client id), rewritten every minute and at start
            # and stop: `fieldcap central status` reads who is alive and what they have done.
            """CREATE TABLE IF NOT EXISTS ingesters (
                client_id TEXT PRIMARY KEY,
                host TEXT NOT NULL,
                pid BIGINT NOT NULL,
                version TEXT NOT NULL,
                started_utc TEXT NOT NULL,
                seen_utc TEXT NOT NULL,
                stopped_utc TEXT,
                counters TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "device projects for row-level access, the database user in the audit trail",
        (
            # Which project(s) a device's data belongs to: PostgreSQL policies (central.access) let
            # an exporter see only the rows of devices in the projects it was granted.
            """CREATE TABLE device_projects (
                device TEXT NOT NULL,
                project TEXT NOT NULL,
                PRIMARY KEY (device, project)
            )""",
            "CREATE INDEX device_projects_project ON device_projects(project, device)",
            # The OS user says who typed the command; the database role says whose credentials did it.
            "ALTER TABLE audit ADD COLUMN db_user TEXT",
            "CREATE INDEX audit_action ON audit(action, at_utc)",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
OLDEST = MIGRATIONS[0].version
