"""Central schema migrations on SQLite and PostgreSQL: a store made at each older version upgrades
with its data, a newer one is refused, a failed upgrade changes nothing; and the queries of
``central ls``, exports, reports and the sweep use indexes on a store of a million records."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.errors import StoreError
from central.migrations import MIGRATIONS, SCHEMA_VERSION
from central.pgstore import PostgresStore
from central.store import CentralStore, SqliteStore, open_store

from .conftest import own_database

SHA_A, SHA_B = "a" * 64, "b" * 64
T0 = "2026-01-01T00:00:00.000000+00:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    with own_database(request.getfixturevalue("postgres_url"), "migr") as url:
        yield url


def store_at(url: str, version: int) -> CentralStore:
    """A store built by running only the migrations up to ``version``."""
    if url.startswith("sqlite:"):
        return SqliteStore(Path(url.removeprefix("sqlite://")), schema_upto=version)
    return PostgresStore(url, schema_upto=version)


def run(store: CentralStore, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with store._tx() as cur:
        store._exec(cur, sql, args)
        return list(cur.fetchall()) if cur.description else []


def fill_old_store(store: CentralStore, version: int) -> None:
    """Rows as the fieldcap of that schema version wrote them."""
    ins = "INSERT INTO records (device, record_id, kind, created_utc, received_utc, blob_sha256, blob_size, body)"
    run(store, ins + " VALUES (?,?,?,?,?,?,?,?)", "d1", "r1", "capture", T0, T0, SHA_A, 3, '{"a": 1}')
    run(store, ins + " VALUES (?,?,?,?,?,?,?,?)", "d2", "r2", "event", T0, T0, None, None, '{"b": 2}')
    run(store, "INSERT INTO blobs VALUES (?,?,?,?,?)", SHA_A, 3, "image/jpeg", "d1", T0)
    run(
        store,
        "INSERT INTO dead_letters (received_utc, topic, device, reason, payload_size, payload) VALUES (?,?,?,?,?,?)",
        T0,
        "t",
        "d1",
        "bad",
        1,
        b"x",
    )
    if version == 2:  # an upload in flight, keyed by sha256 alone
        run(store, "INSERT INTO staging VALUES (?,?,?,?,?)", SHA_B, 10, "image/jpeg", "d1", T0)
        run(store, 'INSERT INTO chunks (sha256, "offset", length) VALUES (?,?,?)', SHA_B, 0, 5)
    else:
        run(store, "INSERT INTO blob_owners VALUES (?,?,?)", "d1", SHA_A, T0)
        run(store, "INSERT INTO staging VALUES (?,?,?,?,?,?)", "d1", SHA_B, 10, "image/jpeg", T0, T0)
        run(store, 'INSERT INTO chunks (device, sha256, "offset", length) VALUES (?,?,?,?)', "d1", SHA_B, 0, 5)


@pytest.mark.parametrize("version", [m.version for m in MIGRATIONS[:-1]])
def test_a_store_of_an_older_schema_is_upgraded_with_its_data(store_url: str, version: int) -> None:
    old = store_at(store_url, version)
    assert old.schema_version() == version
    fill_old_store(old, version)
    old.close()

    store = open_store(store_url)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        applied = [r[0] for r in run(store, "SELECT version FROM schema_migrations ORDER BY version")]
        assert applied == [m.version for m in MIGRATIONS]  # the older steps when built, the rest now
        rows = store.list_records()
        assert [(r["device"], r["record_id"], r["blob_stored"]) for r in rows] == [
            ("d1", "r1", True),  # the blob counts as its uploader's (blob_owners filled from blobs)
            ("d2", "r2", False),
        ]
        assert store.record_body("d2", "r2") == '{"b": 2}'
        assert store.owned_size("d1", SHA_A) == 3 and store.owned_size("d2", SHA_A) is None
        assert store.count("dead_letters") == 1
        if version == 2:  # uploads in flight were dropped: the devices start them again
            assert store.count("staging") == 0 and store.count("chunks") == 0
        else:
            assert store.blob_state("d1", SHA_B).missing == ((5, 10),)
        # The upgraded store works like a new one.
        assert store.put_record("d1", "r3", "capture", T0, None, None, "{}") == "stored"
        store.start_staging("d2", SHA_B, 10, "image/jpeg")
        assert store.finish_blob("d2", SHA_B, 10, "image/jpeg") == "stored"
    finally:
        store.close()
    again = open_store(store_url)  # opening an up-to-date store changes nothing
    assert again.schema_version() == SCHEMA_VERSION and again.count("records") == 3
    again.close()


def test_a_store_from_a_newer_fieldcap_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    run(store, "UPDATE meta SET value = ? WHERE key = 'schema'", str(SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(StoreError, match=r"newer than this fieldcap's .*stores are never downgraded"):
        open_store(store_url)


def test_a_failed_upgrade_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "central.db"
    old = SqliteStore(path, schema_upto=3)
    fill_old_store(old, 3)
    run(old, "CREATE TABLE records_received (x INTEGER)")  # in the way of migration 4's index
    old.close()
    with pytest.raises(StoreError, match="not a usable central store"):
        SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (3,)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "records_kind" in names and "records_device_received" not in names  # all of it rolled back
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone() == (2,)


# ---------------------------------------------------------------------------- indexes at scale

RECORDS = 1_000_000
DEVICES = 1000
SIDE_ROWS = 100_000  # uploads in flight and dead letters

FILL_SQLITE = [
    f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {RECORDS - 1})
    INSERT INTO records SELECT printf('dev-%05d', i % {DEVICES}), printf('%020d', i),
        CASE WHEN i % 1000 = 0 THEN 'session' WHEN i % 10 = 0 THEN 'event' ELSE 'capture' END,
        printf('2026-01-01T%012d', i), printf('2026-01-01T%012d', i), NULL, NULL, '{{}}' FROM n""",
    f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {SIDE_ROWS - 1})
    INSERT INTO staging SELECT printf('dev-%05d', i % {DEVICES}), printf('%064d', i), 10, 'image/jpeg',
        printf('2026-01-01T%012d', i), printf('2026-01-01T%012d', i) FROM n""",
    f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {SIDE_ROWS - 1})
    INSERT INTO dead_letters (received_utc, topic, device, reason, payload_size, payload)
    SELECT printf('2026-01-01T%012d', i), 't', printf('dev-%05d', i % {DEVICES}), 'r', 0, x'' FROM n""",
    "ANALYZE",
]

FILL_PG = [
    f"""INSERT INTO records SELECT 'dev-' || lpad(mod(i, {DEVICES})::text, 5, '0'), lpad(i::text, 20, '0'),
        CASE WHEN mod(i, 1000) = 0 THEN 'session' WHEN mod(i, 10) = 0 THEN 'event' ELSE 'capture' END,
        '2026-01-01T' || lpad(i::text, 12, '0'), '2026-01-01T' || lpad(i::text, 12, '0'), NULL, NULL, '{{}}'
        FROM generate_series(0, {RECORDS - 1}) AS i""",
    f"""INSERT INTO staging SELECT 'dev-' || lpad(mod(i, {DEVICES})::text, 5, '0'), lpad(i::text, 64, '0'), 10,
        'image/jpeg', '2026-01-01T' || lpad(i::text, 12, '0'), '2026-01-01T' || lpad(i::text, 12, '0')
        FROM generate_series(0, {SIDE_ROWS - 1}) AS i""",
    f"""INSERT INTO dead_letters (received_utc, topic, device, reason, payload_size, payload)
    SELECT '2026-01-01T' || lpad(i::text, 12, '0'), 't', 'dev-' || lpad(mod(i, {DEVICES})::text, 5, '0'), 'r', 0,
        '\\x'::bytea FROM generate_series(0, {SIDE_ROWS - 1}) AS i""",
    "ANALYZE",
]

BIG_TABLES = ("records", "staging", "dead_letters")
# The sweep counts every device's dead letters (a bounded table): a full read by nature, which
# PostgreSQL rightly does sequentially; SQLite reads it through the (device, id) index.
# Status counts the open uploads per device (bounded by the quotas): a full read too.
WHOLE_TABLE = ("GROUP BY device HAVING", "FROM staging GROUP BY device")


def _queries(store: CentralStore) -> list[tuple[str, tuple[Any, ...]]]:
    """The SQL (and arguments) the product runs for ls, exports/reports and the sweep."""
    from central.datasets.samples import KINDS, read_records
    from central.datasets.versions import all_sets
    from central.status import _devices

    seen: list[tuple[str, tuple[Any, ...]]] = []
    real = store._exec

    def recording(cur: Any, sql: str, args: Any = ()) -> Any:
        if not any(s in sql for s in ("sqlite_master", "to_regclass", "CREATE ")):  # the schema's own checks
            seen.append((store._sql(sql), tuple(args)))
        return real(cur, sql, args)

    store._exec = recording  # type: ignore[method-assign]
    try:
        assert len(store.list_records(limit=50)) == 50  # central ls --limit 50
        assert len(store.list_records(device="dev-00042", limit=50)) == 50  # ... --device
        assert len(store.list_records(kind="event", limit=50)) == 50  # ... --kind
        invalid: Counter[str] = Counter()  # the generated bodies are not real envelopes: all counted invalid
        assert read_records(store, kinds=("session",), invalid=invalid) == []  # exports/reports of one kind
        assert sum(invalid.values()) == RECORDS // 1000
        # An export/report selection by --device reads those devices' records and annotation sets only.
        invalid.clear()
        assert read_records(store, KINDS, invalid, devices=["dev-00042", "dev-00043"]) == []
        assert invalid == {"capture": 2 * RECORDS // DEVICES}
        assert all_sets(store, devices=["dev-00042"]) == {}
        assert store.count_records(device="dev-00042") == RECORDS // DEVICES  # central ls: "N more"
        listed = _devices(store)  # central status: every device, its newest record and open uploads
        assert len(listed) == DEVICES and listed[42]["last_seen_utc"] == f"2026-01-01T{RECORDS - 1000 + 42:012d}"
        assert store.known_records("dev-00001", ["00000000000000000001", "x"]) == {"00000000000000000001"}
        assert len(store.stale_staging("2026-01-01T000000000100")) == 100  # the sweep
        assert store.expire_dead_letters("2026-01-01T000000000100", per_device=1000) == 100
    finally:
        del store._exec
    return seen


def test_the_main_queries_use_indexes_on_a_million_records(store_url: str) -> None:
    store = open_store(store_url)
    try:
        sqlite = isinstance(store, SqliteStore)
        for stmt in FILL_SQLITE if sqlite else FILL_PG:
            run(store, stmt)
        assert store.count("records") == RECORDS
        queries = _queries(store)
        assert len(queries) >= 7
        for sql, args in queries:
            if sqlite:
                plan = [str(r[3]) for r in run(store, "EXPLAIN QUERY PLAN " + sql, *args)]
                # (``SCAN d``: central status's recursive list of devices, not a table)
                full_scans = [p for p in plan if p.startswith("SCAN") and "USING" not in p and p != "SCAN d"]
                sorted_ls = "ORDER BY r.received_utc" in sql and any("TEMP B-TREE" in p for p in plan)
                assert not full_scans and not sorted_ls, (sql, plan)
            else:
                with store._tx() as cur:
                    cur.execute("EXPLAIN " + sql, args)
                    plan = [str(r[0]) for r in cur.fetchall()]
                seq = [p for p in plan if any(f"Seq Scan on {t}" in p for t in BIG_TABLES)]
                assert not seq or any(w in sql for w in WHOLE_TABLE), (sql, plan)
                if seq:
                    continue
            if any(t in sql for t in BIG_TABLES):
                assert any("INDEX" in p.upper() or "PRIMARY KEY" in p.upper() for p in plan), (sql, plan)
    finally:
        store.close()


def test_central_ls_pages_with_limit(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from central.cli import central_group

    url = f"sqlite:///{tmp_path / 'central.db'}"
    store = open_store(url)
    for i in range(3):
        store.put_record("d1", f"r{i}", "event", T0, None, None, "{}")
    store.close()
    result = CliRunner().invoke(central_group, ["ls", "--store", url, "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["record_id"] for line in result.output.splitlines()] == ["r0", "r1"]
    table = CliRunner().invoke(central_group, ["ls", "--store", url, "--limit", "2"])
    assert table.exit_code == 0 and "and 1 more record(s)" in table.output, table.output
    every = CliRunner().invoke(central_group, ["ls", "--store", url, "--limit", "0", "--json"])
    assert len(every.output.splitlines()) == 3 and "more record" not in every.output
    default = CliRunner().invoke(central_group, ["ls", "--store", url])  # 100 by default: all 3 here
    assert default.exit_code == 0 and "r2" in default.output and "more record" not in default.output


def test_central_status_lists_each_device_with_its_newest_record(store_url: str) -> None:
    from central.status import _devices

    store = open_store(store_url)
    try:
        assert _devices(store) == []
        for device in ("d2", "d1", "d10"):
            for i in range(3):
                assert store.put_record(device, f"r{i}", "event", T0, None, None, "{}") == "stored"
        store.start_staging("d3", SHA_A, 10, "image/jpeg")  # a device with an upload but no record yet
        devices = {d["device"]: d for d in _devices(store)}
        assert sorted(devices) == ["d1", "d10", "d2", "d3"]
        for device in ("d1", "d10", "d2"):
            newest = run(store, "SELECT MAX(received_utc) FROM records WHERE device = ?", device)[0][0]
            assert devices[device]["last_seen_utc"] == newest
        assert devices["d3"]["last_seen_utc"] is None and devices["d3"]["open_uploads"] == 1
    finally:
        store.close()
