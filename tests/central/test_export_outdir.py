"""An export never destroys another export, nor any file it did not write.

Runs ``fieldcap export`` into directories that already hold an export of another format, other
filters or another shard size (refused, nothing touched), with ``--replace`` (only the earlier
export's files go) and after an interruption (resumed only under the same plan).
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result

from .conftest import export, run, store_url, tree


def _export(central: Path, out: Path, fmt: str, *extra: str) -> Result:
    return run("export", "--store", store_url(central), "--out", str(out), "--format", fmt, "--quiet", *extra)


def test_another_format_or_filter_is_refused_and_leaves_every_file(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    first = export(demo, out, "jsonl")
    before = tree(out)
    assert len(first["files"]) > 10
    for argv, differs in (
        (("webdataset",), "format"),
        (("jsonl", "--modality", "visible"), "filters"),
        (("hf", "--modality", "audio"), "format, filters"),
    ):
        result = _export(demo, out, *argv)
        assert result.exit_code == 1, result.output
        assert f"holds a jsonl export of everything (no filters) ({len(first['files'])} files)" in result.output
        assert (
            f"differs in {differs}" in result.output
            and "--replace" in result.output
            and "Nothing was changed" in result.output
        )
        assert "Traceback" not in result.output
        assert tree(out) == before, argv


def test_another_shard_size_is_another_plan(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    export(demo, out, "webdataset", "--shard-size", "0.25")
    before = tree(out)
    result = _export(demo, out, "webdataset", "--shard-size", "1")
    assert result.exit_code == 1 and "differs in layout" in result.output
    assert tree(out) == before


def test_the_same_plan_resumes_and_updates(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    first = export(demo, out, "jsonl", "--modality", "visible")
    (out / first["files"][0]["path"]).unlink()
    result = _export(demo, out, "jsonl", "--modality", "visible", "--name", "renamed")
    assert result.exit_code == 0 and "1 written" in result.output
    again = json.loads((out / "manifest.json").read_text())
    assert again["version_id"] == first["version_id"] and again["plan"] == first["plan"]
    assert again["plan"] == {
        "filters": {"modalities": ["visible"]},
        "format": "jsonl",
        "layout": {},
        "schema": again["schema"],
    }


def test_replace_deletes_only_the_earlier_exports_files(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    first = export(demo, out, "jsonl")
    (out / "NOTES.md").write_text("my notes")  # the user's own files, inside and beside the export's
    (out / "media" / "keep.txt").write_text("mine too")
    result = _export(demo, out, "webdataset", "--replace")
    assert result.exit_code == 0, result.output
    assert f"{len(first['files'])} removed" in result.output
    second = json.loads((out / "manifest.json").read_text())
    assert second["format"] == "webdataset"
    assert (out / "NOTES.md").read_text() == "my notes" and (out / "media" / "keep.txt").read_text() == "mine too"
    left = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    expected = {f["path"] for f in second["files"]} | {
        "manifest.json",
        ".fieldcap-export.journal",
        ".fieldcap-export.plan",
        "NOTES.md",
        "media/keep.txt",
    }
    assert left == expected  # every jsonl file is gone, nothing else
    assert not any(f["path"] in left for f in first["files"] if f["path"].startswith("media/"))


def test_an_interrupted_export_is_resumed_only_by_its_own_plan(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    export(demo, out, "webdataset", "--shard-size", "0.25")
    (out / "manifest.json").unlink()  # as if the process died before sealing the version
    before = tree(out)
    refused = _export(demo, out, "jsonl")
    assert refused.exit_code == 1 and "holds a webdataset export" in refused.output
    assert tree(out) == before
    resumed = _export(demo, out, "webdataset", "--shard-size", "0.25")
    assert resumed.exit_code == 0 and " 0 written" in resumed.output, resumed.output


def test_a_directory_of_other_files_is_never_written_into(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 not ours")
    for extra in ((), ("--replace",)):
        result = _export(demo, out, "jsonl", *extra)
        assert result.exit_code == 1 and "holds other files and no fieldcap export" in result.output
        assert [p.name for p in out.iterdir()] == ["holiday.jpg"]
