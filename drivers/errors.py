"""The driver exception tree.

Callers catch ``DriverError`` to handle every driver failure; the subclasses say what to do next:

- ``DriverImportError``: the driver's module (or a library under it) cannot be imported: fix the
  installation (the message names the package).
- ``DriverOpenError``: the device could not be opened: check the device, its path/URL, permissions.
- ``DriverIOError``: the device failed while reading and reconnecting did not help.
- ``DriverEndOfStream``: a finite source (file, image sequence) has no more samples.
- ``DriverTimeout``: nothing arrived within the read timeout; also a ``TimeoutError`` so generic
  code that waits on things can treat it like any other timeout.
"""

from __future__ import annotations

__all__ = [
    "DriverEndOfStream",
    "DriverError",
    "DriverIOError",
    "DriverImportError",
    "DriverOpenError",
    "DriverTimeout",
]


class DriverError(Exception):
    """Base class of every error raised by a driver."""


class DriverImportError(DriverError, ImportError):
    """The module implementing a driver, or a library it needs, could not be imported."""


class DriverOpenError(DriverError):
    """The device could not be opened (missing, busy, refused, unsupported settings)."""


class DriverIOError(DriverError):
    """Reading failed and the reconnect budget (``max_reconnects``) is spent."""


class DriverTimeout(DriverError, TimeoutError):
    """Nothing arrived within the read timeout."""


class DriverEndOfStream(DriverError):
    """A finite source (video file, image sequence) is exhausted; reading again raises again."""
