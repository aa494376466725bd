"""Named dataset versions: a selection frozen under a name, with a change note and an author.

A named version records, for every sample the filters selected at that moment, its key, media
sha256 and which annotations it carried (the chosen human annotation set's id, or the machine's,
with the sha256 of the annotations either way). Later review imports, re-screens or new captures
do not change it: ``fieldcap export --version NAME`` exports exactly those samples with exactly
those annotation sets. Its ``version_id`` is the sha256 of that frozen content, so two names that
froze the same thing have the same id. A name is never reused or overwritten. Machine annotations
are frozen by their record ids, so annotations a device sends later (a re-screen) do not slip into
an older version either.

Stored in the central store (``dataset_named_versions``), created on first use through the store's
transaction helpers, so SQLite and PostgreSQL both work.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.datasets.errors import DatasetError
from central.datasets.samples import Sample
from central.datasets.selection import Filters, load_for, select, unknown_values
from central.datasets.versions import canonical_json, content_sha256
from central.store import CentralStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS dataset_named_versions (
        name TEXT PRIMARY KEY,
        version_id TEXT NOT NULL,
        created_utc TEXT NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        filters TEXT NOT NULL,
        samples BIGINT NOT NULL,
        entries TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dataset_named_notes (
        name TEXT NOT NULL,
        noted_utc TEXT NOT NULL,
        note TEXT NOT NULL,
        samples BIGINT NOT NULL
    )""",
]


@dataclass(frozen=True, slots=True)
class NamedVersion:
    name: str
    version_id: str
    created_utc: str
    author: str
    note: str
    filters: dict[str, Any]
    entries: tuple[dict[str, Any], ...]  # one per sample, by key

    def summary(self) -> dict[str, Any]:
        """JSON-ready: who, when, why, how selected, and the balance of what it holds."""
        env = [e.get("environment") or {} for e in self.entries]
        return {
            "name": self.name,
            "version_id": self.version_id,
            "created_utc": self.created_utc,
            "author": self.author,
            "note": self.note,
            "filters": self.filters,
            "samples": len(self.entries),
            "modalities": dict(sorted(Counter(str(e["modality"]) for e in self.entries).items())),
            "annotation_sources": dict(sorted(Counter(str(e["source"]) for e in self.entries).items())),
            "labels": dict(sorted(Counter(label for e in self.entries for label in e["labels"]).items())),
            "time_of_day": dict(sorted(Counter(str(e.get("time_of_day", "unknown")) for e in env).items())),
            "weather": dict(sorted(Counter(str(e.get("weather", "untagged")) for e in env).items())),
        }


def entry(s: Sample) -> dict[str, Any]:
    """What a version freezes about one sample."""
    return {
        "key": s.key,
        "modality": s.modality,
        "sha256": None if s.blob is None else s.blob.sha256,
        "source": s.annotation_source,
        "set_id": None if s.human is None else s.human.set_id,
        "machine_ids": sorted(str(a["record_id"]) for a in s.machine_annotations) if s.human is None else [],
        "annotations_sha256": content_sha256(s.annotations),
        "labels": s.labels,
        "environment": s.environment,
    }


def ensure_schema(store: CentralStore) -> None:
    with store._tx() as cur:
        if store.has_table(cur, "dataset_named_versions"):
            return  # no DDL: roles that may not create tables can read
        for stmt in SCHEMA:
            store._exec(cur, stmt)


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise DatasetError(
            f"version name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def create(store: CentralStore, name: str, filters: Filters, note: str, author: str, now_utc: str) -> NamedVersion:
    """Freeze the samples ``filters`` select now under ``name``; an existing name is refused."""
    _check_name(name)
    if not note.strip():
        raise DatasetError("--note: say what changed in this version (it is kept with it)")
    if not author.strip():
        raise DatasetError("--author: give who made this version")
    existing = find(store, name)
    if existing is not None:
        raise DatasetError(
            f"version {name!r} exists (made {existing.created_utc} by {existing.author}); versions are"
            " immutable — choose a new name"
        )
    everything = load_for(store, filters)
    unknown = unknown_values(everything, filters)
    if unknown:
        raise DatasetError(f"{unknown[0]}: no sample in the store has it; check the spelling")
    chosen = select(everything, filters)
    if not chosen:
        raise DatasetError(f"no sample matches the filters ({len(everything)} in the store); loosen the filters")
    entries = sorted((entry(s) for s in chosen), key=lambda e: str(e["key"]))
    version_id = hashlib.sha256(canonical_json(entries).encode()).hexdigest()
    ensure_schema(store)
    with store._tx() as cur:
        store._exec(
            cur,
            "INSERT INTO dataset_named_versions"
            " (name, version_id, created_utc, author, note, filters, samples, entries)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (name) DO NOTHING",
            (
                name,
                version_id,
                now_utc,
                author.strip(),
                note.strip(),
                canonical_json(filters.as_dict()),
                len(entries),
                canonical_json(entries),
            ),
        )
    made = find(store, name)
    if made is None or made.version_id != version_id or made.created_utc != now_utc:
        raise DatasetError(f"version {name!r} was created by someone else at the same moment; choose a new name")
    return made


def _row(row: Sequence[Any]) -> NamedVersion:
    name, version_id, created, author, note, filters, entries = row
    return NamedVersion(
        str(name),
        str(version_id),
        str(created),
        str(author),
        str(note),
        json.loads(filters),
        tuple(json.loads(entries)),
    )


COLUMNS = "name, version_id, created_utc, author, note, filters, entries"


def find(store: CentralStore, name: str) -> NamedVersion | None:
    ensure_schema(store)
    with store._tx() as cur:
        row = store._exec(cur, f"SELECT {COLUMNS} FROM dataset_named_versions WHERE name = ?", (name,)).fetchone()
    return None if row is None else _row(row)


def get(store: CentralStore, name: str) -> NamedVersion:
    """The version ``name``; an unknown name is an error that lists the known ones."""
    found = find(store, name)
    if found is None:
        known = [v.name for v in list_versions(store)]
        listed = ", ".join(known[-10:]) if known else "none yet; make one with fieldcap version create"
        raise DatasetError(f"no dataset version named {name!r} (known: {listed})")
    return found


def list_versions(store: CentralStore) -> list[NamedVersion]:
    """Every named version, oldest first."""
    ensure_schema(store)
    with store._tx() as cur:
        rows = store._exec(cur, f"SELECT {COLUMNS} FROM dataset_named_versions ORDER BY created_utc, name").fetchall()
    return [_row(r) for r in rows]


def diff(a: NamedVersion, b: NamedVersion) -> dict[str, Any]:
    """What changed from ``a`` to ``b``: samples added, removed, relabelled (other annotations),
    and media replaced (same key, other bytes — a re-recorded capture)."""
    old = {str(e["key"]): e for e in a.entries}
    new = {str(e["key"]): e for e in b.entries}
    relabelled, remedia = [], []
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key], new[key]
        if before["annotations_sha256"] != after["annotations_sha256"]:
            relabelled.append(
                {
                    "key": key,
                    "labels_before": before["labels"],
                    "labels_after": after["labels"],
                    "source_before": before["source"],
                    "source_after": after["source"],
                    "set_before": before["set_id"],
                    "set_after": after["set_id"],
                }
            )
        if before["sha256"] != after["sha256"]:
            remedia.append(key)
    return {
        "from": {"name": a.name, "version_id": a.version_id},
        "to": {"name": b.name, "version_id": b.version_id},
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "relabelled": relabelled,
        "media_changed": remedia,
        "unchanged": len(old.keys() & new.keys()) - len({r["key"] for r in relabelled} | set(remedia)),
    }


def pin(samples: Sequence[Sample], version: NamedVersion) -> tuple[list[Sample], list[dict[str, str]]]:
    """The samples of ``version``, each carrying the annotation set frozen with it; (samples, problems):
    a sample no longer in the store, or whose frozen annotations cannot be found, is a problem."""
    by_key = {s.key: s for s in samples}
    out: list[Sample] = []
    problems: list[dict[str, str]] = []
    for e in version.entries:
        s = by_key.get(str(e["key"]))
        if s is None:
            problems.append({"key": str(e["key"]), "reason": "no longer in the central store"})
            continue
        if e["set_id"] is not None:
            s.human = next((h for h in s.human_sets if h.set_id == e["set_id"]), None)
            if s.human is None:
                problems.append({"key": s.key, "reason": f"annotation set {e['set_id']} is missing"})
                continue
        else:
            s.human = None
            frozen_ids = set(e.get("machine_ids") or [])
            s.machine_annotations = [a for a in s.machine_annotations if str(a["record_id"]) in frozen_ids]
        if content_sha256(s.annotations) != e["annotations_sha256"]:
            problems.append({"key": s.key, "reason": "the frozen annotations changed in the store"})
            continue
        out.append(s)
    out.sort(key=lambda s: s.sort_key)
    return out, problems


# ---- Withdrawal notes (central.withdraw): a version is immutable, so what a withdrawal removed from
# the store is noted beside each version that holds it; exporting the version then skips those
# samples (they are no longer in the store) and says so.

NOTES_SCHEMA = """CREATE TABLE IF NOT EXISTS dataset_named_notes (
    name TEXT NOT NULL,
    noted_utc TEXT NOT NULL,
    note TEXT NOT NULL,
    samples BIGINT NOT NULL
)"""


def note_withdrawn(store: CentralStore, keys: set[str], note: str, when: str) -> int:
    """Note, beside every named version holding any of these sample keys, how many it held; the
    number of versions noted."""
    if not keys:
        return 0
    noted = 0
    with store._tx() as cur:
        if not store.has_table(cur, "dataset_named_versions"):
            return 0
        if not store.has_table(cur, "dataset_named_notes"):  # a store from before the notes (no DDL otherwise)
            store._exec(cur, NOTES_SCHEMA)
        for name, entries in store._exec(cur, "SELECT name, entries FROM dataset_named_versions").fetchall():
            held = sum(str(e.get("key")) in keys for e in json.loads(entries))
            if held:
                store._exec(
                    cur,
                    "INSERT INTO dataset_named_notes (name, noted_utc, note, samples) VALUES (?,?,?,?)",
                    (str(name), when, note, held),
                )
                noted += 1
    return noted


def notes(store: CentralStore, name: str) -> list[dict[str, Any]]:
    """The withdrawal notes of version ``name``, oldest first."""
    with store._tx() as cur:
        if not store.has_table(cur, "dataset_named_notes"):
            return []
        rows = store._exec(
            cur, "SELECT noted_utc, note, samples FROM dataset_named_notes WHERE name = ? ORDER BY noted_utc", (name,)
        ).fetchall()
    return [{"noted_utc": str(t), "note": str(n), "samples": int(k)} for t, n, k in rows]
