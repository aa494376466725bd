"""``fieldcap export``: a filtered selection of the central store written as a dataset version.

Each format module turns the selected samples into a list of ``FileSpec`` (what to write, from
what); ``snapshot.write_snapshot`` writes them resumably and seals them with a manifest. Samples
whose media never reached the central blob tree are left out and listed in the manifest under
``skipped`` with the reason, never exported half. ``ExportOptions.version`` exports a named version
(``named``): its frozen samples with their frozen annotation sets, whatever the store holds since.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.blobs import BlobBackend
from central.datasets import named
from central.datasets.errors import DatasetError
from central.datasets.outdir import SCHEMA, prepare
from central.datasets.plan import FORMATS, ExportContext, ExportOptions
from central.datasets.samples import Sample, load_samples
from central.datasets.selection import load_for, select, unknown_values
from central.datasets.snapshot import FileSpec, WriteStats, write_snapshot
from central.store import CentralStore

__all__ = ["FORMATS", "ExportOptions", "ExportResult", "export"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    stats: WriteStats

    @property
    def version_id(self) -> str:
        return str(self.manifest["version_id"])


def _exportable(samples: Sequence[Sample], blobs: BlobBackend) -> tuple[list[Sample], list[dict[str, str]]]:
    keep: list[Sample] = []
    skipped: list[dict[str, str]] = []
    for s in samples:
        reason = None
        if s.blob is not None:
            if not s.blob.stored:
                reason = "media not (yet) stored centrally"
            elif not blobs.exists(s.blob.sha256, s.blob.size):
                reason = f"media file missing from {blobs.describe()}"
        if reason is None:
            keep.append(s)
        else:
            skipped.append({"key": s.key, "reason": reason})
    return keep, skipped


def export(
    store: CentralStore,
    blobs: BlobBackend,
    out: Path,
    options: ExportOptions,
    *,
    replace: bool = False,
    progress: bool = False,
) -> ExportResult:
    """Write the selected samples as one version in ``out``; resumes an interrupted export there.

    An export with another plan in ``out`` is refused unless ``replace`` (``outdir.prepare``).
    """
    version = None
    if options.version is not None:
        if options.filters.as_dict():
            raise DatasetError("--version: a named version already fixes the samples; drop the filter options")
        version = named.get(store, options.version)
        # Only the devices the version holds samples of are read.
        everything = load_samples(store, devices={str(e["key"]).rpartition("/")[0] for e in version.entries})
    else:
        everything = load_for(store, options.filters)
    unknown = unknown_values(everything, options.filters)
    if unknown:
        raise DatasetError(
            f"{unknown[0]}: no sample in the store has it; check the spelling (fieldcap report lists them)"
        )
    plan = {"schema": SCHEMA, "format": options.fmt, "filters": options.filters.as_dict(), "layout": options.layout()}
    frozen: dict[str, Any] | None = None
    pinned: list[dict[str, str]] = []
    if version is not None:
        chosen, pinned = named.pin(everything, version)
        frozen = {k: v for k, v in version.summary().items() if k in ("name", "version_id", "author", "note")}
        frozen["created_utc"] = version.created_utc
        plan["version"] = {"name": version.name, "version_id": version.version_id}
    else:
        chosen = select(everything, options.filters)
    if not replace:  # refuse before the (slow) planning when the directory holds another export
        prepare(out, plan, replace=False)
    samples, skipped = _exportable(chosen, blobs)
    skipped = pinned + skipped
    if not samples:
        raise DatasetError(
            f"no sample matches the filters ({len(everything)} in the store, {len(skipped)} without media);"
            " loosen the filters"
        )
    ctx = ExportContext(blobs, options)
    module: Any = importlib.import_module(f"central.datasets.{options.fmt}")
    specs: list[FileSpec] = module.plan(samples, ctx)
    derived: dict[str, Any] | None = None
    if options.derive:
        from central.datasets import derive

        extra, derived = derive.plan(samples, ctx)
        specs = [*specs, *extra]
    header = {
        "name": options.name,
        "filters": options.filters.as_dict(),
        "samples": len(samples),
        "modalities": dict(sorted(Counter(s.modality for s in samples).items())),
        "annotation_sources": dict(sorted(Counter(s.annotation_source for s in samples).items())),
        "skipped": skipped,
        "invalid_records": everything.invalid,
        "license": options.license,
        "description": options.description,
    }
    if frozen is not None:
        header["dataset_version"] = frozen
    if derived is not None:
        header["derived"] = derived
    manifest, stats = write_snapshot(out, options.fmt, specs, header, plan=plan, replace=replace, progress=progress)
    return ExportResult(out, manifest, stats)
