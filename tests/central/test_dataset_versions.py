"""Named dataset versions and environment facets on the demo's real central store: the simulated
environment sensor's readings give each capture a temperature and humidity, versions freeze a
selection with its annotations, and a diff says what changed between two."""

from __future__ import annotations

import json
import sqlite3
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from central.datasets.environment import Condition, ReadingIndex, describe, facets, time_of_day
from central.datasets.errors import DatasetError
from central.datasets.version_commands import version_group
from central.datasets.versions import ANNOTATOR, NewSet, add_sets
from central.store import open_store

from .conftest import export, run, sql, store_url
from .test_datasets import add_machine_annotation


def version(*args: str) -> Any:
    return CliRunner().invoke(click.Group(commands={"version": version_group}), ["version", *args])


def _readings(central: Path) -> list[tuple[int, str, float]]:
    """(t_utc_ns, field, value) of every sensor reading the demo synced."""
    out = []
    for (body,) in sql(central, "SELECT body FROM records WHERE kind = 'capture'"):
        for row in json.loads(body)["body"].get("readings") or []:
            out.append((row[2], row[3], row[4]))
    return out


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_environment_is_the_nearest_sensor_reading_and_filters_by_it(central: Path, tmp_path: Path) -> None:
    readings = _readings(central)
    temps = [(t, v) for t, f, v in readings if f == "temperature_c"]
    assert len(temps) >= 6
    manifest = export(central, tmp_path / "all", "jsonl")
    rows = _rows(tmp_path / "all")
    assert manifest["samples"] == len(rows)
    for row in rows.values():
        t = row["t_start_utc_ns"]
        nearest = min(temps, key=lambda tv: abs(tv[0] - t))[1]
        assert row["environment"]["temperature_c"] == round(nearest, 4)
        hour = datetime.fromtimestamp(t / 1e9, UTC).hour
        assert row["environment"]["time_of_day"] == time_of_day(hour)
        assert row["environment"]["clock"] == "UTC"

    cut = statistics.median(r["environment"]["temperature_c"] for r in rows.values())
    warm = export(central, tmp_path / "warm", "jsonl", "--where", f"temperature_c>{cut}")
    cool = export(central, tmp_path / "cool", "jsonl", "--where", f"temperature_c<={cut}")
    assert warm["samples"] + cool["samples"] == len(rows)
    assert 0 < warm["samples"] < len(rows)
    assert all(r["environment"]["temperature_c"] > cut for r in _rows(tmp_path / "warm").values())
    assert warm["filters"] == {"where": [f"temperature_c>{cut}"]}

    bucket = next(iter(rows.values()))["environment"]["time_of_day"]
    other = next(b for b in ("night", "morning", "afternoon", "evening") if b != bucket)
    same = export(central, tmp_path / "tod", "jsonl", "--time-of-day", bucket)
    assert same["samples"] == sum(r["environment"]["time_of_day"] == bucket for r in rows.values())
    none = run("export", "--store", store_url(central), "--out", str(tmp_path / "x"), "--format", "jsonl",
               "--time-of-day", other)  # fmt: skip
    assert none.exit_code == 1 and "no sample matches" in none.output

    for where, message in (("temperature_c>>3", "write FIELD OP NUMBER"), ("lux>3", "--where lux: no sample")):
        bad = run("export", "--store", store_url(central), "--out", str(tmp_path / "y"), "--format", "jsonl",
                  "--where", where)  # fmt: skip
        assert bad.exit_code == 1 and message in bad.output, bad.output


def test_operator_weather_tag_is_a_facet_and_the_card_shows_the_balance(central: Path, tmp_path: Path) -> None:
    with sqlite3.connect(central / "central.db") as conn:  # the operator tagged the session "Rain"
        conn.execute("UPDATE records SET body = json_set(body, '$.body.meta.weather', 'Rain') WHERE kind = 'session'")
    rainy = export(central, tmp_path / "rain", "jsonl", "--weather", "rain")
    everything = export(central, tmp_path / "all", "jsonl")
    with_session = [r for r in _rows(tmp_path / "all").values() if r["session_id"]]
    assert rainy["samples"] == len(with_session) > 0
    assert {r["environment"]["weather"] for r in _rows(tmp_path / "rain").values()} == {"rain"}

    card = run("report", "--store", store_url(central), "--out", str(tmp_path / "card"))
    assert card.exit_code == 0, card.output
    balance = json.loads((tmp_path / "card" / "report.json").read_text())["balance"]
    assert sum(balance["temperature"]["counts"].values()) == everything["samples"]
    assert sum(balance["time_of_day"]["counts"].values()) == everything["samples"]
    assert balance["weather"]["counts"] == {"rain": len(with_session)}
    assert all(k.endswith("°C") for k in balance["temperature"]["counts"])
    assert "time_of_day" in (tmp_path / "card" / "report.html").read_text()


def test_versions_are_named_frozen_and_diffed(central: Path, tmp_path: Path) -> None:
    url = store_url(central)
    made = version("create", "v1", "--store", url, "--note", "first cut", "--author", "ann", "--json")
    assert made.exit_code == 0, made.output
    v1 = json.loads(made.output)
    assert v1["author"] == "ann" and v1["note"] == "first cut" and v1["samples"] > 0

    again = version("create", "v1", "--store", url, "--note", "again")
    assert again.exit_code == 1 and "exists" in again.output and "immutable" in again.output

    # a person relabels one audio sample after v1 was frozen
    export(central, tmp_path / "before", "jsonl")
    rows = _rows(tmp_path / "before")
    audio = next(r for r in rows.values() if r["modality"] == "audio")
    store = open_store(url)
    try:
        relabel = NewSet(audio["device"], audio["record_id"], "bob", ANNOTATOR, "2026-01-01T00:00:00Z",
                         [{"kind": "class", "label": "noise"}])  # fmt: skip
        assert add_sets(store, "rev-1", "test", "test", "2026-01-01T00:00:00Z", 1, [relabel]) == (1, 0)
    finally:
        store.close()
    assert version("create", "v2", "--store", url, "--note", "relabelled by bob").exit_code == 0
    cut = statistics.median(r["environment"]["temperature_c"] for r in rows.values())
    made = version(
        "create", "v3", "--store", url, "--note", "warm only\nsecond line", "--where", f"temperature_c>{cut}"
    )
    assert made.exit_code == 0, made.output

    listed = json.loads(version("list", "--store", url, "--json").output)
    assert [v["name"] for v in listed] == ["v1", "v2", "v3"]
    shown = version("show", "v3", "--store", url)
    assert shown.exit_code == 0 and "warm only" in shown.output and "temperature_c>" in shown.output

    relabelled = json.loads(version("diff", "v1", "v2", "--store", url, "--json").output)
    assert relabelled["added"] == relabelled["removed"] == relabelled["media_changed"] == []
    assert [r["key"] for r in relabelled["relabelled"]] == [audio["key"]]
    assert relabelled["relabelled"][0]["labels_after"] == ["noise"]
    assert relabelled["relabelled"][0]["source_after"] == "human"
    assert relabelled["unchanged"] == len(rows) - 1

    diff = json.loads(version("diff", "v2", "v3", "--store", url, "--json").output)
    warm = {k for k, r in rows.items() if r["environment"]["temperature_c"] > cut}
    assert diff["added"] == [] and diff["relabelled"] == []
    assert set(diff["removed"]) == set(rows) - warm and diff["unchanged"] == len(warm)
    text = version("diff", "v1", "v2", "--store", url)
    assert text.exit_code == 0 and f"~ {audio['key']}" in text.output and "1 relabelled" in text.output

    # exporting v1 gives the annotations frozen then, not the newer relabel
    frozen = export(central, tmp_path / "v1", "jsonl", "--version", "v1")
    assert frozen["dataset_version"]["name"] == "v1" and frozen["samples"] == v1["samples"]
    assert frozen["dataset_version"]["version_id"] == v1["version_id"]
    assert "noise" not in _rows(tmp_path / "v1")[audio["key"]]["labels"]
    export(central, tmp_path / "now", "jsonl")
    assert _rows(tmp_path / "now")[audio["key"]]["labels"] == ["noise"]

    for args, message in (
        (("show", "nope", "--store", url), "no dataset version named 'nope'"),
        (("create", "bad name", "--store", url, "--note", "x"), "version name"),
        (("create", "v3", "--store", url, "--note", " "), "--note"),
        (("diff", "v1", "v1", "--store", url), "against itself"),
    ):
        result = version(*args)
        assert result.exit_code == 1 and message in result.output, result.output
    mixed = run("export", "--store", url, "--out", str(tmp_path / "z"), "--format", "jsonl", "--version", "v1",
                "--modality", "audio")  # fmt: skip
    assert mixed.exit_code == 1 and "drop the filter" in mixed.output


def test_machine_annotations_sent_later_stay_out_of_an_older_version(central: Path, tmp_path: Path) -> None:
    url = store_url(central)
    assert version("create", "before", "--store", url, "--note", "before the re-screen").exit_code == 0
    key = add_machine_annotation(central)  # a device re-screened a take and sent one more annotation
    assert version("create", "after", "--store", url, "--note", "after the re-screen").exit_code == 0
    diff = json.loads(version("diff", "before", "after", "--store", url, "--json").output)
    assert [r["key"] for r in diff["relabelled"]] == [key]

    export(central, tmp_path / "old", "jsonl", "--version", "before")
    export(central, tmp_path / "new", "jsonl", "--version", "after")
    old, new = _rows(tmp_path / "old")[key], _rows(tmp_path / "new")[key]
    added = "0" * 11 + "1-" + "a" * 20
    assert added not in {a["record_id"] for a in old["annotations"]}
    assert added in {a["record_id"] for a in new["annotations"]}


def test_environment_from_hostile_or_odd_device_values() -> None:
    """Every value came from a device: non-finite, mistyped, far-away or mis-named ones are ignored."""
    t0 = 1_750_000_000 * 10**9  # 2025-06-15T15:06:40Z
    index = ReadingIndex.build(
        [
            (
                "d1",
                {
                    "readings": [
                        [0, 0, t0 - 10**9, "temperature_c", 31.5],
                        [1, 1, t0 + 4 * 10**9, "temperature_c", 20.0],
                    ]
                },
            ),
            ("d1", {"readings": [[2, 2, t0, "light_lux", float("nan")], [3, 3, t0, "bad name!", 5.0], "junk", [4]]}),
            ("d1", {"readings": [[5, 5, t0 - 3600 * 10**9, "humidity_pct", 40.0]]}),  # an hour off: not near
            ("d2", {"readings": [[0, 0, t0, "temperature_c", 99.0]]}),  # another device's sensor
            ("d1", {"readings": "not a list"}),
        ]
    )
    session = {
        "meta": {"utc_offset_min": 9 * 60, "weather": " Light Rain "},
        "environment": {"env": {"humidity_pct": {"value": 55.0}, "light_lux": {"value": 300, "stale": True}}},
    }
    env = describe(index, "d1", t0, session, {})
    assert env == {
        "temperature_c": 31.5,
        "humidity_pct": 55.0,  # from the session snapshot; the stale light value is not used
        "time_of_day": "night",  # 15:06 UTC is 00:06 at UTC+9
        "clock": "UTC+9h",
        "weather": "light rain",
    }
    odd = {"meta": {"utc_offset_min": 10**9, "weather": "<script>"}, "environment": ["x"]}
    env = describe(index, "d1", t0, odd, {"weather": 7})
    assert env["clock"] == "UTC" and env["time_of_day"] == "afternoon" and "weather" not in env
    assert describe(index, "d1", None, None, {}) == {}
    assert facets({"temperature_c": 31.5, "humidity_pct": 55.0, "light_lux": 300.0}) == {
        "temperature": "30–35 °C",
        "humidity": "50–60 %",
        "light": "100–1000 lx",
    }
    for bad in ("temperature_c", "temperature_c>hot", "temperature_c>nan", "1x>3"):
        with pytest.raises(DatasetError, match="FIELD OP NUMBER"):
            Condition.parse(bad)
    assert Condition.parse("humidity_pct == 55").holds({"humidity_pct": 55.0})
    assert not Condition.parse("humidity_pct>=0").holds({"humidity_pct": "55"})
