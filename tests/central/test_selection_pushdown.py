"""Exports, reports and versions read only the selected devices' records (``selection.load_for``),
and select exactly the samples that a full load filtered in Python selects, on SQLite and PostgreSQL.

The store is the demo's records three times over under different device names, each copy changed a
little (another site, verdicts missing, every third record missing, human annotation sets on some
captures), so devices differ in what joins to their captures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from central.datasets.samples import Sample, load_samples, read_records
from central.datasets.selection import Filters, load_for, select
from central.datasets.versions import ensure_schema
from central.store import CentralStore, open_store

from .conftest import own_database, sql

COLS = "device, record_id, kind, created_utc, received_utc, blob_sha256, blob_size, body"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    with own_database(request.getfixturevalue("postgres_url"), "pushdown") as url:
        yield url


def _copy(row: tuple[Any, ...], suffix: str, i: int) -> tuple[Any, ...] | None:
    """The demo's record as a differently named device's, changed per copy (None: left out)."""
    device, record_id, kind, created, received, sha, size, body = row
    if suffix == "-c" and i % 3 == 0:
        return None
    if suffix == "-b" and kind == "verdict" and i % 4 == 0:
        return None
    if suffix and kind == "session":
        env = json.loads(body)
        env["body"]["site"] = f"site{suffix}"
        body = json.dumps(env)
    return (device + suffix, record_id, kind, created, received, sha, size, body)


def fill(store: CentralStore, demo: Path) -> None:
    records = sql(demo, f"SELECT {COLS} FROM records ORDER BY device, record_id")
    owners = sql(demo, "SELECT device, sha256, received_utc FROM blob_owners")
    ensure_schema(store)
    with store._tx() as cur:
        for suffix in ("", "-b", "-c"):
            for i, row in enumerate(records):
                copy = _copy(row, suffix, i)
                if copy is not None:
                    store._exec(cur, f"INSERT INTO records ({COLS}) VALUES (?,?,?,?,?,?,?,?)", copy)
            for device, sha, received in owners:
                if suffix != "-c":  # the third copy's blobs were never uploaded
                    store._exec(cur, "INSERT INTO blob_owners VALUES (?,?,?)", (device + suffix, sha, received))
        captures = [r for r in records if r[2] == "capture"]
        for n, (device, record_id, *_rest) in enumerate(captures[::5]):
            for suffix, role in (("", "annotator"), ("-b", "adjudicator")):
                store._exec(
                    cur,
                    "INSERT INTO dataset_annotation_sets (set_id, device, capture_id, annotator, role, annotated_utc,"
                    " review_id, content_sha256, annotations) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        f"set-{suffix}-{n}",
                        device + suffix,
                        record_id,
                        "ann",
                        role,
                        f"2026-01-0{1 + n % 9}T00:00:00Z",
                        "review-1",
                        "0" * 64,
                        json.dumps([{"label": f"label-{n % 3}", "kind": "tag"}]),
                    ),
                )


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


def _variants(full: list[Sample]) -> list[Filters]:
    devices = sorted({s.device for s in full})
    times = sorted(t for s in full if (t := s.t_start_utc_ns) is not None)
    sessions = sorted({str(s.capture["session_id"]) for s in full if s.capture.get("session_id")})
    modalities = sorted({s.modality for s in full})
    labels = sorted({label for s in full for label in s.labels})
    assert len(devices) >= 3 and times and sessions and len(modalities) >= 2 and labels, (devices, modalities)
    others = [
        Filters(),
        Filters(sites=("site-b",)),
        Filters(sites=(str(full[0].site),)),
        Filters(sessions=(sessions[0][:8],)),
        Filters(since=_iso(times[len(times) // 3])),
        Filters(until=_iso(times[len(times) // 2])),
        Filters(modalities=(modalities[0],)),
        Filters(modalities=tuple(modalities[1:])),
        Filters(verdicts=("pass", "none")),
        Filters(verdicts=("fail", "review")),
        Filters(labels=(labels[0],)),
        Filters(include_superseded=True),
        Filters(times_of_day=("morning", "night")),
        Filters(modalities=(modalities[-1],), verdicts=("pass",), since=_iso(times[0])),
    ]
    device_sets = [(), (devices[0],), (devices[0], devices[-1]), (devices[1], "no-such-device")]
    return [replace(f, devices=ds) for ds in device_sets for f in others]


def test_a_device_selection_reads_those_devices_and_selects_what_a_full_load_selects(
    demo: Path, store_url: str
) -> None:
    store = open_store(store_url)
    try:
        fill(store, demo)
        full = load_samples(store)
        assert {s.human is not None for s in full} == {True, False}
        assert {s.blob.stored for s in full if s.blob} == {True, False}
        picked = []
        for filters in _variants(full):
            loaded = load_for(store, filters)
            if filters.devices:  # only those devices' samples were built, each as in the full load
                assert [asdict(s) for s in loaded] == [asdict(s) for s in full if s.device in filters.devices]
            expected = [asdict(s) for s in select(full, filters)]
            assert [asdict(s) for s in select(loaded, filters)] == expected, filters
            picked.append(len(expected))
        assert 0 in picked and sum(1 for n in picked if n) > len(picked) // 2, picked  # the filters do select
    finally:
        store.close()


def test_read_records_by_device_reads_only_their_rows(demo: Path, store_url: str) -> None:
    store = open_store(store_url)
    try:
        fill(store, demo)
        device = sorted({r[0] for r in sql(demo, "SELECT device FROM records")})[0] + "-b"
        everything = read_records(store)
        some = read_records(store, devices=[device, "no-such-device"])
        assert some == [r for r in everything if r[0] == device] and 0 < len(some) < len(everything)
    finally:
        store.close()
