"""Booth building blocks on their own: prompt scripts, the level meter, large type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.booth.bigtext import big_lines, find_font
from agent.booth.levels import LevelMeter, LevelThresholds
from agent.booth.scripts import PromptItem, ScriptError, load_script, parse_script

# ---------------------------------------------------------------------------- scripts


def test_tsv_with_header_in_any_order_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "zh.tsv"
    f.write_text(
        "# digits, round 1\n"
        "text\tid\tkind\tnote\tmax_s\n"
        "七\td-007\tcharacter\t\t\n"
        "\n"
        "早上好\tp-1\tphrase\tread slowly\t8s\n"
        "今天天气很好。\ts-1\t\t\t12.5\n",
        encoding="utf-8",
    )
    script = load_script(f)
    assert [i.item_id for i in script.items] == ["d-007", "p-1", "s-1"]
    assert script.items[0] == PromptItem("d-007", "七", "character", "", 6.0)  # default for characters
    assert script.items[1].instructions == "read slowly" and script.items[1].max_duration_s == 8.0
    assert script.items[2].type == "prompt" and script.items[2].max_duration_s == 12.5
    assert script.name == "zh.tsv" and len(script.sha256) == 64


def test_csv_positional_with_quotes_and_json_forms() -> None:
    csv_script = parse_script(b'a1,"Hello, world",sentence,,10\na2,Bye\n', name="s.csv")
    assert [(i.item_id, i.text, i.max_duration_s) for i in csv_script.items] == [
        ("a1", "Hello, world", 10.0),
        ("a2", "Bye", 20.0),
    ]
    listed = parse_script(json.dumps([{"id": "x", "text": "one", "max_duration": 5}]).encode(), name="s.json")
    wrapped = parse_script(json.dumps({"items": [{"item": "x", "prompt": "one", "max_s": "5"}]}).encode(), name="s")
    assert listed.items == wrapped.items == (PromptItem("x", "one", "prompt", "", 5.0),)


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b"a\tone\nb\ttwo\na\tthree\n", "s.tsv", r"s.tsv:3: item id 'a' is used twice \(first at line 1\)"),
        (b"a\tone\n\tno id\n", "s.tsv", r"s.tsv:2: the item has no id"),
        (b"id\ttext\na\t\n", "s.tsv", r"s.tsv:2: item 'a' has no text"),
        (b"a\tone\tword\t\tten\n", "s.tsv", r"s.tsv:1: item 'a': max duration 'ten' is not a number"),
        (b"a\tone\tword\t\t9999\n", "s.tsv", r"s.tsv:1: .* outside 0.5..600 s"),
        (b"a\tone\tword\tx\t5\textra\n", "s.tsv", r"s.tsv:1: 6 columns, but the script has 5"),
        (b"id\ttext\tspeaker\n", "s.tsv", r"s.tsv:1: unknown column\(s\) 'speaker'"),
        (b"a\tone\tWord Type\n", "s.tsv", r"s.tsv:1: .*type 'word type' must be a short label"),
        (b'a,"unterminated\n', "s.csv", r"s.csv:\d+: .*"),
        (b"ok\tfine\n\xff\xfe\tbad\n", "s.tsv", r"s.tsv:2: not UTF-8 text"),
        (b'[{"id": "a", "text": "x"},\n {"id": "b" "text": "y"}]', "s.json", r"s.json:2: not valid JSON"),
        (b'[{"id": "a", "txt": "x"}]', "s.json", r"s.json: items\[0\]: unknown key 'txt'"),
        (b'{"prompts": []}', "s.json", r"s.json: a JSON script is a list of items"),
        (b"# only a comment\n\n", "s.tsv", r"s.tsv: the script has no prompt items"),
    ],
)
def test_script_errors_point_at_the_line(raw: bytes, name: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(raw, name=name, file=name)


def test_unreadable_scripts_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"missing.tsv: script not found \(give the path of a .tsv"):
        load_script(tmp_path / "missing.tsv")
    with pytest.raises(ScriptError, match="is a directory"):
        load_script(tmp_path)
    locked = tmp_path / "locked.tsv"
    locked.write_text("a\tone\n")
    locked.chmod(0)
    try:
        if locked.stat().st_mode & 0o777 == 0 and not _can_read(locked):
            with pytest.raises(ScriptError, match="cannot read the script: Permission denied"):
                load_script(locked)
    finally:
        locked.chmod(0o644)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


def test_items_survive_the_session_metadata_round_trip() -> None:
    script = parse_script(b"a\tone\tword\tsay it twice\t4\n", name="s.tsv")
    again = [PromptItem.from_dict(json.loads(json.dumps(i.to_dict()))) for i in script.items]
    assert tuple(again) == script.items


# ---------------------------------------------------------------------------- levels


class FakeClock:
    """The meter's notion of 'now' (it stamps block arrival); advanced by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _feed(meter: LevelMeter, clock: FakeClock, seconds: float, block: np.ndarray, stream: str = "mics") -> None:
    for _ in range(round(seconds * 48000 / len(block))):
        clock.t += len(block) / 48000
        meter.feed(stream, block)


def _tone(amplitude: float, n: int = 1024, channels: int = 2) -> np.ndarray:
    t = np.arange(n) / 48000
    wave = (amplitude * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return np.stack([wave] * channels, axis=1)


def test_meter_levels_clipping_quiet_and_silent() -> None:
    """Each warning appears for the signal that causes it, on the channel that has it, and clears."""
    clock = FakeClock()
    meter = LevelMeter(LevelThresholds(), clock=clock)
    meter.attach("mics", ["near", "mid"], 2)
    assert meter.mics() == ["mics:near", "mics:mid"]

    _feed(meter, clock, 3.0, _tone(0.5))  # speech-level signal: -6 dBFS peaks
    near, mid = meter.levels()
    assert near.peak_dbfs == pytest.approx(-6.0, abs=0.1) and near.warning is None and mid.warning is None

    block = _tone(0.5)
    block[100:110, 1] = 32767  # a run of full-scale samples on the mid channel only
    _feed(meter, clock, 0.1, block)
    near, mid = meter.levels()
    assert mid.clipping and mid.warning == "CLIPPING - lower the gain" and not near.clipping
    clock.t += 2.0  # the clip warning holds for hold_s, then clears
    _feed(meter, clock, 0.1, _tone(0.5))
    assert not meter.levels()[1].clipping

    hiss = (np.random.default_rng(1).standard_normal((1024, 2)) * 32767 * 10 ** (-75 / 20)).astype(np.int16)
    for _ in range(4):  # normal speech: syllables at -6 dBFS between pauses
        _feed(meter, clock, 0.4, _tone(0.5))
        _feed(meter, clock, 0.3, hiss)
    assert not any(lvl.too_quiet or lvl.silent for lvl in meter.levels())
    for _ in range(4):  # someone speaking far too softly: -45 dBFS syllables between pauses
        _feed(meter, clock, 0.4, _tone(10 ** (-45 / 20)))
        _feed(meter, clock, 0.3, hiss)
    assert all(lvl.too_quiet and lvl.warning == "too quiet - can't hear you" for lvl in meter.levels())

    _feed(meter, clock, 3.0, np.zeros((1024, 2), np.int16))  # muted / unplugged
    assert all(lvl.silent and not lvl.too_quiet for lvl in meter.levels())

    clock.t += 5.0  # nothing arrives: the stream stalled
    assert all(lvl.warning == "no audio" for lvl in meter.levels())


def test_meter_summary_since_reset_and_unknown_streams() -> None:
    clock = FakeClock()
    meter = LevelMeter(clock=clock)
    meter.attach("mics", None, 1)
    _feed(meter, clock, 1.0, _tone(0.9, channels=1))
    meter.reset()
    noise = (np.random.default_rng(0).standard_normal((1024, 1)) * 32767 * 10 ** (-50 / 20)).astype(np.int16)
    _feed(meter, clock, 1.0, noise)
    _feed(meter, clock, 0.2, _tone(0.25, channels=1))
    summary = meter.summary()["mics:ch0"]
    assert summary["peak_dbfs"] == pytest.approx(-12.0, abs=0.2)  # the loud tone was before the reset
    assert summary["noise_floor_dbfs"] == pytest.approx(-50.0, abs=1.5)
    assert summary["clipped_blocks"] == 0
    meter.feed("other", _tone(0.5))  # a stream the meter does not know is ignored
    assert list(meter.summary()) == ["mics:ch0"]


def test_thresholds_follow_the_qc_profile() -> None:
    from models import QcSettings

    _, profile = QcSettings().profile("booth-speech", "audio")
    th = LevelThresholds.from_profile(profile)
    assert (th.min_peak_dbfs, th.silence_rms_dbfs, th.clip_run) == (-30.0, -60.0, 3)


# ---------------------------------------------------------------------------- large type


@pytest.mark.skipif(find_font("seven") is None, reason="no font found through fontconfig")
def test_large_type_fits_and_falls_back() -> None:
    rows = big_lines("seven", 60, 8)
    assert rows is not None and 3 <= len(rows) <= 8
    assert all(len(r) == 60 for r in rows) and any("█" in r for r in rows)
    long = "The quick brown fox jumps over the lazy dog " * 4
    assert big_lines(long, 60, 6) is None  # too long to be legible large: the UI shows plain text
