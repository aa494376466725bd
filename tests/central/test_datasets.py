"""Dataset export, review round trip and dataset card on a central store filled by a real sync run.

One ``fieldcap demo`` run (simulated cameras, microphones and sensor → Mosquitto → ingester →
central SQLite store + blob tree) feeds every test in this module. Each test works on its own copy
of the store when it writes to it, and reads exports back with the consumers' own libraries
(Hugging Face ``datasets``, ``webdataset``, ``mcap``) rather than with fieldcap code.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import capture_count, export, run, sql, store_url, tree

# ---------------------------------------------------------------------------- snapshots


def test_two_exports_of_one_store_are_the_same_version_byte_for_byte(demo: Path, tmp_path: Path) -> None:
    for fmt in ("jsonl", "webdataset", "hf", "mcap", "labelstudio"):
        a = export(demo, tmp_path / f"{fmt}-a", fmt, "--shard-size", "0.25")
        b = export(demo, tmp_path / f"{fmt}-b", fmt, "--shard-size", "0.25", "--name", "other-name")
        assert a["version_id"] == b["version_id"], fmt
        assert a["name"] is None and b["name"] == "other-name"
        ta, tb = tree(tmp_path / f"{fmt}-a"), tree(tmp_path / f"{fmt}-b")
        ta.pop("manifest.json"), tb.pop("manifest.json")
        assert ta == tb, fmt
        for f in a["files"]:  # the manifest's sha256 are the files' sha256
            data = (tmp_path / f"{fmt}-a" / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]


def test_export_resumes_keeping_good_files_and_rewriting_damaged_ones(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    first = export(demo, out, "webdataset", "--shard-size", "0.25")
    shards = sorted(out.glob("shards/*.tar"))
    assert len(shards) >= 3
    shards[0].write_bytes(b"cut short")
    shards[1].unlink()
    result = run(
        "export",
        "--store",
        store_url(demo),
        "--out",
        str(out),
        "--format",
        "webdataset",
        "--shard-size",
        "0.25",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert f"2 written, {len(first['files']) - 2} kept" in result.output
    again = json.loads((out / "manifest.json").read_text())
    assert again["version_id"] == first["version_id"]


def test_filters_select_and_are_recorded(demo: Path, tmp_path: Path) -> None:
    m = export(demo, tmp_path / "v", "jsonl", "--modality", "visible", "--verdict", "pass")
    rows = [json.loads(line) for line in (tmp_path / "v" / "samples.jsonl").read_text().splitlines()]
    expected = 0
    for (body,) in sql(demo, "SELECT body FROM records WHERE kind = 'capture'"):
        env = json.loads(body)
        if env["body"]["modality"] != "visible":
            continue
        verdicts = [
            json.loads(b)["body"]["verdict"]
            for (b,) in sql(demo, "SELECT body FROM records WHERE kind = 'verdict'")
            if json.loads(b)["body"]["capture_id"] == env["record_id"]
        ]
        expected += verdicts[-1:] == ["pass"]
    assert expected > 0 and len(rows) == m["samples"] == expected
    assert {r["modality"] for r in rows} == {"visible"} and {r["qc"]["verdict"] for r in rows} == {"pass"}
    assert m["filters"] == {"modalities": ["visible"], "verdicts": ["pass"]}
    for r in rows:  # media copied verbatim, lineage present
        assert (tmp_path / "v" / r["media"]).stat().st_size == r["size"]
        assert r["lineage"]["device"] == r["device"] and r["lineage"]["qc"]["profile_version"]
        assert r["lineage"]["clock"] is not None


def test_user_mistakes_get_one_line_errors(demo: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cases = [
        (["export", "--store", store_url(demo), "--out", str(tmp_path / "busy"), "--format", "jsonl"], "other files"),
        (
            [
                "export",
                "--store",
                store_url(demo),
                "--out",
                str(tmp_path / "x"),
                "--format",
                "jsonl",
                "--since",
                "yesterday",
            ],
            "not an ISO 8601 time",
        ),
        (
            [
                "export",
                "--store",
                store_url(demo),
                "--out",
                str(tmp_path / "x"),
                "--format",
                "jsonl",
                "--device",
                "no-such-device",
            ],
            "--device no-such-device: no sample",
        ),
        (
            [
                "export",
                "--store",
                f"sqlite:///{tmp_path / 'none.db'}",
                "--out",
                str(tmp_path / "x"),
                "--format",
                "jsonl",
            ],
            "no central store there",
        ),
        (["review-import", "--store", store_url(demo), str(tmp_path / "busy" / "notes.txt")], "not JSON"),
    ]
    for argv, message in cases:
        result = run(*argv)
        assert result.exit_code == 1, (argv, result.output)
        assert message in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------- formats read back


def test_hf_export_loads_with_datasets(demo: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    m = export(demo, out, "hf")
    by_modality = dict(
        sql(
            demo,
            "SELECT json_extract(body, '$.body.modality'), COUNT(*) FROM records WHERE kind = 'capture' GROUP BY 1",
        )
    )
    assert m["modalities"] == by_modality
    for config, n in by_modality.items():
        ds = datasets.load_dataset(str(out), config, split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert len(ds) == n
        if config == "audio":  # decoding audio needs torchcodec; the WAV bytes are what we check
            ds = ds.cast_column("audio", datasets.Audio(decode=False))
        row = ds[0]
        assert json.loads(row["lineage"])["device"] == row["device"]
        if config == "visible":
            sha = row["sha256"]
            blob = demo / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha
            assert row["image"].size == (640, 480) and blob.exists()
        if config == "audio":
            assert row["audio"]["bytes"][:4] == b"RIFF"
        if config == "sensor":
            assert row["readings"] and {"name", "value", "t_utc_ns"} <= set(row["readings"][0])


def test_webdataset_shards_read_back(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    m = export(demo, out, "webdataset", "--shard-size", "0.25")
    urls = sorted(str(p) for p in out.glob("shards/*.tar"))
    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == m["samples"] == capture_count(demo)
    blobs = dict(sql(demo, "SELECT device || '/' || record_id, blob_sha256 FROM records WHERE kind = 'capture'"))
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["key"] == s["__key__"]
        media = [k for k in s if k in ("jpg", "png", "wav", "npy")]
        if blobs[s["__key__"]] is None:
            assert not media and meta["readings"]
        elif media == ["npy"]:  # thermal: decoded pixels (test_thermal_exports checks them)
            assert meta["modality"] == "thermal" and meta["sha256"] == blobs[s["__key__"]]
        else:
            assert hashlib.sha256(s[media[0]]).hexdigest() == blobs[s["__key__"]]
    with tarfile.open(urls[0]) as tar:  # reproducible headers
        assert {(i.uid, i.gid, i.uname, i.gname, i.mode) for i in tar.getmembers()} == {(0, 0, "", "", 0o644)}


def test_mcap_export_reads_back(demo: Path, tmp_path: Path) -> None:
    from mcap.reader import make_reader

    out = tmp_path / "mcap"
    export(demo, out, "mcap")
    files = sorted(out.glob("mcap/*/*.mcap"))
    assert files
    seen: dict[str, int] = {}
    images = 0
    for path in files:
        with path.open("rb") as fh:
            reader = make_reader(fh)
            summary = reader.get_summary()
            assert summary is not None
            for channel in summary.channels.values():
                assert channel.metadata["device"] and channel.metadata["modality"]
            for schema, _channel, message in reader.iter_messages():
                body = json.loads(message.data)
                if schema.name == "fieldcap.Sample":
                    seen[body["key"]] = message.log_time
                    assert body["t_start_utc_ns"] == message.log_time
                    assert body["lineage"]["capture"]["record_id"] == body["record_id"]
                elif schema.name == "foxglove.CompressedImage":
                    images += 1
                    assert body["format"] in ("jpeg", "png") and body["data"]
                elif schema.name == "foxglove.RawImage":  # thermal: the radiometric values, as on the device
                    images += 1
                    assert body["encoding"] == "mono16" and body["data"]
                elif schema.name == "fieldcap.AudioChunk":
                    assert body["encoding"] == "pcm_s16le" and body["frames"] > 0
    assert len(seen) == capture_count(demo)
    assert (
        images
        == sql(
            demo,
            "SELECT COUNT(*) FROM records WHERE kind = 'capture'"
            " AND json_extract(body, '$.blob.media_type') LIKE 'image/%'",
        )[0][0]
    )


# ---------------------------------------------------------------------------- review round trip


def _reviewed(tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A Label Studio JSON export as an annotator would leave it: one task relabelled, one left alone."""
    target = next((t for t in tasks if t["predictions"]), tasks[0])
    edited = []
    for t in tasks:
        entry = {"id": len(edited) + 1, "data": t["data"], "predictions": t["predictions"], "annotations": []}
        if t is target:
            results = [dict(r) for p in t["predictions"] for r in p["result"]]
            for r in results:
                r["value"] = {**r["value"]}
                for key in ("labels", "rectanglelabels", "choices"):
                    if key in r["value"]:
                        r["value"][key] = ["corrected-by-human"]
            results.append(
                {
                    "id": "new1",
                    "from_name": "class",
                    "to_name": "audio" if "audio" in t["data"] else "image",
                    "type": "choices",
                    "value": {"choices": ["reviewed"]},
                }
            )
            entry["annotations"] = [
                {
                    "id": 7,
                    "completed_by": {"email": "annotator@example.org"},
                    "was_cancelled": False,
                    "created_at": "2025-01-02T03:04:05Z",
                    "updated_at": "2025-01-02T03:04:05Z",
                    "result": results,
                },
            ]
        edited.append(entry)
    return edited, target


def add_machine_annotation(central: Path, model: str = "silero-vad") -> str:
    """A VAD segment on the first audio capture, stored the way the ingester stores a device's record;
    returns the capture's key."""
    from central.store import open_store

    device, capture_id = sql(
        central,
        "SELECT device, record_id FROM records WHERE kind = 'capture'"
        " AND json_extract(body, '$.body.modality') = 'audio' ORDER BY record_id",
    )[0]
    record_id = "0" * 11 + "1-" + "a" * 20
    body = {
        "record_id": record_id,
        "capture_id": capture_id,
        "kind": "speech",
        "label": "speech",
        "score": 0.91,
        "t_start_s": 0.25,
        "t_end_s": 1.5,
        "geometry": None,
        "model": model,
        "model_version": "6.2.3",
        "model_sha256": "1" * 64,
        "created_utc": "2025-01-01T00:00:00+00:00",
    }
    envelope = {
        "schema_version": 1,
        "record_id": record_id,
        "device": device,
        "kind": "annotation",
        "created_utc": "2025-01-01T00:00:00+00:00",
        "body": body,
    }
    store = open_store(store_url(central))
    try:
        store.put_record(device, record_id, "annotation", envelope["created_utc"], None, None, json.dumps(envelope))
    finally:
        store.close()
    return f"{device}/{capture_id}"


def test_label_studio_review_changes_the_next_export_and_keeps_the_machine_version(
    central: Path, tmp_path: Path
) -> None:
    if not sql(central, "SELECT COUNT(*) FROM records WHERE kind = 'annotation'")[0][0]:
        add_machine_annotation(central)  # the simulated booth rarely yields speech the VAD accepts
    machine = sql(central, "SELECT COUNT(*) FROM records WHERE kind = 'annotation'")[0][0]
    ls = tmp_path / "ls"
    export(central, ls, "labelstudio")
    tasks = json.loads((ls / "labelstudio" / "audio" / "tasks.json").read_text())
    assert any(t["predictions"] for t in tasks)
    reviewed, target = _reviewed(tasks)
    key = target["data"]["fieldcap_key"]
    before = {
        r["key"]: r
        for r in map(
            json.loads,
            (
                export(central, tmp_path / "j1", "jsonl")
                and (tmp_path / "j1" / "samples.jsonl").read_text().splitlines()
            ),
        )
    }
    machine_labels = before[key]["labels"]

    file = tmp_path / "export.json"
    file.write_text(json.dumps(reviewed))
    result = run("review-import", "--store", store_url(central), str(file))
    assert result.exit_code == 0, result.output
    assert "1 new annotation set(s)" in result.output
    again = run("review-import", "--store", store_url(central), str(file))
    assert "0 new annotation set(s), 1 unchanged" in again.output

    after = {
        r["key"]: r
        for r in map(
            json.loads,
            (
                export(central, tmp_path / "j2", "jsonl")
                and (tmp_path / "j2" / "samples.jsonl").read_text().splitlines()
            ),
        )
    }
    row = after[key]
    assert row["annotation_source"] == "human"
    assert "reviewed" in row["labels"] and row["labels"] != machine_labels
    human = row["lineage"]["annotations"]["human"]
    assert human["role"] == "annotator" and human["annotated_utc"] == "2025-01-02T03:04:05.000000+00:00"
    assert human["annotator"] == "annotator@example.org"
    assert row["lineage"]["annotations"]["human_sets"] == [human]
    assert row["lineage"]["annotations"]["machine"] == before[key]["annotations"]  # the machine's version is kept
    # the machine's records are untouched, the human version is a row of its own
    assert sql(central, "SELECT COUNT(*) FROM records WHERE kind = 'annotation'")[0][0] == machine
    device, rid = key.split("/")
    assert sql(
        central, "SELECT annotator FROM dataset_annotation_sets WHERE device = ? AND capture_id = ?", device, rid
    ) == [("annotator@example.org",)]
    others = [k for k in after if k != key]
    assert all(after[k]["annotation_source"] == before[k]["annotation_source"] for k in others)
    # and the label filter now finds it by the human label
    m = export(central, tmp_path / "j3", "jsonl", "--label", "reviewed")
    assert m["samples"] == 1


def test_review_import_refuses_a_file_from_another_store(central: Path, tmp_path: Path) -> None:
    file = tmp_path / "foreign.json"
    file.write_text(
        json.dumps(
            [
                {
                    "data": {"fieldcap_device": "elsewhere", "fieldcap_record_id": "0123456789ab-cd"},
                    "annotations": [{"result": []}],
                }
            ]
        )
    )
    result = run("review-import", "--store", store_url(central), str(file))
    assert result.exit_code == 1 and "does not have" in result.output and "Nothing was imported" in result.output


# ---------------------------------------------------------------------------- dataset card


def test_report_renders_and_its_numbers_match_the_store(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "card"
    result = run("report", "--store", store_url(demo), "--out", str(out), "--license", "CC-BY-4.0")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    assert report["plots"] and all(
        (out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report["plots"]
    )
    assert all(f'src="plots/{p}"' in html for p in report["plots"])

    captures = [json.loads(b) for (b,) in sql(demo, "SELECT body FROM records WHERE kind = 'capture'")]
    assert report["samples"] == len(captures)
    assert report["store"]["records"] == dict(sql(demo, "SELECT kind, COUNT(*) FROM records GROUP BY kind"))
    assert report["balance"]["device"]["counts"] == dict(
        sql(demo, "SELECT device, COUNT(*) FROM records WHERE kind = 'capture' GROUP BY device")
    )
    assert report["modalities"] == dict(
        sql(
            demo,
            "SELECT json_extract(body, '$.body.modality'), COUNT(*) FROM records WHERE kind = 'capture' GROUP BY 1",
        )
    )
    verdicts: dict[str, dict[str, int]] = {}
    for profile, verdict, n in sql(
        demo,
        "SELECT json_extract(body, '$.body.profile'),"
        " json_extract(body, '$.body.verdict'), COUNT(*) FROM records"
        " WHERE kind = 'verdict' GROUP BY 1, 2",
    ):
        verdicts.setdefault(profile, {})[verdict] = n
    assert {p: a["verdicts"] for p, a in report["accuracy"].items()} == verdicts
    for p, a in report["accuracy"].items():
        assert a["pass_rate"] == pytest.approx(verdicts[p].get("pass", 0) / sum(verdicts[p].values()))
    media = sql(
        demo,
        "SELECT COUNT(*), COUNT(DISTINCT blob_sha256) FROM records WHERE kind = 'capture' AND blob_sha256 IS NOT NULL",
    )[0]
    assert report["uniqueness"]["identical"]["samples_with_media"] == media[0]
    assert report["uniqueness"]["identical"]["duplicate_samples"] == media[0] - media[1]
    images = sql(
        demo,
        "SELECT COUNT(*) FROM records WHERE kind = 'capture'"
        " AND json_extract(body, '$.blob.media_type') LIKE 'image/%'",
    )[0][0]
    assert report["uniqueness"]["near_duplicates"]["images_hashed"] == images
    labels: dict[str, int] = {}
    for label, n in sql(
        demo,
        "SELECT json_extract(body, '$.body.label'), COUNT(DISTINCT"
        " json_extract(body, '$.body.capture_id')) FROM records"
        " WHERE kind = 'annotation' GROUP BY 1",
    ):
        labels[label] = n
    assert report["balance"]["class"]["counts"] == labels
    latency = sql(
        demo,
        "SELECT (julianday(received_utc) - julianday(json_extract(body, '$.body.t_start_utc_ns')"
        " / 1e9, 'unixepoch')) * 86400 FROM records WHERE kind = 'capture'",
    )
    assert report["timeliness"]["latency_s"]["count"] == len(latency)
    assert report["timeliness"]["latency_s"]["max"] == pytest.approx(max(v for (v,) in latency), abs=0.01)
    no_session = sum(1 for c in captures if not c["body"].get("session_id"))
    assert report["completeness"]["missing_fields"]["session"]["missing"] == no_session
    assert report["traceability"]["full_lineage"] <= len(captures) - no_session
    assert report["accessibility"]["license"] == "CC-BY-4.0"


def test_postgresql_store_gives_the_same_version_and_takes_reviews(
    demo: Path, tmp_path: Path, postgres_url: str
) -> None:
    """The same records in PostgreSQL export to the same version id; review versions work there too."""
    from central.store import open_store

    store = open_store(postgres_url)
    try:
        with store._tx() as cur:
            for row in sql(
                demo,
                "SELECT device, record_id, kind, created_utc, received_utc, blob_sha256, blob_size, body FROM records",
            ):
                store._exec(
                    cur,
                    "INSERT INTO records (device, record_id, kind, created_utc, received_utc, blob_sha256,"
                    " blob_size, body) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    row,
                )
            for row in sql(demo, "SELECT sha256, size, media_type, device, received_utc FROM blobs"):
                store._exec(
                    cur,
                    "INSERT INTO blobs (sha256, size, media_type, device, received_utc)"
                    " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                    row,
                )
            for row in sql(demo, "SELECT device, sha256, received_utc FROM blob_owners"):
                store._exec(
                    cur,
                    "INSERT INTO blob_owners (device, sha256, received_utc) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                    row,
                )
    finally:
        store.close()
    lite = export(demo, tmp_path / "lite", "jsonl")
    result = run(
        "export",
        "--store",
        postgres_url,
        "--blobs",
        str(demo / "blobs"),
        "--out",
        str(tmp_path / "pg"),
        "--format",
        "jsonl",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    pg = json.loads((tmp_path / "pg" / "manifest.json").read_text())
    assert pg["version_id"] == lite["version_id"]

    tasks = json.loads((tmp_path / "lite" / "samples.jsonl").read_text().splitlines()[0])
    file = tmp_path / "review.json"
    file.write_text(
        json.dumps(
            [
                {
                    "data": {"fieldcap_device": tasks["device"], "fieldcap_record_id": tasks["record_id"]},
                    "annotations": [
                        {
                            "id": 1,
                            "result": [
                                {
                                    "id": "x",
                                    "type": "choices",
                                    "from_name": "class",
                                    "to_name": "image",
                                    "value": {"choices": ["ok"]},
                                }
                            ],
                        }
                    ],
                }
            ]
        )
    )
    result = run("review-import", "--store", postgres_url, str(file))
    assert result.exit_code == 0 and "1 new annotation set(s)" in result.output, result.output
    run(
        "export",
        "--store",
        postgres_url,
        "--blobs",
        str(demo / "blobs"),
        "--out",
        str(tmp_path / "pg2"),
        "--format",
        "jsonl",
        "--quiet",
        "--label",
        "ok",
    )
    rows = (tmp_path / "pg2" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(r)["key"] for r in rows] == [tasks["key"]]

    # named versions live in PostgreSQL as well
    from .test_dataset_versions import version

    for name, extra in (("pg-ok", ["--label", "ok"]), ("pg-all", [])):
        made = version("create", name, "--store", postgres_url, "--note", "on PostgreSQL", *extra)
        assert made.exit_code == 0, made.output
    assert version("create", "pg-ok", "--store", postgres_url, "--note", "again").exit_code == 1
    diff = json.loads(version("diff", "pg-ok", "pg-all", "--store", postgres_url, "--json").output)
    assert diff["removed"] == [] and len(diff["added"]) == lite["samples"] - 1 and diff["unchanged"] == 1
    result = run("export", "--store", postgres_url, "--blobs", str(demo / "blobs"), "--out", str(tmp_path / "pg3"),
                 "--format", "jsonl", "--quiet", "--version", "pg-ok")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pg3" / "manifest.json").read_text())["dataset_version"]["name"] == "pg-ok"


POISON: dict[str, tuple[str, Any]] = {
    # kind: (field, a value of the wrong type) — each once crashed `fieldcap report` and every export
    "capture": ("t_start_utc_ns", "yesterday"),
    "annotation": ("t_start_s", "x"),
    "take": ("take_no", "one"),
    "verdict": ("metrics", ["not", "an", "object"]),
    "session": ("round", "two"),
    "stream": ("settings", "fast"),
}


def test_poisoned_records_already_stored_are_skipped_and_counted(central: Path, tmp_path: Path) -> None:
    """Rows stored before the ingester validated bodies: report and every export skip and count them."""
    donors = {
        kind: sql(central, "SELECT device, kind, created_utc, body FROM records WHERE kind = ? LIMIT 1", kind)
        for kind in POISON
    }
    planted = 0
    with sqlite3.connect(central / "central.db") as conn:
        for kind, (key, bad) in POISON.items():
            env = {
                "schema_version": 1,
                "record_id": f"ffffffffffff-{planted:04d}",
                "device": "poison",
                "kind": kind,
                "created_utc": "2026-01-01T00:00:00+00:00",
                "body": {},
            }
            if donors[kind]:
                env["body"] = json.loads(donors[kind][0][3])["body"]
            env["body"] = {**env["body"], key: bad}
            conn.execute(
                "INSERT INTO records (device, record_id, kind, created_utc, received_utc, body) VALUES (?,?,?,?,?,?)",
                ("poison", env["record_id"], kind, env["created_utc"], env["created_utc"], json.dumps(env)),
            )
            planted += 1
        # a take number "one" on an honest device's take, and a verdict of the wrong shape on its capture
        (cap_env,) = [json.loads(b) for (b,) in conn.execute("SELECT body FROM records WHERE kind = 'capture' LIMIT 1")]
        verdict = {**cap_env, "record_id": "ffffffffffff-9999", "kind": "verdict"}
        verdict["body"] = {"capture_id": cap_env["record_id"], "verdict": 7}
        conn.execute(
            "INSERT INTO records (device, record_id, kind, created_utc, received_utc, body) VALUES (?,?,?,?,?,?)",
            (cap_env["device"], verdict["record_id"], "verdict", verdict["created_utc"], "2027", json.dumps(verdict)),
        )
        planted += 1
    result = run("report", "--store", store_url(central), "--out", str(tmp_path / "report"), "--json")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "report" / "report.json").read_text())
    assert sum(card["store"]["invalid_records"].values()) == planted, card["store"]
    assert set(card["store"]["invalid_records"]) == set(POISON)
    for fmt in ("jsonl", "hf", "webdataset", "labelstudio", "mcap"):
        manifest = export(central, tmp_path / f"out-{fmt}", fmt)
        header = manifest.get("header", manifest)
        assert sum(header["invalid_records"].values()) == planted, (fmt, header.get("invalid_records"))
