"""User-facing errors of the agent.

Every error a person can cause (a bad config, a missing secret file, an unreadable script) is a
``FieldcapError`` whose message says what is wrong, where, and what to do; the CLI prints it
without a traceback and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class FieldcapError(Exception):
    """An error with a message meant for the operator."""


class ConfigError(FieldcapError):
    """A configuration problem, pointing at the file and the key path."""

    def __init__(
        self,
        file: str,
        key: str,
        message: str,
        *,
        line: int | None = None,
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.message = message
        self.line = line
        self.problems = problems or []  # every problem found: file, line, key, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class CatalogError(FieldcapError):
    """The local catalog cannot be opened or is inconsistent."""
