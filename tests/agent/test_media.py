"""The atomic media writer and start-up recovery, with a writer really killed mid-file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.catalog.db import Catalog
from agent.catalog.recovery import recover
from sync.files import write_atomic


def test_write_atomic_hashes_what_it_wrote(tmp_path: Path) -> None:
    chunks = [os.urandom(1000) for _ in range(5)]
    out = write_atomic(tmp_path / "a" / "f.bin", iter(chunks))
    data = b"".join(chunks)
    assert out.path.read_bytes() == data
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert out.size == len(data)
    assert [p.name for p in out.path.parent.iterdir()] == ["f.bin"]


def test_write_atomic_never_overwrites(tmp_path: Path) -> None:
    write_atomic(tmp_path / "f.bin", b"first")
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "f.bin", b"second")
    assert (tmp_path / "f.bin").read_bytes() == b"first"
    assert list(tmp_path.iterdir()) == [tmp_path / "f.bin"]


def test_writer_killed_mid_file_leaves_no_final_name_and_recovery_records_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    final = data_dir / "media" / "cam" / "20260101" / "x.jpg"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from sync.files import write_atomic
        def slow():
            for i in range(10_000):
                yield b"x" * 65536
                if i == 3:
                    print("started", flush=True)
                time.sleep(0.01)
        write_atomic(Path({str(final)!r}), slow())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    parts = list(final.parent.glob(".*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0

    with Catalog(data_dir / "catalog.sqlite", "dev") as cat:
        counts = recover(cat, data_dir)
        assert counts["partial"] == 1
        events = cat.conn.execute("SELECT kind, message FROM events").fetchall()
        assert len(events) == 1 and events[0][0] == "loss"
        assert "interrupted by a crash" in events[0][1]
        # The event is itself in the outbox, so the loss reaches the central side.
        assert cat.conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event'").fetchone()[0] == 1
        # Nothing partial remains under media/, and recovery is idempotent.
        assert not list((data_dir / "media").rglob(".*.part"))
        assert recover(cat, data_dir) == {"partial": 0, "orphan": 0, "missing": 0}


def test_recovery_finds_uncommitted_and_missing_media(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Catalog(data_dir / "catalog.sqlite", "dev") as cat:
        orphan = write_atomic(data_dir / "media" / "cam" / "d" / "orphan.jpg", b"o").path
        cat.add_capture(
            stream="cam",
            kind="frame",
            modality="visible",
            t_start_mono_ns=1,
            t_end_mono_ns=1,
            t_start_utc_ns=1,
            seq_first=0,
            seq_last=0,
            media=None,
            media_rel="media/cam/d/gone.jpg",
            meta={},
        )
        counts = recover(cat, data_dir)
        assert counts == {"partial": 0, "orphan": 1, "missing": 1}
        assert not orphan.exists()
        assert (data_dir / "lost+found" / "media" / "cam" / "d" / "orphan.jpg").exists()
        assert recover(cat, data_dir) == {"partial": 0, "orphan": 0, "missing": 0}
