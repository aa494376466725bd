"""Errors of the central side that an operator must fix."""

from __future__ import annotations

from sync.errors import SyncError


class StoreError(SyncError):
    """The central store cannot be used (wrong URL, unreachable server, other schema)."""


class CentralError(SyncError):
    """A central-side setting that cannot work (e.g. a metrics address), named with its fix."""
