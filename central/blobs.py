"""Where verified blobs live: the ``BlobBackend`` protocol and its local directory, ``BlobTree``.

The tree is ``ROOT/sha256/ab/cd/<hex>``, with uploads staged in ``ROOT/staging/<device>/`` (the
embedded default). ``central.s3blobs`` keeps the same names in an S3 bucket instead; staging then
stays in a local directory of each ingester (``central.staging``).

A name is derived only from a validated hex digest, so no message can make the ingester write
outside the tree. A file appears under its final name only after its bytes were verified against
that digest and fsynced, so every final file is trustworthy by construction. Directories are made
``rwxr-x---`` and files ``rw-r-----``: media from the field is nobody else's business on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Protocol

from sync.files import fsync_dir, sha256_fd
from sync.topics import DEVICE_RE, SHA256_RE

DIR_MODE = 0o750
FILE_MODE = 0o640


class BlobMismatch(ValueError):
    """The bytes do not hash to the announced sha256 (or have the wrong size)."""


def hash_fd(fd: int, size: int) -> str:
    """sha256 of the first ``size`` bytes of an open file; BlobMismatch if it is shorter."""
    digest, read = sha256_fd(fd, size)
    if read < size:
        raise BlobMismatch(f"file ends at byte {read}, expected {size}")
    return digest


def blob_key(sha256: str) -> str:
    """The relative name of a blob, ``sha256/ab/cd/<hex>``; ValueError unless ``sha256`` is a hex digest."""
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def staging_path(staging_dir: Path, device: str, sha256: str) -> Path:
    """Where one device's upload of a blob is staged (devices never share staging files)."""
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    if not DEVICE_RE.fullmatch(device):
        raise ValueError(f"not a device id: {device[:80]!r}")
    return staging_dir / device / sha256


class BlobBackend(Protocol):
    """Content-addressed storage of verified blobs, as the intake, exports and reports use it."""

    def describe(self) -> str:
        """Where the blobs are, for messages (no secrets)."""
        ...

    def default_staging(self) -> Path | None:
        """The staging directory that goes with this backend, if it has a local one."""
        ...

    def exists(self, sha256: str, size: int) -> bool:
        """True if the blob is stored with this size (cheap: no hashing)."""
        ...

    def verify(self, sha256: str, size: int) -> bool:
        """True if the stored blob has this size and hashes to its name."""
        ...

    def publish(self, sha256: str, size: int, source: Path) -> None:
        """Store the verified, synced file ``source`` under its name; afterwards ``verify`` holds.

        Atomic: readers see no blob or the whole one. Storing a blob that exists is harmless.
        """
        ...

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the blob's bytes to the local file ``dest``."""
        ...

    def local_path(self, sha256: str) -> Path:
        """A local file with the blob's bytes, for readers that need a path; read it soon.

        The file itself for a directory; a downloaded copy in a bounded cache for object stores.
        """
        ...

    def delete(self, sha256: str) -> None:
        """Remove the blob (a withdrawal); a blob that is already gone is no error."""
        ...

    def close(self) -> None:
        """Release what the backend holds (connections, downloaded copies)."""
        ...


class BlobTree:
    """The blob directory on a local (or shared NFS) file system: the embedded default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_dir = root / "staging"
        private_dirs(self.staging_dir, Path(root.absolute().anchor))

    def describe(self) -> str:
        return str(self.root)

    def default_staging(self) -> Path:
        return self.staging_dir

    def path_for(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def staging_path(self, device: str, sha256: str) -> Path:
        """Where one device's upload of a blob is staged (devices never share staging files)."""
        return staging_path(self.staging_dir, device, sha256)

    def publish(self, sha256: str, size: int, source: Path) -> None:  # noqa: ARG002 (the file was verified)
        # A hard link: the bytes are written once; the final name appears complete or not at all.
        final = self.path_for(sha256)
        private_dirs(final.parent, self.root)
        with contextlib.suppress(FileExistsError):  # another ingester finished first: same verified bytes
            os.link(source, final)
        fsync_dir(final.parent)

    def copy_to(self, sha256: str, dest: Path) -> None:
        shutil.copyfile(self.path_for(sha256), dest)

    def local_path(self, sha256: str) -> Path:
        return self.path_for(sha256)

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def close(self) -> None:
        return None

    def exists(self, sha256: str, size: int) -> bool:
        path = self.path_for(sha256)
        return path.is_file() and path.stat().st_size == size

    def verify(self, sha256: str, size: int) -> bool:
        """True if the final file exists and hashes to its name."""
        try:
            fd = os.open(self.path_for(sha256), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            return os.fstat(fd).st_size == size and hash_fd(fd, size) == sha256
        except BlobMismatch:
            return False
        finally:
            os.close(fd)


def open_blobs(spec: str | Path) -> BlobBackend:
    """``s3://BUCKET/PREFIX`` (``central.s3blobs``) or a local blob directory."""
    if str(spec).startswith("s3://"):
        from central.s3blobs import S3Blobs

        return S3Blobs(str(spec))
    return BlobTree(Path(spec))


def private_dirs(path: Path, stop: Path) -> None:
    """``mkdir -p`` with mode 0750 for every directory it creates below ``stop``, whatever the umask."""
    missing = []
    p = path
    while not p.exists() and p not in (stop, p.parent):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        d.chmod(DIR_MODE)
