"""``fieldcap rerecord`` into a session that was ended, through the real CLI in a pseudo-terminal.

The microphones are the ``sim-microphone`` pair (its speech stand-in fails QC, so takes are
accepted as overrides); the real-audio path is in ``test_booth_ui.py``. A booth session is
recorded and ended; later the item is re-recorded: the session is reopened (an event, the first
end kept), the new take supersedes the old one, which stays with its media, and the session is
ended again when rerecord quits — also when an earlier rerecord was killed half-way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.catalog.db import Catalog
from sync.files import sha256_file

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

DEVICE = "sim-rerecord"


def _ui_helpers() -> Any:
    """``Screen`` and ``_spawn`` of the booth UI test (tests are not a package)."""
    path = Path(__file__).with_name("test_booth_ui.py")
    spec = importlib.util.spec_from_file_location("fieldcap_test_booth_ui_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False)


def _take(screen: Any, *, retake_of: int | None = None) -> None:
    """Record a short take and accept it against its failed QC verdict (an override)."""
    screen.send(" ")
    screen.wait(r"● REC")
    screen.idle(1.0)
    screen.send(" ")
    screen.wait(r"QC (instant|full): FAIL")
    if retake_of is not None:
        screen.wait(rf"supersedes take {retake_of}")
    screen.send("a")
    screen.wait(r"press \[a\] again to accept anyway")
    screen.send("a")
    screen.wait(r"(?i)every item has an accepted take")


def test_rerecord_reopens_an_ended_session_and_ends_it_again(tmp_path: Path, model_dir: Path) -> None:
    ui = _ui_helpers()
    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))
    data = tmp_path / "data"
    config = tmp_path / "sim.toml"
    config.write_text(
        f'[agent]\ndevice_id = "{DEVICE}"\ndata_dir = "{data}"\n'
        '[[devices]]\nname = "mics"\ntype = "sim-microphone"\nchannels = 2\nspeech = "band-noise"\n'
        f'[session]\nsubject_key_file = "{key}"\n[qc]\nmodel_dir = "{model_dir}"\n[sync]\nenabled = false\n'
    )
    script = tmp_path / "s.csv"
    script.write_text("x1,hello there,phrase\n")
    common = ["--config", str(config), "--countdown", "0", "--sync-wait", "0"]

    # --- the sitting: one item, accepted, session ended with [e] -----------------------------------
    screen = ui._spawn(["booth", "--script", str(script), "--subject", "S-7", *common])
    screen.wait(r"MIC TEST")
    screen.idle(1.0)
    screen.send("\r")
    screen.wait(r"hello there")
    _take(screen)
    screen.send("e")
    assert screen.finish(180) == 0, screen.tail()
    screen.wait(r"1 of 1 items accepted - complete")
    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        (session_id, ended_utc) = cat.conn.execute("SELECT session_id, ended_utc FROM sessions").fetchone()
    assert ended_utc is not None  # one booth run, one session (no continuous session beside it)

    # --- later: re-record x1 into the ended session --------------------------------------------------
    screen = ui._spawn(["rerecord", session_id[:16], "x1", "--yes", "--no-mic-test", *common])
    screen.wait(rf"session {session_id} was ended at \S+; reopening it for these takes")
    screen.wait(r"RE-RECORD")
    screen.wait(r"take 1 recorded before: done")
    _take(screen, retake_of=1)
    screen.send("q")
    assert screen.finish(180) == 0, screen.tail()
    screen.wait(rf"session {session_id} ended again at \S+")
    assert "Traceback" not in screen.text

    # --- a rerecord killed half-way leaves the session open; the next one ends it again -------------
    screen = ui._spawn(["rerecord", "latest", "x1", "--yes", "--no-mic-test", *common])
    screen.wait(r"RE-RECORD")
    screen.child.kill(signal.SIGKILL)
    screen.child.close(force=True)
    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        row = cat.sessions.session(session_id)
        assert row["ended_utc"] is None and "reopened" in json.loads(row["meta_json"])
    screen = ui._spawn(["rerecord", "latest", "x1", "--yes", "--no-mic-test", *common])
    screen.wait(r"RE-RECORD")
    screen.send("q")
    assert screen.finish(180) == 0, screen.tail()
    screen.wait(rf"session {session_id} ended again")

    # --- what the catalog says ------------------------------------------------------------------------
    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        sessions = [dict(r) for r in cat.conn.execute("SELECT * FROM sessions")]
        takes = [dict(r) for r in cat.conn.execute("SELECT * FROM takes ORDER BY take_no")]
        captures = {r["record_id"]: dict(r) for r in cat.conn.execute("SELECT * FROM captures WHERE kind = 'take'")}
        reopened = [
            json.loads(r[0])
            for r in cat.conn.execute("SELECT detail_json FROM events WHERE kind = ?", ("session_reopened",))
        ]
        records = [
            json.loads(r[0])["body"]["event"]
            for r in cat.conn.execute("SELECT body_json FROM outbox WHERE kind = 'session' ORDER BY seq")
        ]
        decisions = [
            json.loads(r[0])
            for r in cat.conn.execute("SELECT detail_json FROM events WHERE kind = 'booth_decision' ORDER BY t_utc_ns")
        ]
        channel_verdicts = cat.conn.execute("SELECT COUNT(*) FROM channel_verdicts").fetchone()[0]
    assert len(sessions) == 1 and sessions[0]["kind"] == "booth" and sessions[0]["ended_utc"] is not None
    meta = json.loads(sessions[0]["meta_json"])
    assert meta["end_reason"] == "re-recorded" and "reopened" not in meta
    first, second = meta["reopenings"]  # the rerecord that ended it, and the one that was killed
    assert first["by"] == "fieldcap rerecord" and first["previous_end"]["ended_utc"] == ended_utc
    assert first["previous_end"]["end_reason"] == "complete" and first["reason"] == "items x1"
    assert second["previous_end"]["end_reason"] == "re-recorded"
    assert len(reopened) == 2 and reopened[0]["previous_end"]["ended_utc"] == ended_utc
    assert records == ["start", "end", "reopen", "end", "reopen", "end"]

    assert [(t["item_id"], t["take_no"], t["status"]) for t in takes] == [("x1", 1, "done"), ("x1", 2, "done")]
    assert takes[1]["supersedes"] == takes[0]["take_id"]  # the old take kept, superseded
    for take in takes:
        (capture_id,) = json.loads(take["captures_json"])["mics"]
        cap = captures[capture_id]
        assert sha256_file(data / cap["path"])[0] == cap["sha256"]  # each version with its media
    assert [(d["take_no"], d["override"]) for d in decisions] == [(1, True), (2, True)]
    assert channel_verdicts == 2 * len(takes)  # both microphones of both takes, screened before exit

    cov = _cli("coverage", "--config", str(config), "--json")
    assert cov.returncode == 0, cov.stdout + cov.stderr
    (doc,) = json.loads(cov.stdout)["sessions"]
    assert doc["complete"] and doc["cells"] == 2 and doc["ended_utc"] is not None
    review = _cli("review", "--data-dir", str(data), "--json")
    rows = [json.loads(line) for line in review.stdout.splitlines()]
    assert [(r["take"], r["mic"], r["current"], r["scope"]) for r in rows] == [
        (1, "mics:near", False, "microphone"),
        (1, "mics:mid", False, "microphone"),
        (2, "mics:near", True, "microphone"),
        (2, "mics:mid", True, "microphone"),
    ]


def test_a_request_pushed_by_the_central_side_is_named_at_the_booth_and_recorded(
    tmp_path: Path, model_dir: Path
) -> None:
    """The catalog takes a ``rerecord`` command as the publisher hands it over; the operator sees it
    at the booth's start and in ``rerecord --pending``, records it without naming items, and the
    retake closes it."""
    from sync.commands import Command, RerecordBody, RerecordItem

    ui = _ui_helpers()
    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))
    data = tmp_path / "data"
    config = tmp_path / "sim.toml"
    config.write_text(
        f'[agent]\ndevice_id = "{DEVICE}"\ndata_dir = "{data}"\n'
        '[[devices]]\nname = "mics"\ntype = "sim-microphone"\nchannels = 2\nspeech = "band-noise"\n'
        f'[session]\nsubject_key_file = "{key}"\n[qc]\nmodel_dir = "{model_dir}"\n[sync]\nenabled = false\n'
    )
    script = tmp_path / "s.csv"
    script.write_text("x1,hello there,phrase\n")
    common = ["--config", str(config), "--countdown", "0", "--sync-wait", "0"]
    screen = ui._spawn(["booth", "--script", str(script), "--subject", "S-8", *common])
    screen.wait(r"MIC TEST")
    screen.idle(1.0)
    screen.send("\r")
    screen.wait(r"hello there")
    _take(screen)
    screen.send("e")
    assert screen.finish(180) == 0, screen.tail()

    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        (session_id, take_id) = cat.conn.execute("SELECT session_id, take_id FROM takes").fetchone()
        cmd = Command(
            schema_version=1,
            command_id="0123456789abcdef",
            device=DEVICE,
            kind="rerecord",
            created_utc="2026-01-01T00:00:00Z",
            rerecord=RerecordBody(
                items=[RerecordItem(take_id=take_id, session_id=session_id, item_id="x1")], reason="door slammed"
            ),
        )
        assert cat.outbox.apply_command(cmd, verified=False) is not None
        assert cat.outbox.apply_command(cmd, verified=False) is None  # a replay changes nothing
    pending = _cli("rerecord", "--pending", "--config", str(config))
    assert pending.returncode == 0 and take_id in pending.stdout and "door slammed" in pending.stdout

    screen = ui._spawn(["booth", "--script", str(script), "--subject", "S-8", *common])
    screen.wait(rf"1 re-record request\(s\) from the central side in session\(s\) {session_id}")
    screen.child.kill(signal.SIGKILL)
    screen.child.close(force=True)

    screen = ui._spawn(["rerecord", session_id[:16], "--yes", "--no-mic-test", *common])
    screen.wait(r"RE-RECORD")
    _take(screen, retake_of=1)
    screen.send("q")
    assert screen.finish(180) == 0, screen.tail()
    pending = _cli("rerecord", "--pending", "--config", str(config))
    assert pending.returncode == 0 and "no re-record requests pending" in pending.stdout
    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'command_rerecord'").fetchone()[0] == 1
        assert cat.conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'command_ack'").fetchone()[0] == 1
