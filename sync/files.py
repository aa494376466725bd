"""Crash-safe files, shared by the device's media writer and the central blob store.

A file appears under its final name only once its bytes are on disk: it is written to a
hidden temporary name in the same directory, fsynced, renamed, and the directory is fsynced so the
rename itself survives a power cut. The sha256 is computed while writing, so the hash that goes into
the catalog is the hash of the bytes that were written. A crash leaves at most a ``.*.part`` file,
which start-up recovery finds and records.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PART_SUFFIX = ".part"
READ_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class WrittenFile:
    path: Path
    sha256: str
    size: int


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_name(final: Path) -> Path:
    """The temporary name a file has while it is being written."""
    return final.with_name(f".{final.name}.{os.getpid()}{PART_SUFFIX}")


def write_atomic(final: Path, chunks: bytes | Iterable[bytes]) -> WrittenFile:
    """Write ``chunks`` to ``final`` atomically and durably; refuse to replace an existing file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_name(final)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for chunk in [chunks] if isinstance(chunks, bytes | bytearray | memoryview) else chunks:
            view = memoryview(chunk)
            digest.update(view)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                size += written
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        # link + unlink instead of rename: link fails if the final name exists, so nothing is overwritten.
        os.link(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return WrittenFile(final, digest.hexdigest(), size)


def sha256_fd(fd: int, limit: int | None = None) -> tuple[str, int]:
    """sha256 and length of an open file's bytes from offset 0: up to ``limit`` bytes, or to its end.

    Fewer than ``limit`` bytes come back when the file is shorter; the caller decides what that means.
    """
    digest = hashlib.sha256()
    view = memoryview(bytearray(READ_BLOCK))
    pos = 0
    while limit is None or pos < limit:
        n = os.preadv(fd, [view if limit is None else view[: min(READ_BLOCK, limit - pos)]], pos)
        if n == 0:
            break
        digest.update(view[:n])
        pos += n
    return digest.hexdigest(), pos


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a whole file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)
