"""The annotation quality loop on a real central store: double annotation in the Label Studio
export, every annotation kept on import, agreement with known disagreements, adjudication, and
the version later exports choose (adjudicated > newest annotator > machine)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .conftest import export, run, sql, store_url
from .test_datasets import add_machine_annotation


def _box(x: float, y: float, w: float, h: float, label: str = "face") -> dict[str, Any]:
    """A rectangle result on a 640x480 frame, given in pixels."""
    return {
        "id": f"b{x:g}{y:g}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
        "value": {
            "x": 100 * x / 640,
            "y": 100 * y / 480,
            "width": 100 * w / 640,
            "height": 100 * h / 480,
            "rectanglelabels": [label],
        },
    }


def _choice(label: str) -> dict[str, Any]:
    value = {"choices": [label]}
    return {"id": f"c{label}", "type": "choices", "from_name": "class", "to_name": "image", "value": value}


def _segment(start: float, end: float) -> dict[str, Any]:
    return {
        "id": f"s{start:g}",
        "type": "labels",
        "from_name": "label",
        "to_name": "audio",
        "value": {"start": start, "end": end, "labels": ["speech"]},
    }


def _text(text: str) -> dict[str, Any]:
    return {"id": "t", "type": "textarea", "from_name": "transcription", "to_name": "audio", "value": {"text": [text]}}


def _annotation(who: str, when: str, results: list[dict[str, Any]], n: int) -> dict[str, Any]:
    return {
        "id": n,
        "completed_by": {"email": who},
        "was_cancelled": False,
        "created_at": when,
        "updated_at": when,
        "result": results,
    }


# alice and bob on four visible frames and one audio take, with known disagreements
VISIBLE = [
    # (alice, bob): task 0 boxes IoU 2500/17500; task 1 outdoor vs indoor; tasks 2 and 3 agree
    ([_box(0, 0, 100, 100), _choice("outdoor")], [_box(50, 50, 100, 100), _choice("outdoor")]),
    ([_choice("outdoor")], [_choice("indoor")]),
    ([_choice("indoor")], [_choice("indoor")]),
    ([_choice("outdoor")], [_choice("outdoor")]),
]
AUDIO = ([_segment(0.5, 2.5), _text("the cat sat on the mat")], [_segment(1.0, 3.0), _text("the cat sit on mat")])


def _project(
    central: Path, tmp_path: Path, take_key: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """Label Studio's JSON export of the two-annotator project, written to a file."""
    out = tmp_path / "ls"
    export(central, out, "labelstudio")
    image = json.loads((out / "labelstudio" / "image" / "tasks.json").read_text())
    audio = json.loads((out / "labelstudio" / "audio" / "tasks.json").read_text())
    visible = [t for t in image if t["data"]["modality"] == "visible"][: len(VISIBLE)]
    assert len(visible) == len(VISIBLE)
    tasks = []
    n = 0
    for t, (a, b) in zip(visible, VISIBLE, strict=True):
        n += 2
        tasks.append(
            {
                "data": t["data"],
                "annotations": [
                    _annotation("alice@example.org", "2025-03-01T10:00:00Z", a, n),
                    _annotation("bob@example.org", "2025-03-01T11:00:00+00:00", b, n + 1),
                ],
            }
        )
    take = next(t for t in audio if take_key in (None, t["data"]["fieldcap_key"]))
    tasks.append(
        {
            "data": take["data"],
            "annotations": [
                _annotation("alice@example.org", "2025-03-02T10:00:00Z", AUDIO[0], 90),
                _annotation("bob@example.org", "2025-03-02T09:00:00Z", AUDIO[1], 91),
                {"id": 92, "completed_by": 5, "was_cancelled": True, "result": []},  # skipped, not stored
            ],
        }
    )
    file = tmp_path / "project.json"
    file.write_text(json.dumps(tasks))
    return tasks, take, file


def _rows(central: Path, out: Path) -> dict[str, dict[str, Any]]:
    export(central, out, "jsonl")
    return {r["key"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_overlap_marks_a_seeded_share_of_tasks_for_two_annotators(demo: Path, tmp_path: Path) -> None:
    def marked(out: Path, *extra: str) -> dict[str, set[str]]:
        export(demo, out, "labelstudio", *extra)
        got = {}
        for project in ("image", "audio"):
            tasks = json.loads((out / "labelstudio" / project / "tasks.json").read_text())
            for t in tasks:
                assert t.get("overlap", 1) == (2 if t.get("meta", {}).get("fieldcap_double_annotation") else 1)
            got[project] = {t["data"]["fieldcap_key"] for t in tasks if t.get("overlap") == 2}
            assert len(got[project]) == math.ceil(0.25 * len(tasks))
        return got

    first = marked(tmp_path / "a", "--overlap", "0.25", "--overlap-seed", "7")
    assert marked(tmp_path / "b", "--overlap", "0.25", "--overlap-seed", "7") == first  # same seed, same tasks
    seeds = [marked(tmp_path / f"s{seed}", "--overlap", "0.25", "--overlap-seed", str(seed)) for seed in range(3)]
    assert any(s != first for s in seeds)  # the seed decides which
    result = run(
        "export", "--store", store_url(demo), "--out", str(tmp_path / "j"), "--format", "jsonl", "--overlap", "0.1"
    )
    assert result.exit_code == 1 and "only --format labelstudio" in result.output


def test_every_annotation_is_kept_and_agreement_matches_hand_computed_values(central: Path, tmp_path: Path) -> None:
    take_key = add_machine_annotation(central, model="test-vad")  # the machine's pre-annotation of a take
    tasks, _take, file = _project(central, tmp_path, take_key)
    result = run("review-import", "--store", store_url(central), str(file))
    assert result.exit_code == 0, result.output
    assert "10 new annotation set(s)" in result.output and "by 2 annotator(s)" in result.output
    again = run("review-import", "--store", store_url(central), str(file))
    assert "0 new annotation set(s), 10 unchanged" in again.output
    people = sql(central, "SELECT annotator, COUNT(*) FROM dataset_annotation_sets GROUP BY 1 ORDER BY 1")
    assert people == [("alice@example.org", 5), ("bob@example.org", 5)]
    machine = sql(central, "SELECT COUNT(*) FROM records WHERE kind = 'annotation'")[0][0]
    assert machine >= 1  # the machine's annotations stay records of their own

    got = run("agreement", "--store", store_url(central), "--json")
    assert got.exit_code == 0, got.output
    report = json.loads(got.output)
    assert report["multi_annotated"] == 5 and report["annotators"] == ["alice@example.org", "bob@example.org"]
    labels = report["labels"]
    # outdoor: alice 1,1,0,1 / bob 1,0,0,1 -> p_o 3/4, p_e 1/2 -> 0.5; indoor likewise; face identical -> 1
    assert labels["outdoor"] == {"method": "cohen", "kappa": 0.5, "tasks": 4, "observed": 0.75}
    assert labels["indoor"]["kappa"] == 0.5 and labels["face"]["kappa"] == 1.0
    assert labels["speech"]["kappa"] is None  # both always say speech: chance agreement is 1
    (pair,) = report["pairs"]
    assert (pair["a"], pair["b"], pair["tasks"]) == ("alice@example.org", "bob@example.org", 5)
    # pooled over 4 visible tasks x {face, indoor, outdoor} + 1 audio task x {speech}:
    # 13 items, 11 agree; alice says yes 6 times, bob 6 -> p_e = (6*6 + 7*7)/169 -> kappa = 58/84
    assert pair["kappa"] == pytest.approx((11 / 13 - 85 / 169) / (1 - 85 / 169), abs=1e-6)
    assert pair["labels"]["outdoor"] == 0.5
    assert pair["box_iou"] == pytest.approx(2500 / 17500, abs=1e-6)
    assert pair["segment_overlap"] == pytest.approx(0.6) and pair["boundary_s"] == pytest.approx(0.5)
    assert pair["cer"] == pytest.approx(5 / 22, abs=1e-6) and pair["wer"] == pytest.approx(2 / 6, abs=1e-6)
    (vad,) = [m for m in report["machine"] if m["model"] == "test-vad"]
    # the chosen human set is alice's (newer): speech 0.5-2.5 vs the machine's 0.25-1.5
    assert vad["tasks"] == 1 and vad["segment_overlap"] == pytest.approx(1.0 / 2.25, abs=1e-6)

    listed = run("agreement", "--store", store_url(central), "--threshold", "0.5", "--json")
    keys = [d["key"] for d in json.loads(listed.output)["disagreements"]]
    outdoor_vs_indoor, boxes = tasks[1]["data"]["fieldcap_key"], tasks[0]["data"]["fieldcap_key"]
    assert keys == [outdoor_vs_indoor, boxes]  # 1.0, then 1 - 1/7; the audio take (0.4) is below
    text = run("agreement", "--store", store_url(central), "--threshold", "0.5")
    assert text.exit_code == 0 and f"{outdoor_vs_indoor}  disagreement 1.00" in text.output

    # the dataset card's consistency section says the same
    card = run("report", "--store", store_url(central), "--out", str(tmp_path / "card"))
    assert card.exit_code == 0, card.output
    section = json.loads((tmp_path / "card" / "report.json").read_text())["consistency"]
    assert section["labels"] == labels and section["pairs"] == report["pairs"]
    assert section["machine"] == report["machine"]
    assert section["open_disagreements"] == 3  # the boxes, outdoor vs indoor, the audio take
    html = (tmp_path / "card" / "report.html").read_text()
    assert "alice@example.org / bob@example.org" in html and "test-vad 6.2.3" in html


def test_adjudication_becomes_the_exported_version(central: Path, tmp_path: Path) -> None:
    tasks, _take, file = _project(central, tmp_path)
    assert run("review-import", "--store", store_url(central), str(file)).exit_code == 0
    disputed = tasks[1]["data"]["fieldcap_key"]
    before = _rows(central, tmp_path / "j1")[disputed]
    assert before["labels"] == ["indoor"]  # bob's is the newest annotator set
    assert before["lineage"]["annotations"]["human"]["annotator"] == "bob@example.org"
    assert len(before["lineage"]["annotations"]["human_sets"]) == 2

    done = run("agreement", "adjudicate", "--store", store_url(central), disputed, "--use", "alice@example.org")
    assert done.exit_code == 0, done.output
    after = _rows(central, tmp_path / "j2")[disputed]
    assert after["labels"] == ["outdoor"]
    assert after["lineage"]["annotations"]["human"]["role"] == "adjudicator"
    assert len(after["lineage"]["annotations"]["human_sets"]) == 3  # nobody's set was replaced
    listed = json.loads(run("agreement", "--store", store_url(central), "--json").output)
    assert disputed not in [d["key"] for d in listed["disagreements"]]
    everything = json.loads(run("agreement", "--store", store_url(central), "--all", "--json").output)
    assert any(d["key"] == disputed and d["adjudicated"] for d in everything["disagreements"])

    # a later review by a user named as adjudicator wins too, and an annotator's later correction
    # is kept beside the earlier one
    agreed = tasks[2]["data"]
    later = [
        {
            "data": agreed,
            "annotations": [
                _annotation("carol@example.org", "2025-04-01T00:00:00Z", [_choice("studio")], 1),
                _annotation("alice@example.org", "2025-04-02T00:00:00Z", [_choice("outdoor")], 2),
            ],
        }
    ]
    (tmp_path / "later.json").write_text(json.dumps(later))
    imported = run(
        "review-import",
        "--store",
        store_url(central),
        "--adjudicator",
        "carol@example.org",
        str(tmp_path / "later.json"),
    )
    assert imported.exit_code == 0 and "(1 adjudication(s))" in imported.output, imported.output
    row = _rows(central, tmp_path / "j3")[agreed["fieldcap_key"]]
    assert row["labels"] == ["studio"]  # adjudicated beats alice's newer correction
    assert len(row["lineage"]["annotations"]["human_sets"]) == 4

    for args, message in (
        (["agreement", "adjudicate", "--store", store_url(central), disputed, "--use", "mallory"], "did not annotate"),
        (["agreement", "adjudicate", "--store", store_url(central), "nope/nothing", "--use", "bob"], "no such capture"),
    ):
        result = run(*args)
        assert result.exit_code == 1 and message in result.output, result.output
    nowhere = run("agreement")
    assert nowhere.exit_code == 2 and "no central store given" in nowhere.output


def test_review_import_refuses_garbled_times(central: Path, tmp_path: Path) -> None:
    tasks, _take, _file = _project(central, tmp_path)
    tasks[0]["annotations"][0]["updated_at"] = "yesterday"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    result = run("review-import", "--store", store_url(central), str(bad))
    assert result.exit_code == 1 and "'yesterday' is not ISO 8601" in result.output
    assert sql(central, "SELECT COUNT(*) FROM dataset_annotation_sets")[0][0] == 0


def test_review_versions_stored_before_annotation_sets_are_carried_over(central: Path, tmp_path: Path) -> None:
    """A store reviewed by an earlier fieldcap (one numbered version per capture) keeps its reviews."""
    from central.datasets.versions import ensure_schema
    from central.store import open_store

    device, capture_id = sql(central, "SELECT device, record_id FROM records WHERE kind = 'capture' LIMIT 1")[0]
    store = open_store(store_url(central))
    try:
        ensure_schema(store)
    finally:
        store.close()
    legacy = [{"kind": "class", "label": "legacy-label", "record_id": "human-0", "source": "human"}]
    with sqlite3.connect(central / "central.db") as conn:
        conn.execute(
            "INSERT INTO dataset_annotation_versions (device, capture_id, version_no, review_id, author,"
            " reviewed_utc, content_sha256, annotations) VALUES (?,?,?,?,?,?,?,?)",
            (device, capture_id, 1, "r1", "old@example.org", "2024-01-01T00:00:00Z", "x", json.dumps(legacy)),
        )
    row = _rows(central, tmp_path / "j")[f"{device}/{capture_id}"]
    assert row["labels"] == ["legacy-label"] and row["annotation_source"] == "human"
    assert row["lineage"]["annotations"]["human"]["annotator"] == "old@example.org"
    _rows(central, tmp_path / "j2")  # carried over once, not again
    assert sql(central, "SELECT COUNT(*) FROM dataset_annotation_sets") == [(1,)]
