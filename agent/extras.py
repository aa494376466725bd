"""Optional dependencies, imported through one door.

``pip install fieldcap`` carries what a device needs. The central ingester, its PostgreSQL store
and the dataset tools need more (pyarrow, matplotlib, mcap, psycopg): ``pip install
'fieldcap[central]'``. Every import of such a module goes through :func:`require`, so a missing
extra ends in one line that says what to install — never a traceback. :class:`MissingExtra` is a
``click.ClickException`` (the CLI prints the line and exits 1), a ``FieldcapError`` (the daemons'
error boundaries treat it as an operator problem) and an ``ImportError`` (code that falls back on
a missing module keeps working).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import click

from agent.errors import FieldcapError

# The optional dependencies, by the import name of their top-level module, and the extra that
# installs each. tests/test_extras.py checks this against pyproject.toml.
OPTIONAL: dict[str, str] = {
    "pyarrow": "central",
    "matplotlib": "central",
    "mcap": "mcap",  # a device's own `fieldcap export-mcap`; 'central' includes it
    "psycopg": "central",
    "boto3": "central",
}


class MissingExtra(click.ClickException, FieldcapError, ImportError):
    """An optional module is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, extra: str, feature: str | None = None) -> None:
        self.module = module
        self.extra = extra
        what = feature or module
        super().__init__(
            f"{what} needs the '{extra}' extra: pip install 'fieldcap[{extra}]' ({module} is not installed)"
        )

    def __str__(self) -> str:
        return self.message


def require(name: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import module ``name`` (``"pyarrow.parquet"`` works too) or raise :class:`MissingExtra`.

    ``extra`` defaults to the one :data:`OPTIONAL` lists for the top-level package; ``feature``
    names what needs it in the message ("the dataset card's plots"), default the module itself.
    """
    top = name.split(".", 1)[0]
    extra = extra or OPTIONAL.get(top, "central")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtra(top, extra, feature) from exc


def available(name: str) -> bool:
    """Whether ``name`` can be imported (without raising)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
