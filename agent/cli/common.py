"""What every ``fieldcap`` command shares: the user-error class, exit codes and option decorators.

Every user mistake ends in one line saying what is wrong, where, and what to do (``UserError``),
and a distinct exit status — never a traceback. This module imports only click and the standard
library, so ``fieldcap --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "EXIT_CODES_HELP",
    "EXIT_DEGRADED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "UserError",
    "config_option",
    "data_dir_option",
    "default_config",
    "echo_json",
    "json_option",
    "model_dir_option",
    "user_errors",
]

EXIT_OK = 0
EXIT_ERROR = 1  # a user error (bad config, missing file, unusable store ...)
EXIT_USAGE = 2  # a wrong command line (click's own usage errors)
EXIT_NOT_RUNNING = 3  # `fieldcap status`: the agent is not running
EXIT_DEGRADED = 4  # degraded or incomplete: status degraded, coverage incomplete, QC not complete
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "\b\nExit status:\n"
    "  0    ok\n"
    "  1    error (what is wrong is printed on one line)\n"
    "  2    usage error (wrong options or arguments)\n"
    "  3    the agent is not running (status)\n"
    "  4    degraded or incomplete (status degraded, coverage incomplete,\n"
    "       qc: a file could not be screened or an analyzer could not run)\n"
    "  130  interrupted (Ctrl-C)"
)

CONFIG_ENV = "FIELDCAP_CONFIG"
DEFAULT_CONFIG = "/etc/fieldcap/agent.toml"

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A user mistake: printed as the bare message (``FILE: key: what is wrong``), exit status 1."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), file=file or sys.stderr)


def default_config() -> Path:
    """``$FIELDCAP_CONFIG``, else the packaged location."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def config_option(*, required: bool = False, help_text: str = "Agent config file.") -> Callable[[F], F]:
    """``--config FILE`` (parameter ``config_file``), defaulting to ``$FIELDCAP_CONFIG``."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        show_envvar=True,
        required=required,
        help=help_text,
    )


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory (instead of --config).",
)


def json_option(help_text: str = "Print JSON instead of text.") -> Callable[[F], F]:
    """``--json`` (parameter ``as_json``): machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


model_dir_option = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model cache (default: $FIELDCAP_MODEL_DIR, else $XDG_CACHE_HOME/fieldcap/models, else"
    " ~/.cache/fieldcap/models).",
)


def echo_json(value: Any, *, indent: int | None = None) -> None:
    """One JSON document on stdout (paths and datetimes as strings)."""
    click.echo(json.dumps(value, default=str, ensure_ascii=False, indent=indent, sort_keys=indent is not None))


# Error classes a person can cause, by module; matched only when their module is loaded (a
# command that never imported a package cannot raise its errors).
_USER_ERRORS = {
    "agent.errors": ("FieldcapError",),
    "sync.errors": ("SyncError",),
    "models.errors": ("ModelError", "ProfileError", "MediaError"),
}


def _is_user_error(exc: BaseException) -> bool:
    for module, names in _USER_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, tuple(getattr(loaded, n) for n in names)):
            return True
    return False


@contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn the errors a person can cause into one-line ``UserError``s.

    ``FieldcapError``, ``SyncError`` and the model errors, plus ``extra``; anything else is a bug
    and keeps its traceback.
    """
    try:
        yield
    except click.ClickException:
        raise
    except Exception as exc:
        if isinstance(exc, extra) or _is_user_error(exc):
            raise UserError(str(exc)) from None
        raise
