"""The central content-addressed blob tree: ``ROOT/sha256/ab/cd/<hex>``, uploads in ``ROOT/staging/<device>/``.

A name is derived only from a validated hex digest, so no message can make the ingester write
outside the tree. A file appears under its final name only after its bytes were verified against
that digest and fsynced, so every final file is trustworthy by construction. Directories are made
``rwxr-x---`` and files ``rw-r-----``: media from the field is nobody else's business on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

from sync.files import sha256_fd
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


class BlobTree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_dir = root / "staging"
        private_dirs(self.staging_dir, root.parent)

    def path_for(self, sha256: str) -> Path:
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def staging_path(self, device: str, sha256: str) -> Path:
        """Where one device's upload of a blob is staged (devices never share staging files)."""
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        if not DEVICE_RE.fullmatch(device):
            raise ValueError(f"not a device id: {device[:80]!r}")
        return self.staging_dir / device / sha256

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
