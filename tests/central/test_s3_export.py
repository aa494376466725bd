"""Exports and the dataset card reading media from an S3-compatible object store (a real moto server).

The demo's blob tree is copied to a bucket key for key, as ``aws s3 sync blobs/sha256
s3://BUCKET/PREFIX/sha256`` would (the object store keeps the tree's names), and every export
format made from the bucket must equal the one made from the tree, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from .conftest import run, store_url, tree

FORMATS = ["jsonl", "hf", "webdataset", "labelstudio", "mcap"]


def _sync_to_bucket(blobs: Path, bucket: str, prefix: str) -> int:
    s3 = boto3.client("s3")
    files = [p for p in (blobs / "sha256").rglob("*") if p.is_file()]
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(blobs).as_posix()}")
    return len(files)


@pytest.fixture
def s3_blobs(demo: Path, s3_bucket: str) -> str:
    assert _sync_to_bucket(demo / "blobs", s3_bucket, "central/blobs") > 0
    return f"s3://{s3_bucket}/central/blobs"


def test_every_export_format_reads_the_same_media_from_s3(demo: Path, tmp_path: Path, s3_blobs: str) -> None:
    for fmt in FORMATS:
        local, remote = tmp_path / f"{fmt}-local", tmp_path / f"{fmt}-s3"
        for out, extra in ((local, []), (remote, ["--blobs", s3_blobs])):
            result = run("export", "--store", store_url(demo), "--out", str(out), "--format", fmt, "--quiet", *extra)
            assert result.exit_code == 0, result.output
        manifest = json.loads((remote / "manifest.json").read_text())
        assert manifest["samples"] > 0 and not manifest["skipped"], (fmt, manifest["skipped"][:3])
        assert tree(local) == tree(remote), fmt


def test_the_dataset_card_reads_media_from_s3(demo: Path, tmp_path: Path, s3_blobs: str) -> None:
    cards = []
    for name, extra in (("local", []), ("s3", ["--blobs", s3_blobs])):
        result = run("report", "--store", store_url(demo), "--out", str(tmp_path / name), "--json", *extra)
        assert result.exit_code == 0, result.output
        cards.append(json.loads(result.output))
    assert cards[0]["samples"] == cards[1]["samples"] > 0


def test_an_export_from_a_missing_bucket_is_one_line(demo: Path, tmp_path: Path, s3_bucket: str) -> None:
    out = tmp_path / "out"
    result = run(
        "export",
        "--store",
        store_url(demo),
        "--out",
        str(out),
        "--format",
        "jsonl",
        "--blobs",
        "s3://no-such-fieldcap-bucket/x",
    )
    assert result.exit_code == 1
    assert "the bucket 'no-such-fieldcap-bucket' does not exist; create it or correct --blobs" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
