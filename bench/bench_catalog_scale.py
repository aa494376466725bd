"""A device catalog at 100k and 1M captures: do the publisher's, retention's and ``ls``'s queries stay flat?

    python bench/bench_catalog_scale.py [--sizes 100000,1000000] [--repeat 20]

The catalog is the real one (``agent.catalog.db.Catalog`` creates and migrates it), filled with
one ``INSERT ... SELECT`` per table from a recursive CTE, in the shape a device reaches at steady
state: the catalog keeps growing but the disk and the backlog do not. All captures but the newest
``ON_DISK`` have had their media evicted; of those on disk the newest ``PENDING`` are not sent yet
and the ``SENT`` before them wait for receipts; every capture has a QC verdict, 3 % fail.

Timed, each the median of ``--repeat`` runs on a warm connection: the publisher's outbox scan
(``records_to_send``, ``blobs_to_send``, ``unconfirmed``), one retention pass's candidate query
(``eviction_candidates``) and ``fieldcap ls --limit 100`` (``Catalog.captures``). A query that
uses an index costs about the same at both sizes (ratio ≈ 1); one that scans costs ≈ 10×.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.catalog.db import Catalog  # noqa: E402

DEVICE = "bench-01"
ON_DISK = 5000  # media files still on disk (the quota's worth)
PENDING = 500  # captures not sent yet
SENT = 200  # sent, waiting for receipts


def fill(path: Path, n: int) -> None:
    """Create the catalog through ``Catalog`` (schema + migrations), then fill it with SQL."""
    Catalog(path, DEVICE).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    keep = n - ON_DISK
    pending = n - PENDING
    sent = pending - SENT
    with conn:
        conn.execute(
            f"""WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1})
            INSERT INTO captures (record_id, stream, kind, modality, path, sha256, size, media_type,
                t_start_mono_ns, t_end_mono_ns, t_start_utc_ns, seq_first, seq_last, state, created_utc,
                confirmed_utc, media_deleted_utc)
            SELECT printf('cap-%010d', i), 'cam' || (i % 2), 'frame', 'video', printf('media/%010d.jpg', i),
                printf('%064x', i), 200000 + (i % 5000), 'image/jpeg',
                i * 1000000000, i * 1000000000 + 500000000, 1700000000000000000 + i * 1000000000, i, i,
                CASE WHEN i >= {pending} THEN 'committed' WHEN i >= {sent} THEN 'synced' ELSE 'confirmed' END,
                '2026-01-01T00:00:00Z',
                CASE WHEN i < {sent} THEN '2026-01-01T00:01:00Z' END,
                CASE WHEN i < {keep} THEN '2026-01-02T00:00:00Z' END
            FROM s"""
        )
        conn.execute(
            """INSERT INTO outbox (record_id, kind, body_json, blob_sha256, blob_size, blob_path, media_type,
                record_state, blob_state, created_utc, confirmed_utc)
            SELECT record_id, 'capture', '{"stream":"' || stream || '","kind":"frame","modality":"video"}',
                sha256, size, path, media_type,
                CASE state WHEN 'committed' THEN 'pending' WHEN 'synced' THEN 'sent' ELSE 'confirmed' END,
                CASE state WHEN 'committed' THEN 'pending' WHEN 'synced' THEN 'sent' ELSE 'confirmed' END,
                created_utc, confirmed_utc
            FROM captures ORDER BY t_start_mono_ns"""
        )
        conn.execute(
            """INSERT INTO verdicts (record_id, capture_id, profile, profile_version, verdict, reasons_json,
                metrics_json, analyzers_json, created_utc)
            SELECT 'v-' || record_id, record_id, 'default', '1',
                CASE WHEN seq_first % 33 = 0 THEN 'fail' ELSE 'pass' END, '[]', '{}', '{}', created_utc
            FROM captures"""
        )
    conn.execute("ANALYZE")
    conn.close()


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(path: Path, repeat: int) -> dict[str, float]:
    cat = Catalog(path, DEVICE)
    try:
        ops: dict[str, Callable[[], object]] = {
            "records_to_send(100)": lambda: cat.outbox.records_to_send(100, ()),
            "blobs_to_send(16)": lambda: cat.outbox.blobs_to_send(16, ()),
            "unconfirmed(1000)": lambda: cat.outbox.unconfirmed(1000),
            "eviction_candidates(200)": lambda: cat.media.eviction_candidates(200),
            "ls --limit 100": lambda: cat.captures(limit=100),
            "ls --stream cam1 --limit 100": lambda: cat.captures(stream="cam1", limit=100),
        }
        return {name: timed(fn, repeat) for name, fn in ops.items()}
    finally:
        cat.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="Comma-separated capture counts.")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fieldcap-catalog-scale-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"catalog-{n}.sqlite"
            t0 = time.perf_counter()
            fill(path, n)
            print(f"filled {n:,} captures in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
            results[n] = measure(path, args.repeat)
            path.unlink()
    names = list(results[sizes[0]])
    head = "".join(f"{n:>14,}" for n in sizes)
    print(f"\n{'operation (median ms)':32}{head}{'ratio':>10}")
    for name in names:
        cells = "".join(f"{results[n][name] * 1e3:14.3f}" for n in sizes)
        ratio = results[sizes[-1]][name] / results[sizes[0]][name]
        print(f"{name:32}{cells}{ratio:10.2f}")


if __name__ == "__main__":
    main()
