"""``--format webdataset``: POSIX tar shards of ``KEY.EXT`` media + ``KEY.json`` metadata.

Keys are ``DEVICE/RECORD_ID`` (a record id has no dot, so WebDataset's "key is everything before
the first dot of the file name" rule holds even for device names with dots). Shards close when the
next sample would push them past ``--shard-size`` bytes. Tar headers are fixed (owner 0:0, no user
or group names, mode 0644, mtime = the capture's own UTC second), so shards are byte-reproducible.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

from central.datasets.plan import ExportContext, sample_row
from central.datasets.samples import Sample, extension
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.versions import canonical_json

JSON_OVERHEAD = 4096  # rough tar + metadata bytes per sample, for shard sizing


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def shard_groups(samples: Sequence[Sample], shard_bytes: int) -> list[list[Sample]]:
    """Samples cut into consecutive groups of at most ``shard_bytes`` (one sample may exceed it alone)."""
    groups: list[list[Sample]] = [[]]
    size = 0
    for s in samples:
        need = (s.blob.size if s.blob else 0) + JSON_OVERHEAD
        if groups[-1] and size + need > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(s)
        size += need
    return groups


def _shard_spec(ctx: ExportContext, path: str, group: list[Sample]) -> FileSpec:
    members: list[tuple[Sample, str | None, bytes]] = []
    for s in group:
        media = f"{s.key}.{extension(s.blob.media_type)}" if s.blob else None
        members.append((s, media, canonical_json(sample_row(s, media)).encode()))

    def write(dest: Path) -> None:
        with dest.open("wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for s, media, meta in members:
                mtime = (s.t_start_utc_ns or 0) // 1_000_000_000
                if media is not None and s.blob is not None:
                    with ctx.blobs.path_for(s.blob.sha256).open("rb") as src:
                        tar.addfile(_info(media, s.blob.size, mtime), src)
                tar.addfile(_info(f"{s.key}.json", len(meta), mtime), io.BytesIO(meta))

    size = sum(len(m) + (s.blob.size if s.blob else 0) for s, _, m in members)
    return FileSpec(path, fingerprint("wds", path, [m.decode() for _, _, m in members]), write, size)


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    groups = shard_groups(samples, ctx.options.shard_bytes)
    return [_shard_spec(ctx, f"shards/data-{i:06d}.tar", g) for i, g in enumerate(groups)]
