"""Sessions and takes through the API the booth UI calls, with simulated microphones and sensor."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from agent.capture.clock import Clock
from agent.capture.local import LocalCapture as Capture
from agent.catalog.db import Catalog
from agent.config import parse_config
from agent.errors import ConfigError
from agent.sessions.takes import SessionError, key_id, load_subject_key, pseudonym

RAW_SUBJECT = "SUBJ-RAW-4711"


def test_pseudonym_is_hmac_sha256_rfc4231() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert pseudonym("what do ya want for nothing?", b"Jefe") == expected
    assert pseudonym(" S-1 ", b"k" * 16) == pseudonym("S-1", b"k" * 16)
    assert key_id(b"k" * 16) == hmac.new(b"k" * 16, b"fieldcap subject key id v1", hashlib.sha256).hexdigest()[:16]
    with pytest.raises(SessionError, match="empty"):
        pseudonym("  ", b"k" * 16)


def test_key_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_subject_key(str(tmp_path / "missing.key"), config_file="booth.toml")
    short = tmp_path / "short.key"
    short.write_bytes(b"abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_subject_key(str(short), config_file="booth.toml")
    good = tmp_path / "good.key"
    good.write_bytes(b"0123456789abcdef0123\n")
    assert load_subject_key(str(good)) == b"0123456789abcdef0123"


@pytest.fixture
def booth(tmp_path: Path) -> Iterator[Capture]:
    key = tmp_path / "subject.key"
    key.write_bytes(b"a-long-random-secret-key-for-tests")
    config = parse_config(
        {
            "agent": {"device_id": "booth-01", "site": "lab", "station": "booth-1", "data_dir": str(tmp_path / "d")},
            "devices": [
                {"name": "mics", "type": "sim-microphone", "channels": 2, "speech_like": True},
                {"name": "env", "type": "sim-serial", "rate_hz": 10},
            ],
            "capture": {
                "mics": {"policy": "take", "pre_s": 0.2, "post_s": 0.2},
                "env": {"policy": "readings", "batch_s": 1.0},
            },
            "session": {"subject_key_file": str(key), "operator": "op-1"},
        }
    )
    cap = Capture(config, clock=Clock(probe_daemons=False))
    cap.start(background_session=False)
    assert cap.wait_open(30)
    time.sleep(0.6)  # pre-roll and a few sensor readings
    yield cap
    cap.stop()


def test_takes_retakes_and_the_session_record(booth: Capture) -> None:
    sessions = booth.sessions
    info = sessions.start_session(kind="booth", subject_id=RAW_SUBJECT, script="digits.tsv", round_no=2)
    assert info.subject_pseudonym == pseudonym(RAW_SUBJECT, b"a-long-random-secret-key-for-tests")
    assert info.operator == "op-1" and info.round_no == 2 and info.site == "lab"
    assert "temperature_c" in info.environment["env"]  # the environment in force at the start
    assert info.clock["source"] == "ntp_adjtime"

    take = sessions.start_take(info.session_id, "item-7", prompt="seven")
    with pytest.raises(SessionError, match="still recording"):
        sessions.start_take(info.session_id, "item-8")
    time.sleep(0.8)
    first = sessions.stop_take(take)
    assert first.status == "done", first.errors
    assert first.take_no == 1 and first.supersedes is None

    second = sessions.stop_take(sessions.retake(info.session_id, "item-7", prompt="seven"))
    assert second.status == "done" and second.take_no == 2 and second.supersedes == first.take_id
    with pytest.raises(SessionError, match="no take"):
        sessions.retake(info.session_id, "item-9")
    ended = sessions.end_session(info.session_id)
    assert ended.ended_utc is not None

    data_dir = booth.data_dir
    with Catalog(data_dir / "catalog.sqlite", "booth-01") as cat:
        caps = {
            r["record_id"]: r
            for r in cat.conn.execute(
                "SELECT * FROM captures WHERE session_id = ? AND kind = 'take'", (info.session_id,)
            )
        }
        (c1,) = first.captures["mics"]
        (c2,) = second.captures["mics"]
        assert caps[c1]["item_id"] == caps[c2]["item_id"] == "item-7"
        assert (caps[c1]["take"], caps[c2]["take"]) == (1, 2)
        assert caps[c2]["supersedes"] == c1  # the old take is kept, not overwritten
        audio, rate = sf.read(str(data_dir / caps[c1]["path"]), dtype="int16", always_2d=True)
        assert audio.shape[1] == 2
        assert 1.1 <= len(audio) / rate <= 1.6  # 0.2 s pre-roll + ~0.8 s + 0.2 s post
        row = cat.sessions.session(info.session_id)
        assert json.loads(row["environment_end_json"])["env"]["temperature_c"]["value"] is not None
        kinds = [r[0] for r in cat.conn.execute("SELECT kind FROM outbox ORDER BY seq")]
        assert kinds.count("take") == 2 and kinds.count("session") == 2 and "stream" in kinds
    # The raw subject ID is nowhere: not in the catalog, its WAL, or anything queued for sync.
    for path in data_dir.glob("catalog.sqlite*"):
        assert RAW_SUBJECT.encode() not in path.read_bytes()


def test_take_errors_are_clear(booth: Capture, tmp_path: Path) -> None:
    sessions = booth.sessions
    info = sessions.start_session(kind="booth")
    with pytest.raises(SessionError, match="not recording with policy 'take'"):
        sessions.start_take(info.session_id, "x", streams=["env"])
    with pytest.raises(SessionError, match="no session"):
        sessions.start_take("nope", "x")
    sessions.end_session(info.session_id)
    with pytest.raises(SessionError, match="has ended"):
        sessions.start_take(info.session_id, "x")
    with pytest.raises(SessionError, match="ended"):
        sessions.resume_session(info.session_id)


def test_an_ended_session_is_reopened_for_retakes_and_its_first_end_is_kept(booth: Capture) -> None:
    sessions = booth.sessions
    info = sessions.start_session(kind="booth", subject_id=RAW_SUBJECT, script="digits.tsv", round_no=1)
    first = sessions.stop_take(sessions.start_take(info.session_id, "item-1", prompt="one"))
    assert first.status == "done", first.errors
    ended = sessions.end_session(info.session_id, reason="complete")
    assert sessions.current() is None

    again = sessions.reopen_session(info.session_id, by="test", reason="items item-1")
    assert again.ended_utc is None and sessions.current() == info.session_id
    second = sessions.stop_take(sessions.retake(info.session_id, "item-1", prompt="one"))
    assert second.status == "done" and second.take_no == 2 and second.supersedes == first.take_id
    assert sessions.reopen_session(info.session_id, by="test").ended_utc is None  # open: just resumed
    final = sessions.end_session(info.session_id, reason="re-recorded")
    assert final.ended_utc is not None and final.ended_utc >= ended.ended_utc

    with Catalog(booth.data_dir / "catalog.sqlite", "booth-01") as cat:
        row = cat.sessions.session(info.session_id)
        meta = json.loads(row["meta_json"])
        assert meta["end_reason"] == "re-recorded" and "reopened" not in meta
        (reopening,) = meta["reopenings"]
        assert reopening["by"] == "test" and reopening["ended_again_utc"] == final.ended_utc
        previous = reopening["previous_end"]
        assert previous["ended_utc"] == ended.ended_utc and previous["end_reason"] == "complete"
        assert previous["environment_end"]["env"]["temperature_c"]["value"] is not None
        (event,) = [
            json.loads(r[0]) for r in cat.conn.execute("SELECT detail_json FROM events WHERE kind = 'session_reopened'")
        ]
        assert event["session_id"] == info.session_id and event["previous_end"]["ended_utc"] == ended.ended_utc
        records = [
            json.loads(r[0])["body"]["event"]
            for r in cat.conn.execute("SELECT body_json FROM outbox WHERE kind = 'session' ORDER BY seq")
            if json.loads(r[0])["body"]["session_id"] == info.session_id
        ]
        assert records == ["start", "end", "reopen", "end"]  # the central side sees every step
        takes = cat.sessions.takes(info.session_id)
        assert [(t["take_no"], t["status"]) for t in takes] == [(1, "done"), (2, "done")]  # nothing overwritten

    with pytest.raises(SessionError, match="no session"):
        sessions.reopen_session("nope", by="test")
