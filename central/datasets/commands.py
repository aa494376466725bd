"""The click commands ``fieldcap export``, ``fieldcap report`` and ``fieldcap review-import``.

They share the store options and the sample filters. A user mistake (bad filter, unusable store,
wrong output directory, a file that is not a Label Studio export) ends in one line and exit 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from agent.cli.common import UserError, echo_json, json_option
from central.blobs import BlobBackend, BlobTree, open_blobs
from central.s3blobs import BlobStoreUnavailable
from central.store import CentralStore, open_store
from central.store_url import ENV as STORE_ENV
from central.store_url import resolve_store_url, store_url_option
from sync.errors import SyncError

F = Callable[..., Any]


def _blob_dir(store_url: str, blob_spec: str | None) -> Path:
    if blob_spec is not None:
        return Path(blob_spec)
    parts = urlsplit(store_url)
    if parts.scheme in ("", "sqlite"):
        return Path(store_url.removeprefix("sqlite://")).parent / "blobs"
    raise UserError(
        "--blobs DIR or s3://BUCKET/PREFIX is needed with a PostgreSQL store (where the ingesters keep the blobs)"
    )


@contextmanager
def _blob_backend(store_url: str, blob_spec: str | None) -> Iterator[BlobBackend]:
    """The blob directory or object store the ingesters write, closed afterwards; failures are user errors."""
    _check_store(store_url)  # first: a missing store explains a missing blob tree beside it
    if blob_spec is not None and blob_spec.startswith("s3://"):
        try:
            blobs = open_blobs(blob_spec)
        except SyncError as exc:
            raise UserError(str(exc)) from None
    else:
        root = _blob_dir(store_url, blob_spec)
        if not (root / "sha256").is_dir():
            raise UserError(f"--blobs {root}: no blob tree there (blobs/sha256/..); give the ingester's --blobs DIR")
        blobs = BlobTree(root)
    try:
        yield blobs
    except BlobStoreUnavailable as exc:
        raise UserError(str(exc)) from None
    finally:
        blobs.close()


def _check_store(store_url: str) -> None:
    if urlsplit(store_url).scheme in ("", "sqlite") and not Path(store_url.removeprefix("sqlite://")).is_file():
        raise UserError(f"--store {store_url}: no central store there (a SQLite file made by fieldcap ingest)")


@contextmanager
def _opened(store_url: str) -> Iterator[CentralStore]:
    """The central store, closed afterwards; sync errors (DatasetError too) become one-line user errors."""
    try:
        store = open_store(store_url, create=False)
    except SyncError as exc:
        raise UserError(str(exc)) from None
    from central.access_cli import explained

    try:
        with explained():
            yield store
    except SyncError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def _audit(store: CentralStore, action: str, subject: str, detail: dict[str, Any]) -> None:
    """Who exported, reported or imported what, with which filters and counts (the audit trail)."""
    from central.commands import audit, operator

    audit(store, action, subject, detail, operator())


def store_options(f: F) -> F:
    f = click.option(
        "--blobs",
        "blob_spec",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="Central blob directory (default: 'blobs' beside a SQLite store) or s3://BUCKET/PREFIX.",
    )(f)
    return store_url_option(f)


def filter_options(f: F) -> F:
    for name, help_text in reversed(
        (
            ("--device", "Only this device (repeatable)."),
            ("--site", "Only this site (repeatable)."),
            ("--session", "Only this session id or id prefix (repeatable)."),
            ("--modality", "Only this modality: visible, thermal, audio, sensor (repeatable)."),
            ("--verdict", "Only this QC verdict: pass, fail, review, none (repeatable)."),
            ("--profile", "Only this QC profile (repeatable)."),
            ("--label", "Only samples with this annotation label (repeatable)."),
            ("--weather", "Only sessions the operator tagged with this weather (meta.weather; repeatable)."),
        )
    ):
        f = click.option(name, name.removeprefix("--") + "s", multiple=True, help=help_text)(f)
    f = click.option(
        "--time-of-day",
        "times_of_day",
        multiple=True,
        type=click.Choice(["night", "morning", "afternoon", "evening"]),
        help="Only captures at this local time of day: night 22-06, morning, afternoon 12-18, evening (repeatable).",
    )(f)
    f = click.option(
        "--where",
        "where",
        multiple=True,
        metavar="FIELD<OP>NUMBER",
        help="Only captures whose environment (the sensor reading nearest in time, e.g. temperature_c,"
        " humidity_pct, light_lux) passes this test: > >= < <= = != (repeatable; all must hold).",
    )(f)
    f = click.option("--until", help="Only captures before this UTC time (ISO 8601).")(f)
    f = click.option("--since", help="Only captures at or after this UTC time (ISO 8601).")(f)
    return click.option("--include-superseded", is_flag=True, help="Keep takes and captures that a retake superseded.")(
        f
    )


def _filters(kw: dict[str, Any]) -> Any:
    from central.datasets.selection import Filters

    try:
        return Filters(
            devices=kw.pop("devices"),
            sites=kw.pop("sites"),
            sessions=kw.pop("sessions"),
            since=kw.pop("since"),
            until=kw.pop("until"),
            modalities=kw.pop("modalitys"),
            verdicts=kw.pop("verdicts"),
            profiles=kw.pop("profiles"),
            labels=kw.pop("labels"),
            where=kw.pop("where"),
            times_of_day=kw.pop("times_of_day"),
            weathers=kw.pop("weathers"),
            include_superseded=kw.pop("include_superseded"),
        )
    except SyncError as exc:
        raise UserError(str(exc)) from None


@click.command("export")
@store_options
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Export directory (new, or an earlier export of the same format and filters to resume).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="If --out holds an export of another format, filters or layout, delete that export's files"
    " (only those) and write this one; without it such an export is refused.",
)
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["jsonl", "hf", "webdataset", "labelstudio", "mcap"]),
    help="jsonl: media + samples.jsonl; hf: Parquet for Hugging Face datasets; webdataset: tar shards;"
    " labelstudio: tasks with predictions; mcap: one file per session.",
)
@filter_options
@click.option("--name", help="Name of this version (recorded in the manifest).")
@click.option(
    "--version",
    "version",
    metavar="NAME",
    help="Export the named version (fieldcap version create) exactly as frozen, instead of filtering.",
)
@click.option(
    "--shard-size",
    default=256.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Shard size in MiB (hf, webdataset).",
)
@click.option("--license", "license_", help="Dataset license (SPDX id), recorded in the manifest and card.")
@click.option("--description", help="What the dataset is for, recorded in the manifest and card.")
@click.option(
    "--media-url-prefix",
    default="/data/local-files/?d=",
    show_default=True,
    help="labelstudio: prefix of media URLs (Label Studio local files by default).",
)
@click.option(
    "--overlap",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="labelstudio: share of tasks (0..1) marked for two annotators (task 'overlap': 2), for agreement.",
)
@click.option(
    "--overlap-seed",
    default=0,
    show_default=True,
    type=int,
    help="labelstudio: seed of the --overlap draw (the same seed draws the same tasks).",
)
@click.option(
    "--derive",
    metavar="trim,normalize",
    help="Also write derived copies of speech takes under derived/ (originals kept): trim = cut to the"
    " VAD trim points in the take's verdict; normalize = loudness to --target-lufs, peaks limited.",
)
@click.option(
    "--target-lufs",
    default=-23.0,
    show_default=True,
    type=click.FloatRange(-70.0, -5.0),
    help="--derive normalize: integrated loudness (BS.1770, channels summed) of the derived takes.",
)
@click.option(
    "--peak-limit",
    "peak_dbfs",
    default=-1.0,
    show_default=True,
    type=click.FloatRange(-30.0, 0.0),
    help="--derive normalize: no sample of a derived take above this level (dBFS).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option("One JSON object: the version and its counts (no progress bar).")
def export_command(
    store_url: str,
    blob_spec: str | None,
    out: Path,
    replace: bool,
    fmt: str,
    name: str | None,
    version: str | None,
    shard_size: float,
    license_: str | None,
    description: str | None,
    media_url_prefix: str,
    overlap: float,
    overlap_seed: int,
    derive: str | None,
    target_lufs: float,
    peak_dbfs: float,
    quiet: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Export the selected samples as a versioned, reproducible, resumable dataset snapshot."""
    from central.datasets.export import export
    from central.datasets.plan import ExportOptions

    filters = _filters(kw)
    with _blob_backend(store_url, blob_spec) as blobs, _opened(store_url) as store:
        options = ExportOptions(
            fmt=fmt,
            filters=filters,
            name=name,
            shard_bytes=int(shard_size * 1024 * 1024),
            license=license_,
            description=description,
            media_url_prefix=media_url_prefix,
            overlap=overlap,
            overlap_seed=overlap_seed,
            version=version,
            derive=tuple(d.strip() for d in (derive or "").split(",") if d.strip()),
            target_lufs=target_lufs,
            peak_dbfs=peak_dbfs,
        )
        result = export(store, blobs, out, options, replace=replace, progress=not (quiet or as_json))
        m = result.manifest
        _audit(
            store,
            "export",
            str(out.resolve()),
            {
                "format": fmt,
                "filters": filters.as_dict(),
                "named_version": version,
                "version_id": result.version_id,
                "samples": m["samples"],
                "files": len(m["files"]),
                "skipped": len(m["skipped"]),
                "written": result.stats.written,
            },
        )
    if as_json:
        echo_json(
            {
                "out": str(out),
                "version_id": result.version_id,
                "samples": m["samples"],
                "files": len(m["files"]),
                "written": result.stats.written,
                "kept": result.stats.kept,
                "removed": result.stats.removed,
                "skipped": len(m["skipped"]),
                "derived": len(m["derived"]["items"]) if "derived" in m else None,
            }
        )
        return
    click.echo(
        f"{out}: version {result.version_id[:16]} ({m['samples']} samples, {len(m['files'])} files;"
        f" {result.stats.written} written, {result.stats.kept} kept, {len(m['skipped'])} skipped"
        + (f", {result.stats.removed} removed" if result.stats.removed else "")
        + ")"
    )


@click.command("report")
@store_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the card.")
@filter_options
@click.option("--name", help="Dataset name shown on the card.")
@click.option("--license", "license_", help="Dataset license (SPDX id).")
@click.option("--description", help="What the dataset is for.")
@click.option(
    "--scripts",
    "scripts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of prompt scripts (TSV/CSV/JSON) for coverage targets, by the session's script name.",
)
@click.option(
    "--near-duplicate-bits",
    default=4,
    show_default=True,
    type=click.IntRange(0, 32),
    help="dHash bits (of 64) up to which two images count as near-duplicates.",
)
@json_option("One JSON object: where the card is and its headline numbers.")
def report_command(
    store_url: str,
    blob_spec: str | None,
    out: Path,
    name: str | None,
    license_: str | None,
    description: str | None,
    scripts_dir: Path | None,
    near_duplicate_bits: int,
    as_json: bool,
    **kw: Any,
) -> None:
    """Write the dataset card: report.html, report.json and PNG plots of the quality indicators."""
    from central.datasets.report import ReportOptions, build_report

    filters = _filters(kw)
    with _blob_backend(store_url, blob_spec) as blobs, _opened(store_url) as store:
        report = build_report(
            store,
            blobs,
            out,
            ReportOptions(
                filters=filters,
                name=name,
                license=license_,
                description=description,
                scripts_dir=scripts_dir,
                near_duplicate_bits=near_duplicate_bits,
            ),
        )
        _audit(store, "report", str(out.resolve()), {"filters": filters.as_dict(), "samples": report["samples"]})
    tr = report["traceability"]
    if as_json:
        echo_json(
            {
                "html": str(out / "report.html"),
                "json": str(out / "report.json"),
                "samples": report["samples"],
                "plots": len(report["plots"]),
                "lineage_share": tr["share"],
            }
        )
        return
    click.echo(
        f"{out / 'report.html'}: {report['samples']} samples, {len(report['plots'])} plots,"
        f" full lineage {100 * tr['share']:.0f}%"
    )


@click.command("review-import")
@store_url_option
@click.option(
    "--adjudicator",
    "adjudicators",
    multiple=True,
    metavar="USER",
    help="Label Studio user (email or id) whose annotations are adjudications, preferred by later exports"
    " (repeatable).",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option("One JSON object: the import's counts.")
def review_import_command(store_url: str, adjudicators: tuple[str, ...], file: Path, as_json: bool) -> None:
    """Import every annotation of a Label Studio JSON export, each kept with its annotator and time."""
    from central.datasets.review import import_review

    with _opened(store_url) as store:
        summary = import_review(store, file, set(adjudicators))
        _audit(store, "review_import", str(file.resolve()), dataclasses.asdict(summary))
    if as_json:
        echo_json({"file": str(file), **dataclasses.asdict(summary)})
        return
    ignored = ", ".join(f"{n} {t}" for t, n in sorted(summary.ignored.items()))
    click.echo(
        f"{file}: {summary.tasks} tasks, {summary.reviewed} reviewed by {summary.annotators} annotator(s):"
        f" {summary.added} new annotation set(s), {summary.unchanged} unchanged"
        + (f" ({summary.adjudications} adjudication(s))" if summary.adjudications else "")
        + f", {summary.unreviewed} without a review"
        + (f"; ignored results: {ignored}" if ignored else "")
    )


@click.group("agreement", invoke_without_command=True)
@click.option(
    "--store",
    "store_url",
    envvar=STORE_ENV,
    help=f"sqlite:///PATH or postgresql://... (or ${STORE_ENV}; with a password prefer --store-file).",
)
@click.option(
    "--store-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the store URL (keeps a database password out of the process list).",
)
@filter_options
@click.option(
    "--threshold",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="List tasks whose disagreement (1 - weakest agreement between two annotators) is above this.",
)
@click.option("--all", "show_all", is_flag=True, help="List adjudicated tasks too.")
@json_option("One JSON object: kappas per label and annotator pair, machine vs human, the disagreements.")
@click.pass_context
def agreement_group(
    ctx: click.Context,
    /,
    store_url: str | None,
    store_file: Path | None,
    threshold: float,
    show_all: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Inter-annotator agreement, and the tasks whose annotators disagree (for adjudication)."""
    if ctx.invoked_subcommand is not None:
        return
    store_url = resolve_store_url(store_url, store_file)
    from central.datasets.consistency import consistency
    from central.datasets.selection import load_for, select, unknown_values

    filters = _filters(kw)
    with _opened(store_url) as store:
        everything = load_for(store, filters)
    unknown = unknown_values(everything, filters)
    if unknown:
        raise UserError(f"{unknown[0]}: no sample in the store has it; check the spelling")
    result = consistency(select(everything, filters), threshold)
    if not show_all:
        result["disagreements"] = [d for d in result["disagreements"] if not d["adjudicated"]]
    if as_json:
        echo_json(result)
        return
    for d in result["disagreements"]:
        worst = max(d["pairs"], key=lambda p: p["disagreement"])
        shown = ", ".join(
            f"{m} {worst[m]:.3g}"
            for m in ("labels", "box_iou", "segment_overlap", "cer", "wer")
            if worst.get(m) is not None
        )
        click.echo(
            f"{d['key']}  disagreement {d['disagreement']:.2f}  {worst['a']} vs {worst['b']}: {shown}"
            + ("  (adjudicated)" if d["adjudicated"] else "")
        )
    for label, k in result["labels"].items():
        kappa = "undefined" if k["kappa"] is None else f"{k['kappa']:.3f}"
        click.echo(f"label {label}: {k['method']} kappa {kappa} over {k['tasks']} task(s)")
    click.echo(
        f"{result['multi_annotated']} task(s) with two or more annotators, {result['adjudicated']} adjudicated;"
        f" {len(result['disagreements'])} listed above disagreement {threshold:g}"
        + ("" if not result["disagreements"] else "; settle one with: fieldcap agreement adjudicate")
    )


@agreement_group.command("adjudicate")
@store_url_option
@click.argument("key")
@click.option(
    "--use",
    required=True,
    metavar="ANNOTATOR|machine",
    help="Whose annotations become the adjudicated version: an annotator of the task, or 'machine'.",
)
@click.option("--by", "by", default="adjudicator", show_default=True, help="Who adjudicates (recorded).")
@json_option("One JSON object: what was adopted.")
def adjudicate_command(store_url: str, key: str, use: str, by: str, as_json: bool) -> None:
    """Make one annotator's (or the machine's) annotations of task KEY (DEVICE/RECORD_ID) the adjudicated
    version, which later exports prefer."""
    from central.datasets.adjudication import adjudicate

    with _opened(store_url) as store:
        done = adjudicate(store, key, use, by)
    if as_json:
        echo_json(dataclasses.asdict(done))
        return
    click.echo(f"{key}: adopted {use}'s annotations as {by}'s adjudication" + ("" if done.added else " (already so)"))
