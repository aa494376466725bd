"""The sync exception tree: what an operator must fix, as opposed to what the protocol recovers from.

``SyncError`` — a configuration or environment problem (bad broker URL, refused credentials,
unreachable store); commands print its text and exit non-zero, daemons log it and retry.
``central.errors.StoreError`` derives from it for the central store.
"""

from __future__ import annotations


class SyncError(Exception):
    """A sync problem the operator must fix (bad broker URL, refused credentials)."""
