"""The one error of dataset export, review import and reports: a mistake the user can fix."""

from __future__ import annotations

from sync.errors import SyncError


class DatasetError(SyncError):
    """Bad input (a filter, an output directory, a Label Studio file): the text says what and what to do."""
