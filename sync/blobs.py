"""The central content-addressed blob tree: ``ROOT/sha256/ab/cd/<hex>``.

A name is derived only from a validated hex digest, so no message can make the ingester write
outside the tree. A blob is assembled from staged chunks into a temporary file, its sha256 is
checked, and only then is it linked under its final name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from sync.durable import fsync_dir, part_name
from sync.topics import SHA256_RE


class BlobMismatch(ValueError):
    """The assembled bytes do not hash to the announced sha256 (or have the wrong size)."""


class BlobTree:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str, size: int) -> bool:
        path = self.path_for(sha256)
        return path.is_file() and path.stat().st_size == size

    def assemble(self, sha256: str, size: int, chunks: Iterable[tuple[int, bytes]]) -> Path:
        """Write (offset, bytes) pieces — possibly overlapping — verify, and publish atomically."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = part_name(final)
        digest = hashlib.sha256()
        pos = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            for offset, data in chunks:
                if offset > pos:
                    raise BlobMismatch(f"gap at byte {pos}")
                view = memoryview(data)[pos - offset :]
                view = view[: max(0, size - pos)]
                if view:
                    digest.update(view)
                    os.write(fd, view)
                    pos += len(view)
            if pos != size:
                raise BlobMismatch(f"size {pos} != announced {size}")
            if digest.hexdigest() != sha256:
                raise BlobMismatch(f"sha256 mismatch: content hashes to {digest.hexdigest()}")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass  # another ingester finished the same blob first: same bytes by construction
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return final
