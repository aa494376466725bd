"""The sync exception tree: what an operator must fix, as opposed to what the protocol recovers from.

``SyncError`` — a configuration or environment problem (bad broker URL, refused credentials,
unreachable store); commands print its text and exit non-zero, daemons log it and retry.
``StoreError(SyncError)`` — the central store cannot be opened or used.
"""

from __future__ import annotations


class SyncError(Exception):
    """A sync problem the operator must fix (bad broker URL, refused credentials)."""


class StoreError(SyncError):
    """The central store cannot be used (wrong URL, unreachable server, other schema)."""
