"""The catalog's hot queries use an index, so their cost does not grow with the catalog (bench_catalog_scale)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from agent.catalog.db import Catalog
from agent.cli import cli


def _fill(path: Path, n: int, *, outbox: bool = True) -> None:
    """``n`` captures (record ids descending as time ascends), each with an outbox row waiting for a receipt."""
    Catalog(path, "dev1").close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            f"""WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1})
            INSERT INTO captures (record_id, stream, kind, modality, path, sha256, size, media_type,
                t_start_mono_ns, t_end_mono_ns, t_start_utc_ns, seq_first, seq_last, state, created_utc)
            SELECT printf('cap-%04d', {n} - i), 'cam', 'frame', 'video', 'm/' || i, printf('%064x', i), 10,
                'image/jpeg', i, i + 1, i, i, i, 'synced', '2026-01-01T00:00:00Z' FROM s"""
        )
        if outbox:
            conn.execute(
                "INSERT INTO outbox (record_id, kind, body_json, record_state, created_utc)"
                " SELECT record_id, 'capture', '{}', 'sent', created_utc FROM captures ORDER BY t_start_mono_ns"
            )
    conn.close()


def _plan(conn: sqlite3.Connection, sql: str) -> str:
    return " | ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql))


def test_receipt_wait_and_ls_read_an_index_not_the_table(tmp_path: Path) -> None:
    # Not catalog.sqlite: its outbox bodies are placeholders, not records the ingester takes.
    path = tmp_path / "bench.sqlite"
    _fill(path, 50)
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")  # the statistics that made SQLite walk the outbox in rowid order
    sent = _plan(conn, "SELECT record_id FROM outbox WHERE record_state = 'sent' ORDER BY seq LIMIT 10")
    assert "outbox_sent" in sent, sent
    ls = _plan(conn, "SELECT record_id FROM captures ORDER BY t_start_mono_ns, record_id LIMIT 10")
    assert "captures_time" in ls and "TEMP B-TREE" not in ls, ls
    conn.close()
    with Catalog(path, "dev1") as cat:
        assert cat.outbox.unconfirmed(3)[0] == ["cap-0050", "cap-0049", "cap-0048"]


def test_ls_limit_lists_the_oldest_captures(tmp_path: Path) -> None:
    _fill(tmp_path / "catalog.sqlite", 20, outbox=False)
    runner = CliRunner()
    out = runner.invoke(cli, ["ls", "--data-dir", str(tmp_path), "--limit", "3", "--json"])
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["record_id"] for line in out.output.splitlines()] == ["cap-0020", "cap-0019", "cap-0018"]
    assert runner.invoke(cli, ["ls", "--data-dir", str(tmp_path), "--limit", "0"]).exit_code == 2
