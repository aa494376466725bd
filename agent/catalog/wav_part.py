"""Audio streamed to disk as it arrives: a WAV file growing under a hidden ``.part`` name.

A 30-minute two-channel segment is 340 MB; holding it in memory until it ends (and losing all of
it in a crash) is not an option. ``WavPart`` writes a header sized for the expected length, appends
each block as it comes (no fsync per block: the capture thread only pays for a ``write``), and on
``finish`` rewrites the header if the segment ended early, fsyncs and links the file to its final
name. Next to the part file a small JSON *sidecar* says what the audio is (stream, rate, start
time, session, take), written and fsynced before the first sample, so that start-up recovery can
salvage a part left by a crash: truncate to whole frames, rewrite the header to the real length,
and commit it like any other capture (see ``agent.catalog.recovery``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sync.files import PART_SUFFIX, WrittenFile, fsync_dir, part_name, sha256_file

HEADER_BYTES = 44
SIDECAR_SUFFIX = ".json"
BYTES_PER_SAMPLE = 2  # PCM 16-bit


def wav_header(sample_rate: int, channels: int, frames: int) -> bytes:
    """The canonical 44-byte header of a PCM 16-bit WAV file holding ``frames`` frames."""
    block_align = channels * BYTES_PER_SAMPLE
    data = frames * block_align
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16),
            b"data",
            struct.pack("<I", data),
        )
    )


@dataclass(frozen=True, slots=True)
class WavFormat:
    sample_rate: int
    channels: int

    @property
    def block_align(self) -> int:
        return self.channels * BYTES_PER_SAMPLE


def parse_wav_header(head: bytes) -> WavFormat:
    """Check that ``head`` is a header ``wav_header`` wrote; raise ValueError saying what is wrong."""
    if len(head) < HEADER_BYTES:
        raise ValueError(f"only {len(head)} bytes: shorter than a WAV header")
    if head[0:4] != b"RIFF" or head[8:16] != b"WAVEfmt " or head[36:40] != b"data":
        raise ValueError("not a PCM WAV header written by fieldcap")
    _size, fmt, channels, rate, _byte_rate, _align, bits = struct.unpack("<IHHIIHH", head[16:36])
    if fmt != 1 or bits != 16 or not 1 <= channels <= 64 or not 1000 <= rate <= 768000:
        raise ValueError(f"unexpected WAV format (format {fmt}, {bits} bits, {channels} ch, {rate} Hz)")
    return WavFormat(rate, channels)


def boot_id() -> str | None:
    """This boot's id: monotonic times in a sidecar are only meaningful within the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + SIDECAR_SUFFIX)


def part_of_sidecar(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))


def leftover_sidecars(root: Path) -> list[Path]:
    """Sidecars of streamed parts still on disk (a crash, or a finish that did not clean up)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(f".*{PART_SUFFIX}{SIDECAR_SUFFIX}") if p.is_file())


class WavPart:
    """One WAV file being streamed; ``append`` on the capture thread, ``finish`` on the writer's."""

    def __init__(
        self, final: Path, sample_rate: int, channels: int, expected_frames: int, sidecar: dict[str, Any]
    ) -> None:
        self.final = final
        self.format = WavFormat(sample_rate, channels)
        self.expected_frames = expected_frames
        self.frames = 0
        final.parent.mkdir(parents=True, exist_ok=True)
        self.part = part_name(final)
        self.sidecar = sidecar_path(self.part)
        info = {
            **sidecar,
            "final": final.name,
            "sample_rate": sample_rate,
            "channels": channels,
            "boot_id": boot_id(),
        }
        with self.sidecar.open("x", encoding="utf-8") as fh:
            json.dump(info, fh, default=str, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        self._fd: int | None = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        header = wav_header(sample_rate, channels, expected_frames)
        self._write(header)
        self._digest = hashlib.sha256(header)
        fsync_dir(final.parent)  # the part and its sidecar survive a power cut from here on

    def _write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def append(self, block: np.ndarray[Any, Any]) -> None:
        """Append ``(frames, channels)`` int16 samples (written, not yet fsynced)."""
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[1] != self.format.channels:
            raise ValueError(f"{self.final.name}: block has {block.shape[1]} channels, expected {self.format.channels}")
        data = np.ascontiguousarray(block, dtype="<i2").tobytes()
        self._write(data)
        self._digest.update(data)
        self.frames += block.shape[0]

    def finish(self) -> WrittenFile:
        """Make the file final: real length in the header, fsync, link to the final name, fsync the dir."""
        assert self._fd is not None, "finish() called twice"
        fd, self._fd = self._fd, None
        try:
            if self.frames != self.expected_frames:
                os.pwrite(fd, wav_header(self.format.sample_rate, self.format.channels, self.frames), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.frames != self.expected_frames:
            sha, size = sha256_file(self.part)
        else:
            sha, size = self._digest.hexdigest(), HEADER_BYTES + self.frames * self.format.block_align
        os.link(self.part, self.final)  # fails rather than overwrite
        fsync_dir(self.final.parent)
        return WrittenFile(self.final, sha, size)

    def cleanup(self) -> None:
        """Remove the part name and the sidecar once the catalog row is committed."""
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Close without finishing (leaves the part for recovery to salvage)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def salvage_part(part: Path) -> tuple[WavFormat, int]:
    """Make a crashed part a valid WAV of its whole frames, in place; return its format and frames.

    A torn last frame is cut off; the header is rewritten to the real length and fsynced.
    """
    with part.open("r+b") as fh:
        fmt = parse_wav_header(fh.read(HEADER_BYTES))
        size = os.fstat(fh.fileno()).st_size
        frames = (size - HEADER_BYTES) // fmt.block_align
        fh.truncate(HEADER_BYTES + frames * fmt.block_align)
        fh.seek(0)
        fh.write(wav_header(fmt.sample_rate, fmt.channels, frames))
        fh.flush()
        os.fsync(fh.fileno())
    return fmt, frames
