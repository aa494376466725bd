"""Where a central command finds its store URL, so a PostgreSQL password need not be in argv.

A URL on the command line is visible to every local user in ``/proc/PID/cmdline`` and ``ps``.
In order: ``--store URL``, ``$FIELDCAP_STORE``, ``--store-file FILE`` (the URL is the file's first
line), then the systemd credential ``$CREDENTIALS_DIRECTORY/store-url``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
CREDENTIAL = "store-url"
ENV = "FIELDCAP_STORE"


def resolve_store_url(store_url: str | None, store_file: Path | None) -> str:
    """The store URL from the option/environment, a file or the credentials directory; UsageError if none."""
    if store_url:
        return store_url
    if store_file is not None:
        return _read(store_file, "--store-file")
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL).is_file():
        return _read(Path(creds) / CREDENTIAL, f"$CREDENTIALS_DIRECTORY/{CREDENTIAL}")
    raise click.UsageError(
        f"no central store given: use --store URL, ${ENV}, --store-file FILE (keeps a password out of the "
        f"process list) or a systemd credential named {CREDENTIAL}"
    )


def _read(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"{what} {path}: cannot read the store URL: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.UsageError(f"{what} {path}: not UTF-8 text; it must hold the store URL") from None
    url = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not url:
        raise click.UsageError(
            f"{what} {path}: the file is empty; write the store URL (sqlite:///... or postgresql://...)"
        )
    return url


def store_url_option(f: F) -> F:
    """``--store`` / ``$FIELDCAP_STORE`` / ``--store-file``, handed to the command as ``store_url``."""

    @functools.wraps(f)
    def wrapper(*args: Any, store_url: str | None, store_file: Path | None, **kwargs: Any) -> Any:
        return f(*args, store_url=resolve_store_url(store_url, store_file), **kwargs)

    opts = (
        click.option(
            "--store-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File holding the store URL (keeps a database password out of the process list).",
        ),
        click.option(
            "--store",
            "store_url",
            envvar=ENV,
            help=f"sqlite:///PATH or postgresql://... (or ${ENV}; with a password prefer --store-file or "
            f"${ENV}: the command line is visible to other users).",
        ),
    )
    out: Any = wrapper
    for opt in opts:
        out = opt(out)
    return out  # type: ignore[no-any-return]
