"""Salvage of streamed audio after a crash: real part files, real catalog, no process needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from agent.catalog.db import Catalog
from agent.catalog.integrity import check_integrity
from agent.catalog.recovery import recover, recover_report
from agent.catalog.wav_part import WavPart


def _part(data_dir: Path, name: str, frames: int, expected: int) -> WavPart:
    final = data_dir / "media" / "mic" / "20260101" / name
    part = WavPart(
        final,
        8000,
        2,
        expected,
        {
            "stream": "mic",
            "kind": "segment",
            "t_start_mono_ns": 10,
            "t_start_utc_ns": 20,
            "seq_first": 3,
            "sample_index_first": 0,
        },
    )
    block = (np.arange(frames * 2).reshape(frames, 2) % 1000).astype(np.int16)
    part.append(block)
    part.abandon()  # the process "died": no finish, no header fix, no row
    return part


def test_an_interrupted_segment_is_salvaged_with_its_real_length(tmp_path: Path) -> None:
    part = _part(tmp_path, "a.wav", 1000, 8000)
    with part.part.open("ab") as fh:
        fh.write(b"\x01\x02\x03")  # a torn last frame
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        report = recover_report(cat, tmp_path)
        assert (report.salvaged, report.unsalvageable) == (1, 0)
        row = cat.conn.execute("SELECT * FROM captures").fetchone()
        meta = json.loads(row["meta_json"])
        assert meta["salvaged"]["frames"] == 1000 and meta["salvaged"]["same_boot"] is True
        audio, rate = sf.read(str(tmp_path / row["path"]), dtype="int16", always_2d=True)
        assert rate == 8000 and audio.shape == (1000, 2) and audio[999, 1] == 1999 % 1000
        event = cat.conn.execute("SELECT kind, message FROM events").fetchone()
        assert event["kind"] == "salvage" and "salvaged" in event["message"]
        assert check_integrity(cat, tmp_path).ok
        assert recover(cat, tmp_path) == {"partial": 0, "orphan": 0, "missing": 0}  # idempotent


def test_unsalvageable_and_empty_parts_become_loss_events(tmp_path: Path) -> None:
    bad = _part(tmp_path, "bad.wav", 10, 8000)
    with bad.part.open("r+b") as fh:
        fh.write(b"JUNK")  # header destroyed
    empty = _part(tmp_path, "empty.wav", 0, 8000)
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        report = recover_report(cat, tmp_path)
        assert (report.salvaged, report.unsalvageable) == (0, 2)
        messages = [r[0] for r in cat.conn.execute("SELECT message FROM events WHERE kind = 'loss'")]
        assert any("not a PCM WAV header" in m for m in messages)
        assert any("before any audio was written" in m for m in messages)
        assert not cat.conn.execute("SELECT COUNT(*) FROM captures").fetchone()[0]
        assert (tmp_path / "lost+found").exists() and not empty.part.exists()
        assert check_integrity(cat, tmp_path).ok


def test_a_file_committed_just_before_the_crash_is_only_cleaned_up(tmp_path: Path) -> None:
    part = _part(tmp_path, "c.wav", 100, 100)
    part._fd = os.open(part.part, os.O_WRONLY)  # reopen to finish it as the writer would have
    written = part.finish()
    with Catalog(tmp_path / "catalog.sqlite", "dev") as cat:
        from sync.outbox import BlobRef

        cat.add_capture(
            stream="mic",
            kind="segment",
            modality="audio",
            t_start_mono_ns=1,
            t_end_mono_ns=2,
            t_start_utc_ns=1,
            seq_first=0,
            seq_last=0,
            media=BlobRef(written.sha256, written.size, written.path, "audio/wav"),
            media_rel=str(written.path.relative_to(tmp_path)),
            meta={},
        )
        report = recover_report(cat, tmp_path)  # crash came after the commit, before cleanup()
        assert (report.finished, report.salvaged, report.unsalvageable) == (1, 0, 0)
        assert check_integrity(cat, tmp_path).ok
