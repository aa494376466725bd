"""Human annotation sets, kept beside the machine's in the central store: one per annotator and time.

The machine's annotations are ``annotation`` records as the devices sent them and are never
changed. A review import adds, per capture, one *annotation set* for every annotation a person
submitted (the whole annotation set of that task, with its annotator, role and time); nothing is
overwritten, so double annotation and later corrections all stay and agreement can be measured.
An *adjudicator* set (a review by a user marked as adjudicator, or ``fieldcap agreement
adjudicate``) settles a disagreement.

Exports choose one version per capture, deterministically: the newest adjudicator set, else the
newest annotator set (by the annotator's submission time, then set id), else the machine's
annotations. Tables are created on first use with ``CREATE TABLE IF NOT EXISTS`` through the
store's own transaction helpers, so SQLite and PostgreSQL both work. Review versions stored before
annotation sets existed (``dataset_annotation_versions``) are carried over as annotator sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from central.store import CentralStore

ANNOTATOR, ADJUDICATOR = "annotator", "adjudicator"
ROLES = (ANNOTATOR, ADJUDICATOR)

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
    """CREATE TABLE IF NOT EXISTS dataset_annotation_sets (
        set_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        capture_id TEXT NOT NULL,
        annotator TEXT NOT NULL,
        role TEXT NOT NULL,
        annotated_utc TEXT,
        review_id TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        annotations TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dataset_annotation_sets_capture ON dataset_annotation_sets (device, capture_id)",
]


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and for every exported file: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_sha256(annotations: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_json(list(annotations)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AnnotationSet:
    """Everything one person said about one capture at one time."""

    set_id: str
    device: str
    capture_id: str
    annotator: str
    role: str  # ANNOTATOR or ADJUDICATOR
    annotated_utc: str | None
    review_id: str
    content_sha256: str
    annotations: tuple[dict[str, Any], ...]

    @property
    def preference(self) -> tuple[bool, str, str]:
        """Larger is preferred: adjudicated before annotated, then newer, then the set id."""
        return (self.role == ADJUDICATOR, self.annotated_utc or "", self.set_id)

    def provenance(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "annotator": self.annotator,
            "role": self.role,
            "annotated_utc": self.annotated_utc,
            "review_id": self.review_id,
        }


@dataclass(frozen=True, slots=True)
class NewSet:
    """An annotation set to store (its id is derived from what it is)."""

    device: str
    capture_id: str
    annotator: str
    role: str
    annotated_utc: str | None
    annotations: list[dict[str, Any]]

    def set_id(self) -> str:
        what = [self.device, self.capture_id, self.annotator, self.role, self.annotated_utc]
        return hashlib.sha256(canonical_json([*what, content_sha256(self.annotations)]).encode()).hexdigest()[:32]


def chosen(sets: Sequence[AnnotationSet]) -> AnnotationSet | None:
    """The set exports use: the newest adjudication, else the newest annotator set."""
    return max(sets, key=lambda s: s.preference) if sets else None


def newest_by_annotator(sets: Sequence[AnnotationSet]) -> dict[str, AnnotationSet]:
    """Each annotator's latest word on a capture (adjudications left out)."""
    out: dict[str, AnnotationSet] = {}
    for s in sorted((s for s in sets if s.role == ANNOTATOR), key=lambda s: s.preference):
        out[s.annotator] = s
    return out


def ensure_schema(store: CentralStore) -> None:
    """Create the tables if missing and carry legacy versions over. Only what is missing is written, so
    roles that may not create tables or write sets (PostgreSQL exporters) read a store set up for them."""
    with store._tx() as cur:
        if not (store.has_table(cur, "dataset_annotation_sets") and store.has_table(cur, "dataset_withdrawn")):
            for stmt in [*SCHEMA, WITHDRAWN_SCHEMA]:
                store._exec(cur, stmt)
        legacy = store._exec(
            cur,
            "SELECT device, capture_id, review_id, author, reviewed_utc, annotations FROM dataset_annotation_versions"
            " ORDER BY device, capture_id, version_no",
        ).fetchall()
        if not legacy:
            return
        have = {str(r[0]) for r in store._exec(cur, "SELECT set_id FROM dataset_annotation_sets").fetchall()}
        for device, capture_id, review_id, author, reviewed, body in legacy:
            item = NewSet(str(device), str(capture_id), str(author or "unknown"), ANNOTATOR, reviewed, json.loads(body))
            if item.set_id() not in have:
                _insert(store, cur, item, str(review_id))


def _insert(store: CentralStore, cur: Any, item: NewSet, review_id: str) -> None:
    store._exec(
        cur,
        "INSERT INTO dataset_annotation_sets (set_id, device, capture_id, annotator, role, annotated_utc, review_id,"
        " content_sha256, annotations) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (set_id) DO NOTHING",
        (
            item.set_id(),
            item.device,
            item.capture_id,
            item.annotator,
            item.role,
            item.annotated_utc,
            review_id,
            content_sha256(item.annotations),
            canonical_json(item.annotations),
        ),
    )


def all_sets(store: CentralStore, devices: Collection[str] | None = None) -> dict[tuple[str, str], list[AnnotationSet]]:
    """Every human annotation set (of ``devices`` only, if given), by (device, capture_id), least preferred first."""
    ensure_schema(store)
    sql = (
        "SELECT set_id, device, capture_id, annotator, role, annotated_utc, review_id, content_sha256, annotations"
        " FROM dataset_annotation_sets"
    )
    with store._tx() as cur:
        if devices is None:
            rows = store._exec(cur, sql).fetchall()
        else:
            names, rows = sorted(set(devices)), []
            for i in range(0, len(names), 500):
                part = names[i : i + 500]
                rows += store._exec(cur, sql + f" WHERE device IN ({','.join('?' * len(part))})", part).fetchall()
    out: dict[tuple[str, str], list[AnnotationSet]] = {}
    for set_id, device, capture_id, annotator, role, annotated, review_id, digest, body in rows:
        s = AnnotationSet(
            str(set_id),
            str(device),
            str(capture_id),
            str(annotator),
            str(role),
            None if annotated is None else str(annotated),
            str(review_id),
            str(digest),
            tuple(json.loads(body)),
        )
        out.setdefault((s.device, s.capture_id), []).append(s)
    for sets in out.values():
        sets.sort(key=lambda s: s.preference)
    return out


def add_sets(
    store: CentralStore, review_id: str, source: str, tool: str, imported_utc: str, tasks: int, items: Sequence[NewSet]
) -> tuple[int, int]:
    """Store ``items`` in one transaction; a set stored before (same capture, person, role, time and
    content) is not stored again. Returns (sets added, already there)."""
    known = {s.set_id for sets in all_sets(store).values() for s in sets}
    added = unchanged = 0
    with store._tx() as cur:
        for item in items:
            if item.role not in ROLES:
                raise ValueError(f"unknown annotation role {item.role!r}")
            sid = item.set_id()
            if sid in known:
                unchanged += 1
                continue
            _insert(store, cur, item, review_id)
            known.add(sid)
            added += 1
        store._exec(
            cur,
            "INSERT INTO dataset_reviews (review_id, source, tool, imported_utc, tasks, versions)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (review_id) DO UPDATE SET versions ="
            " dataset_reviews.versions + excluded.versions",
            (review_id, source, tool, imported_utc, tasks, added),
        )
    return added, unchanged


# ---- Withdrawal notes (central.withdraw): annotation sets of a withdrawn participant's captures
# are marked, not rewritten; the captures themselves are gone, so no later export uses them.
WITHDRAWN_SCHEMA = """CREATE TABLE IF NOT EXISTS dataset_withdrawn (
    set_id TEXT PRIMARY KEY,
    withdrawn_utc TEXT NOT NULL,
    note TEXT NOT NULL
)"""


def mark_withdrawn(store: CentralStore, captures: set[tuple[str, str]], note: str, when: str) -> int:
    """Note every annotation set of these (device, capture_id) as withdrawn; how many were noted."""
    ensure_schema(store)
    with store._tx() as cur:
        rows = store._exec(cur, "SELECT set_id, device, capture_id FROM dataset_annotation_sets").fetchall()
        hit = [str(set_id) for set_id, device, capture in rows if (device, capture) in captures]
        for set_id in hit:
            store._exec(
                cur,
                "INSERT INTO dataset_withdrawn (set_id, withdrawn_utc, note) VALUES (?,?,?)"
                " ON CONFLICT (set_id) DO NOTHING",
                (set_id, when, note),
            )
    return len(hit)
