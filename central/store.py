"""The central store: records, the blob index, chunk staging state and dead letters.

SQLite (one file, the embedded default) or PostgreSQL (several ingesters). Both take the same SQL,
written once with ``?`` placeholders; the PostgreSQL store rewrites them. Staging state (which
byte ranges of which blob have arrived) lives here and the staged bytes in a staging directory
(``central.staging``), not in an ingester's memory, so any ingester that shares that directory can
finish a blob another one started. Uniqueness on (device, record_id) and on the blob sha256 makes
every redelivery harmless. The schema and its upgrades are in ``central.migrations``.

Every operation runs in the current batch transaction when one is open (``with store.batch():``),
so an ingester commits once per batch of messages instead of once per message — on a disk where a
synchronous commit costs milliseconds that is the difference between hundreds and thousands of
messages per second. Outside a batch each call is its own transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from central.errors import StoreError
from central.migrations import APPLIED, META, MIGRATIONS, OLDEST, SCHEMA_VERSION
from sync.wire import utc_now

DEAD_LETTER_KEEP = 4096  # bytes of a rejected payload kept for inspection

Table = Literal["records", "blobs", "blob_owners", "dead_letters", "chunks", "staging"]


def _version(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise StoreError(
            f"the central store's schema version {value!r} is not a number; is it a fieldcap central store?"
        ) from None


def printable(text: str, limit: int) -> str:
    """Text safe for any TEXT column: no NUL (PostgreSQL refuses it), no lone surrogates, bounded."""
    return text[:limit].replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class BlobState:
    status: Literal["stored", "partial", "missing"]
    size: int | None = None
    missing: tuple[tuple[int, int], ...] = ()


def missing_ranges(size: int, pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of ``size`` not covered by (offset, length) pieces (which may overlap)."""
    gaps: list[tuple[int, int]] = []
    pos = 0
    for offset, length in sorted(pieces):
        if offset > pos:
            gaps.append((pos, min(offset, size)))
        pos = max(pos, offset + length)
        if pos >= size:
            break
    if pos < size:
        gaps.append((pos, size))
    return [g for g in gaps if g[0] < g[1]]


class CentralStore(ABC):
    """Operations the ingester needs, in the open batch transaction or each in its own."""

    placeholder = "?"

    def __init__(self) -> None:
        self._local = threading.local()

    # ------------------------------------------------------------------ transactions

    @abstractmethod
    @contextmanager
    def _begin(self) -> Iterator[Any]:
        """A new transaction; yields a cursor, commits on success, rolls back on error."""

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        cur = getattr(self._local, "cursor", None)
        if cur is not None:
            yield cur
            return
        with self._begin() as cur:
            yield cur

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for everything done inside the block (this thread only)."""
        if getattr(self._local, "cursor", None) is not None:
            raise RuntimeError("store batches do not nest")
        with self._begin() as cur:
            self._local.cursor = cur
            try:
                yield
            finally:
                self._local.cursor = None

    def is_transient(self, exc: BaseException) -> bool:
        """True for errors that a retry of the same transaction may not hit (lock conflicts)."""
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(args))
        return cur

    def init_schema(self, upto: int | None = None) -> None:
        """Create the schema or upgrade it to ``upto`` (default: the newest) in one transaction.

        StoreError for a store this fieldcap cannot upgrade (newer, or older than any migration).
        ``upto`` builds an older store (tests of the upgrades).
        """
        target = SCHEMA_VERSION if upto is None else upto
        with self._tx() as cur:
            for stmt in self.prelude():
                cur.execute(stmt)
            if self.has_table(cur, "meta"):
                # Up to date: no DDL at all, so roles that may not create tables (PostgreSQL) can open it.
                done = self._exec(cur, "SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if done is not None and target <= _version(done[0]) <= SCHEMA_VERSION:
                    return
            cur.execute(META)
            row = self._exec(cur, "SELECT value FROM meta WHERE key = 'schema'").fetchone()
            current = _version(row[0]) if row is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the central store has schema version {current}, newer than this fieldcap's {SCHEMA_VERSION}:"
                    " it was upgraded by a newer fieldcap; run that version (stores are never downgraded)"
                )
            if 0 < current < OLDEST:
                raise StoreError(
                    f"the central store has schema version {current}; this fieldcap upgrades stores from version"
                    f" {OLDEST} on: upgrade it with an older fieldcap first"
                )
            cur.execute(self.dialect(APPLIED))
            for migration in MIGRATIONS:
                if current < migration.version <= target:
                    for stmt in migration.statements:
                        cur.execute(self.dialect(stmt))
                    self._exec(
                        cur,
                        "INSERT INTO schema_migrations (version, name, applied_utc) VALUES (?,?,?)",
                        (migration.version, migration.name, utc_now()),
                    )
            if row is None:
                self._exec(cur, "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(target),))
            elif target > current:
                self._exec(cur, "UPDATE meta SET value = ? WHERE key = 'schema'", (str(target),))

    def schema_version(self) -> int:
        with self._tx() as cur:
            return _version(self._exec(cur, "SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])

    def has_table(self, cur: Any, name: str) -> bool:
        """Whether the table exists (asked without failing the transaction, unlike a SELECT would)."""
        row = self._exec(cur, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def database_user(self) -> str | None:
        """The database role this store connects as (None: SQLite, a single-user file)."""
        return None

    def prelude(self) -> list[str]:
        """Statements that go before the schema is read (PostgreSQL: a lock for concurrent ingesters)."""
        return []

    def dialect(self, stmt: str) -> str:
        """A migration statement (written for SQLite) in this database's dialect."""
        return stmt

    @abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------ records

    def put_record(
        self,
        device: str,
        record_id: str,
        kind: str,
        created_utc: str,
        blob_sha256: str | None,
        blob_size: int | None,
        body: str,
    ) -> Literal["stored", "duplicate"]:
        with self._tx() as cur:
            self._exec(
                cur,
                "INSERT INTO records (device, record_id, kind, created_utc, received_utc, blob_sha256, blob_size, body)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (device, record_id) DO NOTHING",
                (device, record_id, kind, created_utc, utc_now(), blob_sha256, blob_size, body),
            )
            return "stored" if cur.rowcount == 1 else "duplicate"

    def record_body(self, device: str, record_id: str) -> str | None:
        with self._tx() as cur:
            row = self._exec(
                cur, "SELECT body FROM records WHERE device = ? AND record_id = ?", (device, record_id)
            ).fetchone()
        return None if row is None else str(row[0])

    def known_records(self, device: str, record_ids: Sequence[str]) -> set[str]:
        if not record_ids:
            return set()
        with self._tx() as cur:
            marks = ",".join("?" * len(record_ids))
            rows = self._exec(
                cur, f"SELECT record_id FROM records WHERE device = ? AND record_id IN ({marks})", (device, *record_ids)
            ).fetchall()
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ blobs and staging
    # Staging and chunk rows are per (device, sha256): one device can neither see, overwrite nor
    # restart another's upload. ``blob_owners`` says which devices uploaded a stored blob.

    def blob_size(self, sha256: str) -> int | None:
        """Size of a stored blob, whoever uploaded it (the storage itself is content-addressed)."""
        with self._tx() as cur:
            row = self._exec(cur, "SELECT size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def owned_size(self, device: str, sha256: str) -> int | None:
        """Size of a stored blob this device uploaded itself, else None."""
        with self._tx() as cur:
            row = self._exec(
                cur,
                "SELECT b.size FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256"
                " WHERE o.device = ? AND o.sha256 = ?",
                (device, sha256),
            ).fetchone()
        return None if row is None else int(row[0])

    def start_staging(self, device: str, sha256: str, size: int, media_type: str) -> bool:
        """Announce a blob; True if this call created the staging row."""
        now = utc_now()
        with self._tx() as cur:
            self._exec(
                cur,
                "INSERT INTO staging (device, sha256, size, media_type, started_utc, touched_utc) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (device, sha256) DO UPDATE SET touched_utc = excluded.touched_utc",
                (device, sha256, size, media_type, now, now),
            )
            return bool(cur.rowcount == 1) and self._staging_new(cur, device, sha256, now)

    def _staging_new(self, cur: Any, device: str, sha256: str, now: str) -> bool:
        row = self._exec(
            cur, "SELECT started_utc FROM staging WHERE device = ? AND sha256 = ?", (device, sha256)
        ).fetchone()
        return row is not None and row[0] == now

    def staging_info(self, device: str, sha256: str) -> tuple[int, str] | None:
        """(size, media_type) of this device's upload of a blob, if it has one open."""
        with self._tx() as cur:
            row = self._exec(
                cur, "SELECT size, media_type FROM staging WHERE device = ? AND sha256 = ?", (device, sha256)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def device_staging(self, device: str) -> tuple[int, int]:
        """(open uploads, bytes announced by them) of one device: what its quotas bound."""
        with self._tx() as cur:
            row = self._exec(
                cur, "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM staging WHERE device = ?", (device,)
            ).fetchone()
        return int(row[0]), int(row[1])

    def stale_staging(self, before_utc: str, limit: int = 1000) -> list[tuple[str, str]]:
        """(device, sha256) of uploads nobody has touched since ``before_utc``."""
        with self._tx() as cur:
            rows = self._exec(
                cur,
                f"SELECT device, sha256 FROM staging WHERE touched_utc < ? ORDER BY touched_utc LIMIT {int(limit)}",
                (before_utc,),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def staging_totals(self) -> tuple[int, int]:
        """Unfinished uploads and the bytes they announced, over every device."""
        with self._tx() as cur:
            row = self._exec(cur, "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM staging").fetchone()
        return int(row[0]), int(row[1])

    def staging_keys(self) -> set[tuple[str, str]]:
        with self._tx() as cur:
            return {(str(r[0]), str(r[1])) for r in self._exec(cur, "SELECT device, sha256 FROM staging").fetchall()}

    def add_chunk(self, device: str, sha256: str, offset: int, length: int) -> None:
        """Note that bytes [offset, offset+length) of a staged blob are on disk."""
        with self._tx() as cur:
            self._exec(
                cur,
                'INSERT INTO chunks (device, sha256, "offset", length) VALUES (?,?,?,?)'
                ' ON CONFLICT (device, sha256, "offset") DO UPDATE SET length = excluded.length'
                " WHERE excluded.length > chunks.length",
                (device, sha256, offset, length),
            )

    def chunk_rows(self, device: str, sha256: str) -> int:
        with self._tx() as cur:
            row = self._exec(
                cur, "SELECT COUNT(*) FROM chunks WHERE device = ? AND sha256 = ?", (device, sha256)
            ).fetchone()
        return int(row[0])

    def forget_chunks(self, device: str, sha256: str) -> None:
        """The staged bytes were lost (a new staging file): nothing of this upload has arrived."""
        with self._tx() as cur:
            self._exec(cur, "DELETE FROM chunks WHERE device = ? AND sha256 = ?", (device, sha256))

    def chunk_pieces(self, device: str, sha256: str) -> list[tuple[int, int]]:
        with self._tx() as cur:
            rows = self._exec(
                cur,
                'SELECT "offset", length FROM chunks WHERE device = ? AND sha256 = ? ORDER BY "offset"',
                (device, sha256),
            ).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

    def finish_blob(self, device: str, sha256: str, size: int, media_type: str) -> Literal["stored", "duplicate"]:
        """The device's verified upload: index the blob (once) and note the device as an owner."""
        now = utc_now()
        with self._tx() as cur:
            self._exec(
                cur,
                "INSERT INTO blobs (sha256, size, media_type, device, received_utc) VALUES (?,?,?,?,?)"
                " ON CONFLICT (sha256) DO NOTHING",
                (sha256, size, media_type, device, now),
            )
            self._exec(
                cur,
                "INSERT INTO blob_owners (device, sha256, received_utc) VALUES (?,?,?)"
                " ON CONFLICT (device, sha256) DO NOTHING",
                (device, sha256, now),
            )
            status: Literal["stored", "duplicate"] = "stored" if cur.rowcount == 1 else "duplicate"
            self._exec(cur, "DELETE FROM chunks WHERE device = ? AND sha256 = ?", (device, sha256))
            self._exec(cur, "DELETE FROM staging WHERE device = ? AND sha256 = ?", (device, sha256))
        return status

    def drop_staging(self, device: str, sha256: str) -> None:
        with self._tx() as cur:
            self._exec(cur, "DELETE FROM chunks WHERE device = ? AND sha256 = ?", (device, sha256))
            self._exec(cur, "DELETE FROM staging WHERE device = ? AND sha256 = ?", (device, sha256))

    def blob_state(self, device: str, sha256: str) -> BlobState:
        """What this device has of a blob centrally: its own stored upload, its partial one, or nothing."""
        size = self.owned_size(device, sha256)
        if size is not None:
            return BlobState("stored", size)
        info = self.staging_info(device, sha256)
        if info is None:
            return BlobState("missing")
        return BlobState("partial", info[0], tuple(missing_ranges(info[0], self.chunk_pieces(device, sha256))))

    def blob_states(self, device: str, shas: Sequence[str]) -> dict[str, BlobState]:
        """``blob_state`` of many blobs with a few queries (answers to ``sync/query``)."""
        if not shas:
            return {}
        marks = ",".join("?" * len(shas))
        with self._tx() as cur:
            owned = self._exec(
                cur,
                "SELECT b.sha256, b.size FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256"
                f" WHERE o.device = ? AND o.sha256 IN ({marks})",
                (device, *shas),
            ).fetchall()
            staged = self._exec(
                cur, f"SELECT sha256, size FROM staging WHERE device = ? AND sha256 IN ({marks})", (device, *shas)
            ).fetchall()
        out = {sha: BlobState("missing") for sha in shas}
        for sha, size in staged:
            out[str(sha)] = BlobState(
                "partial", int(size), tuple(missing_ranges(int(size), self.chunk_pieces(device, str(sha))))
            )
        for sha, size in owned:
            out[str(sha)] = BlobState("stored", int(size))
        return out

    # ------------------------------------------------------------------ dead letters

    def dead_letter(
        self, topic: str, device: str | None, reason: str, payload: bytes, keep: int = DEAD_LETTER_KEEP
    ) -> None:
        with self._tx() as cur:
            self._exec(
                cur,
                "INSERT INTO dead_letters (received_utc, topic, device, reason, payload_size, payload)"
                " VALUES (?,?,?,?,?,?)",
                (
                    utc_now(),
                    printable(topic, 1024),
                    None if device is None else printable(device, 64),
                    printable(reason, 1000),
                    len(payload),
                    payload[: max(0, keep)],
                ),
            )

    def expire_dead_letters(self, before_utc: str, per_device: int) -> int:
        """Delete dead letters older than ``before_utc`` and all but the newest ``per_device`` of each device."""
        with self._tx() as cur:
            n = int(self._exec(cur, "DELETE FROM dead_letters WHERE received_utc < ?", (before_utc,)).rowcount or 0)
            over = self._exec(
                cur,
                "SELECT device FROM dead_letters GROUP BY device HAVING COUNT(*) > ?",
                (per_device,),
            ).fetchall()
            for (device,) in over:
                match = "device IS NULL" if device is None else "device = ?"
                args: tuple[Any, ...] = () if device is None else (device,)
                n += int(
                    self._exec(
                        cur,
                        f"DELETE FROM dead_letters WHERE {match} AND id < (SELECT MIN(id) FROM (SELECT id FROM"
                        f" dead_letters WHERE {match} ORDER BY id DESC LIMIT {int(per_device)}) newest)",
                        args + args,
                    ).rowcount
                    or 0
                )
        return n

    # ------------------------------------------------------------------ listing

    def list_records(
        self, *, device: str | None = None, kind: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT r.device, r.record_id, r.kind, r.blob_sha256, r.blob_size, r.received_utc,"
            " o.sha256 IS NOT NULL AS blob_stored FROM records r"
            " LEFT JOIN blob_owners o ON o.device = r.device AND o.sha256 = r.blob_sha256"
        )
        where, args = _record_filter(device, kind, "r.")
        sql += where + " ORDER BY r.received_utc, r.record_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._tx() as cur:
            rows = self._exec(cur, sql, args).fetchall()
        keys = ["device", "record_id", "kind", "sha256", "size", "received_utc", "blob_stored"]
        return [dict(zip(keys, (*r[:6], bool(r[6])), strict=True)) for r in rows]

    def count_records(self, *, device: str | None = None, kind: str | None = None) -> int:
        """How many records ``list_records`` would list without a limit (by device: an index range)."""
        where, args = _record_filter(device, kind)
        sql = "SELECT COUNT(*) FROM records" + where
        with self._tx() as cur:
            return int(self._exec(cur, sql, args).fetchone()[0])

    def list_blobs(self) -> list[dict[str, Any]]:
        with self._tx() as cur:
            rows = self._exec(
                cur, "SELECT sha256, size, media_type, device, received_utc FROM blobs ORDER BY sha256"
            ).fetchall()
        return [dict(zip(["sha256", "size", "media_type", "device", "received_utc"], r, strict=True)) for r in rows]

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._tx() as cur:
            rows = self._exec(
                cur,
                "SELECT received_utc, topic, device, reason, payload_size FROM dead_letters"
                f" ORDER BY id DESC LIMIT {int(limit)}",
            ).fetchall()
        return [dict(zip(["received_utc", "topic", "device", "reason", "payload_size"], r, strict=True)) for r in rows]

    def count(self, table: Table) -> int:
        with self._tx() as cur:
            return int(self._exec(cur, f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class SqliteStore(CentralStore):
    """The embedded central store: one SQLite file in WAL mode, synchronous commits."""

    def __init__(self, path: Path, *, schema_upto: int | None = None) -> None:
        super().__init__()
        try:
            _private_file(path)
            self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"cannot open the central store {path}: {exc}") from None
        self.path = path
        self._lock = threading.RLock()
        try:
            self.init_schema(schema_upto)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a usable central store: {exc}") from None

    @contextmanager
    def _begin(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner and group only (SQLite's -wal/-shm copy its mode)."""
    from central.blobs import FILE_MODE, private_dirs

    private_dirs(path.parent, Path(path.anchor))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o007:
            os.fchmod(fd, mode & ~0o007)
    finally:
        os.close(fd)


def open_store(url: str, *, create: bool = True) -> CentralStore:
    """``sqlite:///path/central.db`` (or a plain path) or ``postgresql://...``; StoreError if unusable.

    ``create=False`` (every command but ``ingest``): a SQLite file that does not exist is an error, so a
    mistyped ``--store`` is reported instead of answered from a new, empty store.
    """
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        from central.pgstore import PostgresStore

        store: CentralStore = PostgresStore(url)
        return store
    if parts.scheme == "sqlite":  # sqlite:///abs/path (also sqlite:////abs/path); a plain path for relative
        path = Path("/" + url.removeprefix("sqlite://").lstrip("/"))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise StoreError(f"store URL {url!r} is neither sqlite:///PATH nor postgresql://...")
    if not create and not path.is_file():
        raise StoreError(
            f"--store {url}: no central store there (a SQLite file made by fieldcap ingest); check the path"
        )
    return SqliteStore(path)


def _record_filter(device: str | None, kind: str | None, alias: str = "") -> tuple[str, list[Any]]:
    """The `` WHERE`` clause (or "") and its arguments for ``central ls``'s --device / --kind."""
    clauses = [(f"{alias}{col} = ?", value) for col, value in (("device", device), ("kind", kind)) if value]
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in clauses), [v for _, v in clauses]
