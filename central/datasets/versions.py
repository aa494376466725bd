"""Human annotation versions, kept beside the machine's in the central store.

The machine's annotations are ``annotation`` records as the devices sent them and are never
changed. A review import adds, per capture, a numbered human version (1, 2, ...) holding the whole
corrected annotation set; exports use the newest human version where one exists and say so in the
lineage, and still carry the machine's set. The tables are created on first use with ``CREATE
TABLE IF NOT EXISTS`` through the store's own transaction helpers, so SQLite and PostgreSQL both work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.store import CentralStore

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS dataset_reviews (
        review_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        tool TEXT NOT NULL,
        imported_utc TEXT NOT NULL,
        tasks BIGINT NOT NULL,
        versions BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dataset_annotation_versions (
        device TEXT NOT NULL,
        capture_id TEXT NOT NULL,
        version_no BIGINT NOT NULL,
        review_id TEXT NOT NULL,
        author TEXT,
        reviewed_utc TEXT,
        content_sha256 TEXT NOT NULL,
        annotations TEXT NOT NULL,
        PRIMARY KEY (device, capture_id, version_no)
    )""",
]


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and for every exported file: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_sha256(annotations: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_json(list(annotations)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class HumanVersion:
    """One human annotation set of one capture."""

    version: int
    review_id: str
    author: str | None
    reviewed_utc: str | None
    content_sha256: str
    annotations: tuple[dict[str, Any], ...]

    def provenance(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "review_id": self.review_id,
            "author": self.author,
            "reviewed_utc": self.reviewed_utc,
        }


def ensure_schema(store: CentralStore) -> None:
    with store._tx() as cur:
        for stmt in SCHEMA:
            store._exec(cur, stmt)


def latest_versions(store: CentralStore) -> dict[tuple[str, str], HumanVersion]:
    """The newest human version of every capture that has one, by (device, capture_id)."""
    ensure_schema(store)
    with store._tx() as cur:
        rows = store._exec(
            cur,
            "SELECT v.device, v.capture_id, v.version_no, v.review_id, v.author, v.reviewed_utc, v.content_sha256,"
            " v.annotations FROM dataset_annotation_versions v JOIN"
            " (SELECT device, capture_id, MAX(version_no) AS n FROM dataset_annotation_versions"
            "  GROUP BY device, capture_id) m"
            " ON m.device = v.device AND m.capture_id = v.capture_id AND m.n = v.version_no",
        ).fetchall()
    out: dict[tuple[str, str], HumanVersion] = {}
    for device, capture_id, n, review_id, author, reviewed, digest, body in rows:
        out[(str(device), str(capture_id))] = HumanVersion(
            int(n), str(review_id), author, reviewed, str(digest), tuple(json.loads(body))
        )
    return out


def add_versions(
    store: CentralStore,
    review_id: str,
    source: str,
    imported_utc: str,
    tasks: int,
    items: Sequence[tuple[str, str, str | None, str | None, list[dict[str, Any]]]],
) -> tuple[int, int]:
    """Store (device, capture_id, author, reviewed_utc, annotations) items as new versions, in one
    transaction; an item equal to the capture's newest human version is not stored again.

    Returns (versions added, unchanged).
    """
    ensure_schema(store)
    current = latest_versions(store)
    added = unchanged = 0
    with store._tx() as cur:
        for device, capture_id, author, reviewed, annotations in items:
            digest = content_sha256(annotations)
            prev = current.get((device, capture_id))
            if prev is not None and prev.content_sha256 == digest:
                unchanged += 1
                continue
            version = 1 if prev is None else prev.version + 1
            store._exec(
                cur,
                "INSERT INTO dataset_annotation_versions (device, capture_id, version_no, review_id, author,"
                " reviewed_utc, content_sha256, annotations) VALUES (?,?,?,?,?,?,?,?)",
                (device, capture_id, version, review_id, author, reviewed, digest, canonical_json(annotations)),
            )
            current[(device, capture_id)] = HumanVersion(
                version, review_id, author, reviewed, digest, tuple(annotations)
            )
            added += 1
        store._exec(
            cur,
            "INSERT INTO dataset_reviews (review_id, source, tool, imported_utc, tasks, versions)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (review_id) DO UPDATE SET versions ="
            " dataset_reviews.versions + excluded.versions",
            (review_id, source, "labelstudio", imported_utc, tasks, added),
        )
    return added, unchanged
