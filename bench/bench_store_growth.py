"""The central store at 1M and more records, on SQLite and PostgreSQL: listing, status, export selection, report.

    python bench/bench_store_growth.py [--sizes 1000000,3000000] [--full-upto 100000] [--no-pg] [--no-sqlite]

Each store is made by ``open_store`` (schema and indexes from ``central.migrations``) and filled
with one ``INSERT ... SELECT`` from a recursive CTE (SQLite) or ``generate_series`` (PostgreSQL):
1000 devices, records in arrival order, per 10 records 6 captures (a JPEG blob each, uploaded),
3 QC verdicts of those captures and 1 event; every body is a valid record envelope
(``sync.records``). Timed on each size:

* ``central ls --device X --limit 100`` (``CentralStore.list_records``), median of 20;
* ``central status``'s device list (``status._devices``: two index seeks per device), median of 5;
* the export selection (``load_for`` + ``select`` with ``--device`` × 10, ≈ 1 % of the
  captures): what ``fieldcap export`` does before it writes anything; it reads those devices'
  records only;
* ``fieldcap report`` on that selection (``build_report``, card and plots, blobs absent).

Up to ``--full-upto`` records the selection is also timed the way it was made before (every
record loaded, then filtered in Python), for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from central.blobs import BlobTree  # noqa: E402
from central.datasets.report import ReportOptions, build_report  # noqa: E402
from central.datasets.samples import load_samples  # noqa: E402
from central.datasets.selection import Filters, load_for, select  # noqa: E402
from central.status import _devices  # noqa: E402
from central.store import CentralStore, open_store  # noqa: E402

DEVICES = 1000
Database = tuple[str, Callable[[int], str], dict[str, str]]  # name, URL of a size, dialect
CHOSEN = tuple(f"dev-{d:04d}" for d in range(0, DEVICES, DEVICES // 10))  # 10 devices ≈ 1 %

# Per dialect: the device, record id, blob sha256 and arrival time of row i.
SQLITE = {
    "series": "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {last})",
    "from": "s",
    "dev": "printf('dev-%04d', (i / 10) % 1000)",
    "rid": "printf('%012x-%d', (i / 10) % 1000, i)",
    "cap": "printf('%012x-%d', (i / 10) % 1000, i - 6)",
    "sha": "printf('%064x', i)",
    "ts": "strftime('%Y-%m-%dT%H:%M:%fZ', 1767225600 + i / 10.0, 'unixepoch')",
}
PG = {
    "series": "",
    "from": "generate_series(0::bigint, {last}) AS s(i)",
    "dev": "'dev-' || lpad(((i / 10) % 1000)::text, 4, '0')",
    "rid": "lpad(to_hex((i / 10) % 1000), 12, '0') || '-' || i",
    "cap": "lpad(to_hex((i / 10) % 1000), 12, '0') || '-' || (i - 6)",
    "sha": "lpad(to_hex(i), 64, '0')",
    "ts": "to_char(timestamp '2026-01-01' + i * interval '100 milliseconds', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
}

ENVELOPE = (
    '\'{{"schema_version":1,"record_id":"\' || {rid} || \'","device":"\' || {dev} || \'","kind":"\' || kind'
    ' || \'","created_utc":"\' || {ts} || \'","body":\' || body || blob || \'}}\''
)
CAPTURE = (
    '\'{{"record_id":"\' || {rid} || \'","stream":"cam\' || (i % 2) || \'","kind":"frame",'
    '"modality":"visible","sha256":"\' || {sha} || \'","size":\' || (180000 + i % 40000) || \','
    '"media_type":"image/jpeg","t_start_mono_ns":\' || (i * 100000000) || \','
    "\"t_end_mono_ns\":' || (i * 100000000 + 50000000) || ',"
    "\"t_start_utc_ns\":' || ((1767225600 + i / 10) * 1000000000) || ',"
    '"seq_first":\' || i || \',"seq_last":\' || i || \',"created_utc":"\' || {ts} || \'",'
    '"meta":{{"exposure_us":8000,"gain":1.5,"width":1920,"height":1080}}}}\''
)
VERDICT = (
    '\'{{"capture_id":"\' || {cap} || \'","profile":"default","profile_version":"3","verdict":"\''
    " || CASE WHEN i % 33 = 0 THEN 'fail' ELSE 'pass' END || '\",\"reasons\":[],"
    '"metrics":{{"blur":\' || (i % 97) || \'.5,"exposure":0.42}},'
    '"analyzers":[{{"name":"blur","version":"1"}}]}}\''
)
EVENT = (
    '\'{{"record_id":"\' || {rid} || \'","t_utc_ns":\' || ((1767225600 + i / 10) * 1000000000) || \','
    '"t_mono_ns":\' || i || \',"kind":"eviction","stream":"cam0","count":1,'
    '"message":"evicted 1 confirmed media file","detail":{{"bytes":200000}}}}\''
)


def fill_sql(d: dict[str, str], n: int) -> str:
    """One INSERT ... SELECT of ``n`` records in the dialect ``d``."""
    f = {k: v.format(last=n - 1) for k, v in d.items()}
    kind = "CASE WHEN i % 10 < 6 THEN 'capture' WHEN i % 10 < 9 THEN 'verdict' ELSE 'event' END"
    body = (
        f"CASE WHEN i % 10 < 6 THEN {CAPTURE.format(**f)} WHEN i % 10 < 9 THEN {VERDICT.format(**f)}"
        f" ELSE {EVENT.format(**f)} END"
    )
    blob = (
        'CASE WHEN i % 10 < 6 THEN \',"blob":{"sha256":"\' || '
        + f["sha"]
        + ' || \'","size":\' || (180000 + i % 40000) || \',"media_type":"image/jpeg"}\' ELSE \'\' END'
    )
    return (
        f"{f['series']} INSERT INTO records (device, record_id, kind, created_utc, received_utc, blob_sha256,"
        f" blob_size, body) SELECT dev, rid, kind, ts, ts, sha, size, {ENVELOPE.format(**f)}"
        f" FROM (SELECT i, {f['dev']} AS dev, {f['rid']} AS rid, {f['ts']} AS ts, {kind} AS kind,"
        f" CASE WHEN i % 10 < 6 THEN {f['sha']} END AS sha, CASE WHEN i % 10 < 6 THEN 180000 + i % 40000 END AS size,"
        f" {body} AS body, {blob} AS blob FROM {f['from']}) x"
    )


def fill(store: CentralStore, dialect: dict[str, str], n: int) -> None:
    with store.batch(), store._tx() as cur:
        cur.execute(fill_sql(dialect, n))
        cur.execute(
            "INSERT INTO blob_owners (device, sha256, received_utc)"
            " SELECT device, blob_sha256, received_utc FROM records WHERE blob_sha256 IS NOT NULL"
        )
        cur.execute(
            "INSERT INTO blobs (sha256, size, media_type, device, received_utc)"
            " SELECT blob_sha256, blob_size, 'image/jpeg', device, received_utc FROM records"
            " WHERE blob_sha256 IS NOT NULL"
        )
    with store._tx() as cur:
        cur.execute("ANALYZE")


def median(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(store: CentralStore, n: int, full_upto: int, tmp: Path) -> dict[str, float]:
    out = {"ls --device X --limit 100": median(lambda: store.list_records(device=CHOSEN[3], limit=100), 20)}
    devices: list[object] = []
    out["status: device list"] = median(lambda: devices.extend(_devices(store)), 5)
    assert len(devices) == 6 * DEVICES, len(devices)  # 5 timed calls and the warm-up
    filters = Filters(devices=CHOSEN)
    selected: list[object] = []
    out["export selection (1 %)"] = once(lambda: selected.extend(select(load_for(store, filters), filters)))
    blobs = BlobTree(tmp / "blobs")
    out["report (1 %)"] = once(lambda: build_report(store, blobs, tmp / f"card-{n}", ReportOptions(filters=filters)))
    blobs.close()
    print(f"  selection: {len(selected):,} samples")
    if n <= full_upto:
        again: list[object] = []
        out["export selection, full load"] = once(lambda: again.extend(select(load_samples(store), filters)))
        assert len(again) == len(selected)
    return out


@contextlib.contextmanager
def stores(use_sqlite: bool, use_pg: bool, tmp: Path) -> Iterator[list[Database]]:
    """(name, store URL for a size, dialect) of each database benchmarked."""
    found: list[Database] = []
    with contextlib.ExitStack() as stack:
        if use_sqlite:
            found.append(("sqlite", lambda n: f"sqlite:///{tmp / f'central-{n}.db'}", SQLITE))
        if use_pg:
            from bench_sync import throwaway_postgres

            url = stack.enter_context(throwaway_postgres())
            found.append(("postgresql", lambda _n: url, PG))
        yield found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,3000000", help="Comma-separated record counts.")
    ap.add_argument(
        "--full-upto", type=int, default=0, help="Also time the full-load selection on stores up to this size."
    )
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, int, str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="fieldcap-store-growth-") as t,
        stores(not args.no_sqlite, not args.no_pg, Path(t)) as dbs,
    ):
        tmp = Path(t)
        for name, url_of, dialect in dbs:
            for n in sizes:
                store = open_store(url_of(n))
                try:
                    with store._tx() as cur:  # PostgreSQL: one database, emptied between sizes
                        for table in ("records", "blobs", "blob_owners"):
                            cur.execute(f"DELETE FROM {table}")
                    t0 = time.perf_counter()
                    fill(store, dialect, n)
                    print(f"{name}: filled {n:,} records in {time.perf_counter() - t0:.0f} s", flush=True)
                    for op, secs in measure(store, n, args.full_upto, tmp).items():
                        rows.append((name, n, op, secs))
                        print(f"  {op}: {secs * 1e3:.1f} ms", flush=True)
                finally:
                    store.close()
                if name == "sqlite":
                    Path(url_of(n).removeprefix("sqlite://")).unlink()
    print(f"\n{'store':12}{'records':>12}  {'operation':32}{'time':>14}")
    for name, n, op, secs in rows:
        print(f"{name:12}{n:>12,}  {op:32}{secs * 1e3:>11.1f} ms")


if __name__ == "__main__":
    main()
