"""What an export may do to its ``--out`` directory: resume its own plan, never clobber another.

An export writes its plan (schema, format, filters and the options that shape its files) into
``.fieldcap-export.plan`` before its first file. A later export into the same directory resumes
(and updates) it only when its plan is the same; with another plan it is refused, saying what is
there and what to do, unless ``--replace`` is given — then exactly the files the earlier export
wrote (its manifest and journal list them) are deleted, and nothing else: a file that no export
wrote is never deleted, and a directory holding only such files is never written into.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from central.datasets.errors import DatasetError
from central.datasets.versions import canonical_json

SCHEMA = "fieldcap-dataset/1"
MANIFEST = "manifest.json"
JOURNAL = ".fieldcap-export.journal"
PLAN = ".fieldcap-export.plan"
BOOKKEEPING = (MANIFEST, JOURNAL, PLAN)


def read_journal(out: Path) -> dict[str, tuple[str, str, int]]:
    """Journal entries: path → (fingerprint, sha256, size); a line cut short by a crash is ignored."""
    entries: dict[str, tuple[str, str, int]] = {}
    journal = out / JOURNAL
    if journal.exists():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                entries[str(row["path"])] = (str(row["fingerprint"]), str(row["sha256"]), int(row["size"]))
            except (ValueError, KeyError, TypeError):
                continue
    return entries


def _manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data["files"], list):
            raise TypeError
        return data
    except (ValueError, KeyError, TypeError, OSError):
        raise DatasetError(
            f"--out {out}: {MANIFEST} there is not a fieldcap manifest; give an empty or new --out directory"
        ) from None


def owned_files(out: Path) -> set[str]:
    """Paths (relative) of every file an earlier export in ``out`` wrote: its journal and manifest."""
    owned = set(read_journal(out))
    manifest = _manifest(out)
    if manifest is not None:
        owned |= {str(f["path"]) for f in manifest["files"] if isinstance(f, dict) and "path" in f}
    return {p for p in owned if not p.startswith("/") and ".." not in Path(p).parts}


def previous_plan(out: Path) -> dict[str, Any] | None:
    """The plan of the export in ``out``: its plan file, else (an export made before plans were
    recorded) its manifest's format and filters; ``None`` when no export is there."""
    path = out / PLAN
    if path.exists():
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(plan, dict):
                return plan
        except ValueError:
            pass
        return {"schema": "unreadable plan"}
    manifest = _manifest(out)
    if manifest is not None:
        return {"schema": manifest.get("schema"), "format": manifest.get("format"), "filters": manifest.get("filters")}
    if (out / JOURNAL).exists():
        return {"schema": "unknown (an interrupted export without a plan)"}
    return None


def _describe(plan: Mapping[str, Any]) -> str:
    filters = plan.get("filters")
    what = f"{plan.get('format') or 'unknown'} export"
    what += f" with filters {canonical_json(filters)}" if filters else " of everything (no filters)"
    layout = plan.get("layout")
    if layout:
        what += f", {', '.join(f'{k} {v}' for k, v in sorted(layout.items()))}"
    return what


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = [k for k in ("schema", "format", "filters", "layout") if (old.get(k) or None) != (new.get(k) or None)]
    if not keys:  # a legacy plan compares only what it recorded
        keys = ["plan"]
    return ", ".join(keys)


def same_plan(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A legacy plan (from a manifest, no layout recorded) matches on schema, format and filters."""
    keys = ("schema", "format", "filters") if "layout" not in old else ("schema", "format", "filters", "layout")
    return all((old.get(k) or None) == (new.get(k) or None) for k in keys)


def prepare(out: Path, plan: Mapping[str, Any], *, replace: bool) -> int:
    """Make ``out`` ready for an export with ``plan``; returns the number of files ``--replace`` removed.

    Refuses (``DatasetError``) a file, a directory with other files and no export, and an export
    with another plan unless ``replace``.
    """
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file; give a directory")
    if not out.is_dir():
        return 0
    old = previous_plan(out)
    if old is None:
        if any(out.iterdir()):
            raise DatasetError(
                f"--out {out}: the directory holds other files and no fieldcap export; give an empty or new"
                " directory (fieldcap never deletes files it did not write)"
            )
        return 0
    if same_plan(old, plan):
        return 0
    owned = owned_files(out)
    if not replace:
        raise DatasetError(
            f"--out {out}: holds a {_describe(old)} ({len(owned)} files); this is a {_describe(plan)}"
            f" (differs in {_differences(old, plan)}). Nothing was changed. Give a new --out directory,"
            " repeat the earlier command to resume or update that export, or add --replace to delete"
            " the earlier export's files and write this one"
        )
    return remove_export(out, owned)


def remove_export(out: Path, owned: set[str]) -> int:
    """Delete the files an export wrote (and its bookkeeping), then the directories that left empty."""
    removed = 0
    parents: set[Path] = set()
    for rel in sorted(owned | set(BOOKKEEPING)):
        path = out / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed += rel not in BOOKKEEPING
            parents.update(p for p in path.parents if p != out and out in p.parents)
    for d in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return removed


def write_plan(out: Path, plan: Mapping[str, Any]) -> None:
    (out / PLAN).write_text(json.dumps(dict(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
