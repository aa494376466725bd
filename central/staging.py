"""Staged blob bytes: one sparse file per (device, blob) being uploaded, in a local staging directory.

Nothing is reserved up front: a device's announced size costs no disk until its bytes arrive (an
announcement of 64 GiB is just a row, bounded by the device's quota in ``central.intake``). Chunks
are written with ``pwrite`` at their offset, so order and chunk size do not matter, and
the central store only records which ranges are on disk (a row is committed after the file was
fdatasynced). Finishing a blob costs one read to verify the sha256 and then the backend's publish
(``central.blobs.BlobBackend``): a hard link into the blob tree, or an upload to S3 that is read
back and verified. Ingesters that share the staging directory (the blob tree's ``staging/``, on a
local disk or NFS) can continue any blob; with S3 each ingester stages locally, so a device whose
upload moves to another ingester resends what that one lacks (its receipts say which ranges).

Concurrency between ingesters: the finisher first renames the staging file to a private name, so
writers that open it later find nothing, then takes an exclusive ``flock``, which waits for any
writer that opened it earlier and is mid-``pwrite`` (writers hold a shared lock and re-check that
the path still names their inode). The hash is therefore taken over bytes that no one can change
afterwards, and a late duplicate chunk can never alter a verified blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

from central.blobs import FILE_MODE, BlobBackend, BlobMismatch, hash_fd, private_dirs, staging_path
from sync.files import fsync_dir


class StagingLost(Exception):
    """The staging file of a blob is gone (and the blob is not stored): the upload must restart."""


class Staging:
    """Writes and finishes staged blobs; fds opened in a batch are synced and closed by ``sync()``."""

    def __init__(self, backend: BlobBackend, staging_dir: Path) -> None:
        self.backend = backend
        self.staging_dir = staging_dir
        private_dirs(staging_dir, Path(staging_dir.absolute().anchor))
        self._fds: dict[tuple[str, str], tuple[int, Path]] = {}

    def create(self, device: str, sha256: str) -> bool:
        """Make the (empty) staging file if there is none; True if it was created (nothing staged yet)."""
        path = self.path(device, sha256)
        private_dirs(path.parent, self.staging_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return False
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        fsync_dir(path.parent)
        return True

    def path(self, device: str, sha256: str) -> Path:
        return staging_path(self.staging_dir, device, sha256)

    def write(self, device: str, sha256: str, offset: int, data: bytes) -> bool:
        """Write a chunk; False if the upload has no staging file (finished, dropped or never created)."""
        key = (device, sha256)
        if key in self._fds:
            fd, path = self._fds[key]
        else:
            path = self.path(device, sha256)
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                return False
            self._fds[key] = (fd, path)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            try:
                current = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:
                self._close(key)
                return False
            view = memoryview(data)
            pos = offset
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
        finally:
            if key in self._fds:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    def sync(self) -> None:
        """Make every chunk written since the last call durable (before its rows are committed)."""
        try:
            for fd, _path in self._fds.values():
                os.fdatasync(fd)
        finally:
            self.release()

    def release(self) -> None:
        """Close the files of this batch without syncing (the batch was rolled back)."""
        for key in list(self._fds):
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        entry = self._fds.pop(key, None)
        if entry is not None:
            os.close(entry[0])

    def finish(self, device: str, sha256: str, size: int, *, relink_ok: bool = True) -> None:
        """Verify the staged bytes and publish them under the final name.

        BlobMismatch if they do not hash to ``sha256`` (the staging file is then gone);
        StagingLost if there is no staging file and (with ``relink_ok``) no verified final file.
        ``relink_ok`` is for a crash between linking and committing; it must be False when the blob
        is already stored from another device, or a device would be credited with bytes it never sent.
        """
        self._close((device, sha256))
        staging = self.path(device, sha256)
        private = staging.with_name(f".{sha256}.{os.getpid()}.{threading.get_native_id()}.verify")
        try:
            staging.rename(private)
        except FileNotFoundError:
            # Linked by an earlier attempt whose transaction did not commit, or by another ingester.
            if relink_ok and self.backend.verify(sha256, size):
                return
            raise StagingLost(f"blob {sha256}: staged bytes are gone") from None
        fd = os.open(private, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            found = hash_fd(fd, size)
            if found != sha256:
                raise BlobMismatch(f"sha256 mismatch: the {size} bytes received hash to {found}")
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            os.fsync(fd)
            try:
                self.backend.publish(sha256, size, private)
            except OSError:
                # The store failed (an outage): keep the verified bytes staged for the retry.
                with contextlib.suppress(OSError):
                    os.link(private, staging)
                raise
        finally:
            os.close(fd)
            private.unlink(missing_ok=True)

    def drop(self, device: str, sha256: str) -> None:
        """Remove a staging file (after a mismatch, an expiry, or a leftover of a blob already stored)."""
        self._close((device, sha256))
        self.path(device, sha256).unlink(missing_ok=True)
