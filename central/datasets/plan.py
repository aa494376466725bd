"""Building blocks of an export plan: options, the media copy, the metadata row of a sample.

Every format module (``jsonl``, ``hf``, ``webdataset``, ``labelstudio``, ``mcap``) has
``plan(samples, ctx) -> list[FileSpec]`` and builds it from these pieces, so a sample carries the
same metadata and lineage in every format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central.blobs import BlobBackend
from central.datasets.errors import DatasetError
from central.datasets.lineage import lineage
from central.datasets.samples import Sample, extension
from central.datasets.selection import Filters
from central.datasets.snapshot import FileSpec, fingerprint

FORMATS = ("jsonl", "hf", "webdataset", "labelstudio", "mcap")
DERIVATIONS = ("trim", "normalize")  # ``derive``: silence trimmed, loudness normalised

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExportOptions:
    fmt: str
    filters: Filters = field(default_factory=Filters)
    name: str | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    license: str | None = None
    description: str | None = None
    media_url_prefix: str = "/data/local-files/?d="
    overlap: float = 0.0  # labelstudio: share of tasks for two annotators
    overlap_seed: int = 0
    version: str | None = None  # a named version (``named``) to export instead of the filters' selection
    derive: tuple[str, ...] = ()  # ``derive.DERIVATIONS`` applied to speech takes, beside the originals
    target_lufs: float = -23.0
    peak_dbfs: float = -1.0

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise DatasetError(f"--format {self.fmt!r}: unknown; use one of {', '.join(FORMATS)}")
        if self.shard_bytes < 1024:
            raise DatasetError(f"--shard-size {self.shard_bytes}: too small; give at least 1024 bytes")
        if not 0.0 <= self.overlap <= 1.0:
            raise DatasetError(f"--overlap {self.overlap}: give a share of tasks between 0 and 1 (0.1 = 10%)")
        bad = [d for d in self.derive if d not in DERIVATIONS]
        if bad:
            raise DatasetError(f"--derive {bad[0]!r}: unknown; use {','.join(DERIVATIONS)} (comma-separated)")
        if not -70.0 <= self.target_lufs <= -5.0:
            raise DatasetError(f"--target-lufs {self.target_lufs:g}: give a loudness between -70 and -5 LUFS")
        if not -30.0 <= self.peak_dbfs <= 0.0:
            raise DatasetError(f"--peak-limit {self.peak_dbfs:g}: give a peak between -30 and 0 dBFS")
        if self.overlap and self.fmt != "labelstudio":
            raise DatasetError("--overlap: only --format labelstudio marks tasks for double annotation")

    def layout(self) -> dict[str, Any]:
        """The options that shape this format's files (part of the plan an export resumes only when equal)."""
        out: dict[str, Any] = {}
        if self.fmt in ("hf", "webdataset"):
            out["shard_bytes"] = self.shard_bytes
        if self.fmt == "labelstudio":
            out["media_url_prefix"] = self.media_url_prefix
            if self.overlap:  # absent when 0, so exports made before --overlap existed resume
                out["overlap"] = self.overlap
                out["overlap_seed"] = self.overlap_seed
        if self.derive:  # likewise absent without --derive
            out["derive"] = sorted(self.derive)
            if "normalize" in self.derive:
                out["target_lufs"], out["peak_dbfs"] = self.target_lufs, self.peak_dbfs
        return out


@dataclass(frozen=True, slots=True)
class ExportContext:
    blobs: BlobBackend
    options: ExportOptions


def media_path(s: Sample, prefix: str = "media") -> str | None:
    """Where a sample's media goes inside an export (``None`` for readings-only captures)."""
    if s.blob is None:
        return None
    return f"{prefix}/{s.key}.{extension(s.blob.media_type)}"


def copy_spec(ctx: ExportContext, s: Sample, path: str) -> FileSpec:
    """A verbatim copy of a sample's blob; its sha256 is its content address."""
    assert s.blob is not None
    sha256 = s.blob.sha256

    def write(dest: Path) -> None:
        ctx.blobs.copy_to(sha256, dest)

    return FileSpec(path, fingerprint("blob", s.blob.sha256), write, s.blob.size, s.blob.sha256)


def text_spec(path: str, make: Callable[[], str], *inputs: Any) -> FileSpec:
    """A UTF-8 text file made by ``make``, fingerprinted by ``inputs``."""

    def write(dest: Path) -> None:
        dest.write_text(make(), encoding="utf-8")

    return FileSpec(path, fingerprint("text", path, *inputs), write)


def sample_row(s: Sample, media: str | None) -> dict[str, Any]:
    """The metadata every format carries for a sample (JSON-ready, deterministic)."""
    verdict = s.verdict or {}
    row: dict[str, Any] = {
        "key": s.key,
        "device": s.device,
        "record_id": s.record_id,
        "stream": s.stream_name,
        "modality": s.modality,
        "kind": s.capture.get("kind"),
        "media": media,
        "media_type": None if s.blob is None else s.blob.media_type,
        "sha256": None if s.blob is None else s.blob.sha256,
        "size": None if s.blob is None else s.blob.size,
        "t_start_utc_ns": s.t_start_utc_ns,
        "duration_s": s.duration_s,
        "session_id": s.capture.get("session_id"),
        "item_id": s.capture.get("item_id"),
        "take": s.capture.get("take"),
        "qc": None
        if s.verdict is None
        else {
            "verdict": verdict.get("verdict"),
            "profile": verdict.get("profile"),
            "profile_version": verdict.get("profile_version"),
            "reasons": verdict.get("reasons"),
            "metrics": verdict.get("metrics"),
            "channels": s.channel_verdicts or None,
        },
        "annotations": s.annotations,
        "annotation_source": s.annotation_source,
        "labels": s.labels,
        "meta": s.meta,
        "environment": s.environment,
        "lineage": lineage(s),
    }
    if "readings" in s.capture:
        row["readings"] = s.capture["readings"]
    return row
