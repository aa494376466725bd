"""A dataset version on disk: files written once, verified, listed in a manifest with their sha256.

The version id is the sha256 of the canonical JSON of ``{"schema", "format", "files"}`` — every
file's path, size and sha256 — so two exports with the same bytes have the same id, whatever they
were called, when or where they were made. Every format writes deterministic bytes (fixed tar
headers, sorted keys, no wall-clock values), so exporting the same store twice gives the same id.

Exports resume: a journal beside the files remembers, for each file, a fingerprint of what it was
made from and the sha256 it got. A file whose fingerprint is unchanged and whose bytes still hash to
the journal's sha256 (or, for media, to its content address) is kept instead of written again.
Only an export with the same plan is resumed; ``outdir`` guards the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.datasets import outdir
from central.datasets.errors import DatasetError
from central.datasets.outdir import JOURNAL, MANIFEST, SCHEMA
from central.datasets.versions import canonical_json
from sync.files import fsync_dir, sha256_file


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a version: where it goes, what it is made from, and how to write it."""

    path: str  # relative, POSIX separators
    fingerprint: str  # digest of everything the bytes depend on
    write: Callable[[Path], None]  # writes the complete file at the given (temporary) path
    size_hint: int = 0  # for the progress bar
    sha256: str | None = None  # known in advance for media copies


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def version_id(fmt: str, files: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_json({"schema": SCHEMA, "format": fmt, "files": list(files)}).encode()).hexdigest()


def _safe_path(out: Path, rel: str) -> Path:
    path = out / rel
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise DatasetError(f"refusing to write outside the export directory: {rel!r}")
    return path


def _write_one(out: Path, spec: FileSpec) -> tuple[str, int]:
    final = _safe_path(out, spec.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        spec.write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        digest, size = sha256_file(tmp)
        if spec.sha256 is not None and digest != spec.sha256:
            raise DatasetError(
                f"{spec.path}: the source has sha256 {digest}, expected {spec.sha256}; the central blob"
                " is corrupt — check the blob tree (fieldcap central ls) before exporting again"
            )
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return digest, size


def _unchanged(out: Path, spec: FileSpec, entries: dict[str, tuple[str, str, int]]) -> tuple[str, int] | None:
    expected = spec.sha256
    if expected is None:
        entry = entries.get(spec.path)
        if entry is None or entry[0] != spec.fingerprint:
            return None
        expected = entry[1]
    path = out / spec.path
    if not path.is_file():
        return None
    digest, size = sha256_file(path)
    return (digest, size) if digest == expected else None


@dataclass(frozen=True, slots=True)
class WriteStats:
    written: int
    kept: int
    removed: int


def write_snapshot(
    out: Path,
    fmt: str,
    specs: Sequence[FileSpec],
    header: dict[str, Any],
    *,
    plan: dict[str, Any] | None = None,
    replace: bool = False,
    progress: bool = False,
) -> tuple[dict[str, Any], WriteStats]:
    """Write (or resume) a version in ``out``; return its manifest and what was written or kept.

    ``plan`` (schema, format, filters, layout) decides whether an export already in ``out`` may be
    resumed; another plan is refused unless ``replace`` (see ``outdir``).
    """
    plan = {"schema": SCHEMA, "format": fmt, "filters": header.get("filters") or {}, **(plan or {})}
    paths = [s.path for s in specs]
    if len(set(paths)) != len(paths) or set(paths) & set(outdir.BOOKKEEPING):
        raise RuntimeError("an export plan names one file twice")
    replaced = outdir.prepare(out, plan, replace=replace)
    out.mkdir(parents=True, exist_ok=True)
    entries, owned = outdir.read_journal(out), outdir.owned_files(out)
    outdir.write_plan(out, plan)
    done: dict[str, tuple[str, str, int]] = {}
    written = kept = 0
    ordered = sorted(specs, key=lambda s: s.path)
    with (
        _Progress(progress, sum(s.size_hint for s in specs), len(specs)) as bar,
        (out / JOURNAL).open("a", encoding="utf-8") as journal,
    ):
        for spec in ordered:
            found = _unchanged(out, spec, entries)
            if found is None:
                found = _write_one(out, spec)
                written += 1
                journal.write(
                    canonical_json(
                        {"path": spec.path, "fingerprint": spec.fingerprint, "sha256": found[0], "size": found[1]}
                    )
                    + "\n"
                )
                journal.flush()
            else:
                kept += 1
            done[spec.path] = (spec.fingerprint, *found)
            bar.advance(spec.size_hint)
    removed = replaced
    for stale in sorted(owned - set(done)):
        path = out / stale
        if ".." not in Path(stale).parts and path.is_file():
            path.unlink()
            removed += 1
    files = [{"path": p, "sha256": done[p][1], "size": done[p][2]} for p in sorted(done)]
    manifest = {
        **header,
        "schema": SCHEMA,
        "format": fmt,
        "plan": plan,
        "files": files,
        "version_id": version_id(fmt, files),
    }
    _replace(
        out / JOURNAL,
        "".join(
            canonical_json({"path": p, "fingerprint": f, "sha256": d, "size": n}) + "\n"
            for p, (f, d, n) in sorted(done.items())
        ),
    )
    _replace(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest, WriteStats(written, kept, removed)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def verify(out: Path) -> list[str]:
    """Problems with an export on disk: files missing or not matching the manifest."""
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for f in manifest["files"]:
        path = out / f["path"]
        if not path.is_file():
            problems.append(f"{f['path']}: missing")
        elif sha256_file(path) != (f["sha256"], f["size"]):
            problems.append(f"{f['path']}: does not match its sha256")
    if version_id(manifest["format"], manifest["files"]) != manifest["version_id"]:
        problems.append("manifest: version_id does not match the file list")
    return problems


class _Progress:
    """A rich progress bar over bytes (on stderr), or nothing."""

    def __init__(self, enabled: bool, total_bytes: int, files: int) -> None:
        self.enabled = enabled
        self.total = total_bytes
        self.files = files
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]export"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("export", total=max(1, self.total))
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
