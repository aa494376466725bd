"""``--format webdataset``: POSIX tar shards of ``KEY.EXT`` media + ``KEY.json`` metadata.

Keys are ``DEVICE/RECORD_ID`` (a record id has no dot, so WebDataset's "key is everything before
the first dot of the file name" rule holds even for device names with dots). Shards close when the
next sample would push them past ``--shard-size`` bytes. A thermal frame is stored as ``KEY.npy``
(its uint16 pixels, exactly) and ``KEY.preview.png`` (an 8-bit false-colour picture of it, see
``central.datasets.thermal``) instead of the 16-bit PNG that most decoders would squash to 8 bits.
Tar headers are fixed (owner 0:0, no user or group names, mode 0644, mtime = the capture's own
UTC second), so shards are byte-reproducible.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from central.datasets.plan import ExportContext, sample_row
from central.datasets.samples import Sample, extension
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.thermal import PREVIEW_EXT, RENDERING, is_thermal_frame, npy_bytes, preview_png, read_frame
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


def _row(s: Sample) -> dict[str, Any]:
    if is_thermal_frame(s):
        row = sample_row(s, f"{s.key}.npy")
        row["preview"] = f"{s.key}.{PREVIEW_EXT}"
        return row
    return sample_row(s, f"{s.key}.{extension(s.blob.media_type)}" if s.blob else None)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    tar.addfile(_info(name, len(data), mtime), io.BytesIO(data))


def _shard_spec(ctx: ExportContext, path: str, group: list[Sample]) -> FileSpec:
    members = [(s, canonical_json(_row(s)).encode()) for s in group]

    def write(dest: Path) -> None:
        with dest.open("wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for s, meta in members:
                mtime = (s.t_start_utc_ns or 0) // 1_000_000_000
                if s.blob is not None and is_thermal_frame(s):
                    frame = read_frame(ctx.blobs.local_path(s.blob.sha256), s.key)
                    _add(tar, f"{s.key}.npy", npy_bytes(frame), mtime)
                    _add(tar, f"{s.key}.{PREVIEW_EXT}", preview_png(frame), mtime)
                elif s.blob is not None:
                    with ctx.blobs.local_path(s.blob.sha256).open("rb") as src:
                        tar.addfile(_info(f"{s.key}.{extension(s.blob.media_type)}", s.blob.size, mtime), src)
                _add(tar, f"{s.key}.json", meta, mtime)

    size = sum(len(m) + (s.blob.size if s.blob else 0) for s, m in members)
    inputs = [m.decode() for _, m in members]
    return FileSpec(path, fingerprint("wds", path, RENDERING, inputs), write, size)


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    groups = shard_groups(samples, ctx.options.shard_bytes)
    return [_shard_spec(ctx, f"shards/data-{i:06d}.tar", g) for i, g in enumerate(groups)]
