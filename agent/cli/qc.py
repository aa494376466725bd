"""``fieldcap qc`` and ``fieldcap models fetch|list|verify``.

``qc`` screens files with the analyzers the daemon uses; with ``--config`` (or
``$FIELDCAP_CONFIG``) the site's own ``[qc]`` settings and profiles apply, otherwise the built-in
ones. It exits 4 when a file could not be screened or an analyzer could not run (a model missing
from the cache), unless ``--allow-missing-models`` accepts the latter.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from agent.cli.common import (
    EXIT_DEGRADED,
    EXIT_ERROR,
    UserError,
    config_option,
    echo_json,
    json_option,
    model_dir_option,
    user_errors,
)

if TYPE_CHECKING:
    from models.settings import QcSettings

_PROVIDERS = click.Choice(["auto", "cpu", "cuda", "openvino"])
_SUMMARY = {
    "audio": ("duration_s", "peak_dbfs", "snr_db", "loudness_lufs", "speech_s"),
    "visible": ("width", "height", "blur", "mean_luma"),
    "thermal": ("min_c", "max_c", "flat", "dead_pixel_ratio"),
}
_COLOURS = {"pass": "green", "review": "yellow", "fail": "red"}


def _settings(ctx: click.Context, config_file: pathlib.Path | None) -> QcSettings:
    """The ``[qc]`` settings of ``--config``, else of the root context's object, else the built-ins."""
    from models.settings import QcSettings

    if config_file is not None:
        from agent.config import load_config

        with user_errors():
            return load_config(config_file).qc
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
@config_option()
@json_option("One JSON object per file per line.")
@model_dir_option
@click.option(
    "--provider",
    type=_PROVIDERS,
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider.",
)
@click.option(
    "--allow-missing-models",
    is_flag=True,
    help="Exit 0 even when an analyzer could not run because its model is missing.",
)
@click.pass_context
def qc_command(
    ctx: click.Context,
    *,
    files: Sequence[pathlib.Path],
    profile: str | None,
    config_file: pathlib.Path | None,
    as_json: bool,
    model_dir: pathlib.Path | None,
    provider: str,
    allow_missing_models: bool,
) -> None:
    """Screen WAV/FLAC takes, JPEG/PNG photos and 16-bit PNG thermal frames.

    With --config (or $FIELDCAP_CONFIG) the site's [qc] profiles and model settings apply. Exit
    status 4 when any file could not be screened or an analyzer could not run (its model is
    missing; see `fieldcap models fetch`), else 0 (whatever the verdicts).
    """
    from models.errors import MediaError, ModelError, ProfileError
    from models.files import screen_file
    from models.screener import Screener

    settings = _settings(ctx, config_file)
    if profile is not None and profile not in settings.profiles:
        known = ", ".join(sorted(settings.profiles))
        raise click.UsageError(f"unknown profile {profile!r} (known: {known})")
    with user_errors():
        screener = Screener(settings, model_dir=model_dir, provider=provider)
    rows: list[dict[str, Any]] = []
    for file in files:
        row: dict[str, Any] = {"file": str(file)}
        screener.not_run.clear()
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
        if screener.not_run:
            row["not_run"] = dict(screener.not_run)
        rows.append(row)
        if as_json:
            echo_json(row)
    if not as_json:
        _print_table(rows)
    missing = sorted({name for r in rows for name in r.get("not_run", {})})
    if missing and not as_json:
        click.echo(
            f"not run (model missing): {', '.join(missing)}; fetch with `fieldcap models fetch`"
            + ("" if allow_missing_models else " (exit status 4)"),
            err=True,
        )
    incomplete = any("error" in r for r in rows) or (bool(missing) and not allow_missing_models)
    ctx.exit(EXIT_DEGRADED if incomplete else 0)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

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


def _status_json(s: Any) -> dict[str, Any]:
    doc = {"name": s.name, "version": s.version, "license": s.license, "state": s.state, "path": str(s.path)}
    if s.detail:
        doc["detail"] = s.detail
    return doc


@models_group.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even when the file verifies.")
@model_dir_option
@json_option("One JSON object per model per line.")
def fetch_command(names: Sequence[str], force: bool, model_dir: pathlib.Path | None, as_json: bool) -> None:
    """Download NAMES (default: all) from their pinned wheels and verify their sha256."""
    from models import registry

    with user_errors():
        try:
            statuses = registry.fetch(names or None, model_dir, force=force)
        except OSError as exc:
            raise UserError(f"cannot write the model cache: {exc}") from None
    for status in statuses:
        if as_json:
            echo_json(_status_json(status))
        else:
            click.echo(f"{status.name:<14} {status.version:<20} {status.state:<8} {status.path}")


@models_group.command("list")
@json_option("One JSON object per model per line.")
@model_dir_option
def list_command(as_json: bool, model_dir: pathlib.Path | None) -> None:
    """Known models, their licences and whether they are in the cache."""
    from models import registry

    with user_errors():
        statuses = registry.list_models(model_dir)
    for s in statuses:
        if as_json:
            echo_json(_status_json(s))
        else:
            click.echo(f"{s.name:<14} {s.version:<20} {s.license:<10} {s.state:<8} {s.path}")


@models_group.command("verify")
@click.argument("names", nargs=-1)
@model_dir_option
@json_option("One JSON object per model per line.")
def verify_command(names: Sequence[str], model_dir: pathlib.Path | None, as_json: bool) -> None:
    """Check cached model files against their pinned sha256; exit 1 if any is missing or altered."""
    from models import registry

    with user_errors():
        statuses = registry.verify(names or None, model_dir)
    bad = 0
    for s in statuses:
        if as_json:
            echo_json(_status_json(s))
        else:
            note = f"  ({s.detail})" if s.detail else ""
            click.echo(f"{s.name:<14} {s.state:<8} {s.path}{note}")
        bad += s.state != "ok"
    if bad:
        if as_json:
            raise SystemExit(EXIT_ERROR)
        raise UserError(f"{bad} model(s) missing or altered")
