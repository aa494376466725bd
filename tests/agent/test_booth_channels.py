"""Per-microphone QC: which of the near and mid microphones failed, in the catalog, review and coverage.

A two-channel take is built from real speech (``espeak-ng``): the near channel clean, the mid
channel the same speech at half level under loud white noise. The agent's verdict of the capture
(its worst channel's) fails; screened per microphone, near passes and mid fails with its reason,
and ``fieldcap review`` and ``fieldcap coverage`` say so.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from agent.booth.commands import coverage_command, review_command
from agent.booth.coverage import session_coverage
from agent.booth.records import Mic, TakeFacts, VerdictFacts, mic_verdict, record_decision, resolve_booth_session
from agent.booth.scripts import parse_script
from agent.catalog.db import Catalog, new_record_id
from agent.qc import screen_channels_pending
from models import QcSettings, Screener
from sync.outbox import BlobRef
from sync.wire import utc_now

pytestmark = pytest.mark.timeout(300)

DEVICE = "booth-ch"
NEAR, MID = Mic("mics:near", "mics", 0), Mic("mics:mid", "mics", 1)
SCRIPT = b"p1\tThe quick brown fox jumps over the lazy dog.\tsentence\np2\tbroken file\tword\n"


def _speech_pair(tmp: Path) -> np.ndarray[Any, Any]:
    """48 kHz int16, (n, 2): clean espeak-ng speech on near, the same at half level + loud noise on mid."""
    for tool in ("espeak-ng", "sox"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            pytest.fail(f"{tool} is not installed: run `./dev test`, which installs it (apt install {tool})")
    raw, wav = tmp / "speech.wav", tmp / "speech48.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "The quick brown fox jumps over the lazy dog."], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(wav), "pad", "0.5", "0.5"], check=True)
    near, _ = sf.read(str(wav), dtype="int16")
    noise = np.random.default_rng(1).standard_normal(len(near)) * 3300
    mid = np.clip(near.astype(np.float64) / 2 + noise, -32768, 32767).astype(np.int16)
    return np.stack([near, mid], axis=1)


def _add_take(cat: Catalog, session_id: str, item: str, rel: str, data: Path) -> str:
    """A committed two-channel take of ``item`` as the recorder and sessions API leave it."""
    path = data / rel
    blob = path.read_bytes()
    media = BlobRef(hashlib.sha256(blob).hexdigest(), len(blob), path, "audio/wav")
    now = time.monotonic_ns()
    capture_id = cat.add_capture(
        stream="mics",
        kind="take",
        modality="audio",
        t_start_mono_ns=now,
        t_end_mono_ns=now + 1,
        t_start_utc_ns=time.time_ns(),
        seq_first=0,
        seq_last=0,
        media=media,
        media_rel=rel,
        meta={"channels": 2, "sample_rate": 48000},
        session_id=session_id,
        item_id=item,
        take=1,
    )
    cat.sessions.add_take(
        {
            "take_id": f"take-{item}",
            "session_id": session_id,
            "item_id": item,
            "prompt": item,
            "round": 1,
            "take_no": 1,
            "status": "done",
            "streams_json": '["mics"]',
            "captures_json": json.dumps({"mics": [capture_id]}),
            "t_start_mono_ns": now,
            "t_start_utc_ns": time.time_ns(),
            "created_utc": utc_now(),
        }
    )
    record_decision(
        cat, session_id=session_id, item_id=item, round_no=1, decision="accept", take_id=f"take-{item}", take_no=1
    )
    return capture_id


def test_near_passes_mid_fails_and_review_and_coverage_say_which(tmp_path: Path, model_dir: Path) -> None:
    data = tmp_path / "data"
    (data / "media").mkdir(parents=True)
    sf.write(str(data / "media" / "p1.wav"), _speech_pair(tmp_path), 48000, subtype="PCM_16")
    (data / "media" / "p2.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    script = parse_script(SCRIPT, name="s.tsv")
    screener = Screener(QcSettings(model_dir=model_dir))
    session_id = new_record_id()

    def open_catalog() -> Catalog:
        return Catalog(data / "catalog.sqlite", DEVICE)

    with open_catalog() as cat:
        cat.sessions.add_session(
            {
                "session_id": session_id,
                "kind": "booth",
                "site": "lab",
                "station": "b1",
                "subject_pseudonym": "p" * 64,
                "script": "s.tsv",
                "round": 1,
                "started_utc": utc_now(),
                "meta_json": json.dumps(
                    {
                        "items": [i.to_dict() for i in script.items],
                        "script_sha256": script.sha256,
                        "mics": [{"mic": m.mic, "stream": m.stream, "channel": m.channel} for m in (NEAR, MID)],
                    }
                ),
            }
        )
        p1 = _add_take(cat, session_id, "p1", "media/p1.wav", data)
        p2 = _add_take(cat, session_id, "p2", "media/p2.wav", data)
        samples, rate = sf.read(str(data / "media" / "p1.wav"), dtype="int16", always_2d=True)
        whole = screener.audio(samples, rate)  # what the agent's QC thread stores: the worst channel's verdict
        assert whole.verdict == "fail"
        cat.add_verdict(
            p1,
            profile=whole.profile,
            profile_version=whole.profile_version,
            verdict=whole.verdict,
            reasons=whole.reasons,
            metrics=whole.metrics,
            analyzers=[],
            annotations=[],
        )
        session = resolve_booth_session(cat, session_id)
        before = {c.mic: c for c in session_coverage(cat, session).cells if c.item_id == "p1"}
    # Not screened per microphone yet: both cells carry the whole take's failure, marked as such.
    assert [(c.ok, c.scope) for c in before.values()] == [(False, "take"), (False, "take")]

    with open_catalog() as cat:  # the QC pass catches up takes screened without their microphones
        assert screen_channels_pending(cat, data, screener, lambda _stream: None, limit=10) == 2

    with open_catalog() as cat:
        rows = {
            (r["capture_id"], r["mic"]): r
            for r in cat.conn.execute("SELECT * FROM channel_verdicts ORDER BY capture_id, channel")
        }
        assert not cat.channel_unscreened(10)
        sql = "SELECT body_json FROM outbox WHERE kind = 'channel_verdict'"
        (record,) = [json.loads(r[0]) for r in cat.conn.execute(sql) if json.loads(r[0])["body"]["capture_id"] == p1]
        cells = {(c.item_id, c.mic): c for c in session_coverage(cat, session).cells}
    near, mid = rows[(p1, NEAR.mic)], rows[(p1, MID.mic)]
    assert near["verdict"] == "pass" and json.loads(near["reasons_json"]) == []
    assert mid["verdict"] == "fail" and any("background noise" in r for r in json.loads(mid["reasons_json"]))
    assert json.loads(mid["metrics_json"])["channels"] == 1
    assert record["kind"] == "channel_verdict" and [c["mic"] for c in record["body"]["channels"]] == [
        "mics:near",
        "mics:mid",
    ]  # synced as one record per capture
    broken = [rows[(p2, m.mic)] for m in (NEAR, MID)]
    assert all(r["verdict"] == "review" and "could not run" in r["reasons_json"] for r in broken)

    assert cells[("p1", "mics:near")].ok and cells[("p1", "mics:near")].status == "accepted"
    assert cells[("p1", "mics:mid")].status == "accepted, but QC failed"
    assert cells[("p1", "mics:mid")].scope == "microphone"

    runner = CliRunner()
    review = runner.invoke(review_command, ["--data-dir", str(data), "--failed", "--json"])
    assert review.exit_code == 0, review.output
    failed = [json.loads(line) for line in review.output.splitlines()]
    assert [(r["item_id"], r["mic"], r["verdict"], r["take_verdict"]) for r in failed] == [
        ("p1", "mics:mid", "fail", "fail")
    ]
    assert any(r.startswith("snr ") for r in failed[0]["reasons"]) and failed[0]["scope"] == "microphone"
    table = runner.invoke(review_command, ["--data-dir", str(data)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "mics:near" in table.output and "mics:mid" in table.output

    cov = runner.invoke(coverage_command, ["--data-dir", str(data), "--session", session_id])
    assert cov.exit_code == 4, cov.output
    assert "  p1  round 1  mics:mid: take 1 accepted, but QC failed (snr " in cov.output
    assert "p1  round 1  mics:near" not in cov.output  # the near microphone's cell is covered
    doc = json.loads(runner.invoke(coverage_command, ["--data-dir", str(data), "--json"]).output)
    missing = {(m["item_id"], m["mic"]): m for m in doc["sessions"][0]["missing"]}
    assert set(missing) == {("p1", "mics:mid"), ("p2", "mics:near"), ("p2", "mics:mid")}
    assert missing[("p1", "mics:mid")]["scope"] == "microphone"


def test_mic_verdict_rules() -> None:
    take = TakeFacts("t1", "s", "i", 1, 1, "done", None, "p", "now", captures={"mics": "c1"})
    take.channels["mics"] = 2
    assert mic_verdict(take, NEAR) == (None, "take")  # nothing before the capture's own verdict
    whole = VerdictFacts("fail", ("snr 3 dB < 20 dB",), {}, "booth-speech", "1")
    take.verdicts["mics"] = whole
    assert mic_verdict(take, NEAR) == (whole, "take")  # not screened per microphone yet
    near = VerdictFacts("pass", (), {}, "booth-speech", "1", mic="mics:near")
    mid = VerdictFacts("fail", ("snr 3 dB < 20 dB",), {}, "booth-speech", "1", mic="mics:mid")
    take.channel_verdicts["mics"] = {0: near, 1: mid}
    assert mic_verdict(take, NEAR) == (near, "microphone") and mic_verdict(take, MID) == (mid, "microphone")
    assert take.labelled_reasons() == ["mics:mid: snr 3 dB < 20 dB"]
    take.channel_verdicts["mics"] = {0: near, 1: VerdictFacts("pass", (), {}, "booth-speech", "1", mic="mics:mid")}
    # The take failed but neither channel on its own did: every microphone carries the take's failure.
    assert mic_verdict(take, NEAR) == (whole, "take") and take.labelled_reasons() == ["mics: snr 3 dB < 20 dB"]
    take.channels["mics"] = 1
    assert mic_verdict(take, NEAR) == (whole, "microphone")  # a one-channel capture's verdict is its mic's
