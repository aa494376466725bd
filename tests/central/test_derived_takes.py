"""Derived speech takes in an export, measured with pyloudnorm (an independent BS.1770 meter):
trimmed to the VAD's trim points, normalised to the target loudness, peak-limited, re-screened,
with the original exported untouched beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile

from central.datasets.derive import normalize
from sync.files import sha256_file

from .conftest import export, run, sql, store_url

LIMIT_DBFS = -1.0


def _trim_points(central: Path) -> dict[str, tuple[float, float]]:
    """The trim points the device's QC stored, straight from the store's verdict records."""
    out = {}
    for device, body in sql(central, "SELECT device, body FROM records WHERE kind = 'verdict'"):
        b = json.loads(body)["body"]
        if b["metrics"].get("trim_start_s") is not None:
            out[f"{device}/{b['capture_id']}"] = (b["metrics"]["trim_start_s"], b["metrics"]["trim_end_s"])
    return out


def _check_level(path: Path, target: float) -> tuple[int, int]:
    audio, rate = soundfile.read(str(path), always_2d=True)
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) - target) <= 0.5
    assert float(abs(audio).max()) <= 10 ** (LIMIT_DBFS / 20)
    return audio.shape[0], rate


def test_trimmed_and_normalised_takes_beside_untouched_originals(demo: Path, tmp_path: Path) -> None:
    blobs_before = {p: sha256_file(p)[0] for p in (demo / "blobs").rglob("*") if p.is_file()}
    points = _trim_points(demo)
    assert points, "the demo's booth takes have VAD trim points"
    out = tmp_path / "out"
    manifest = export(demo, out, "jsonl", "--derive", "trim,normalize")
    derived = manifest["derived"]
    assert derived["transforms"] == ["trim", "normalize"] and derived["target_lufs"] == -23.0
    assert derived["not_derived"] == []
    items = {i["key"]: i for i in derived["items"]}
    assert set(items) == set(points)
    rows = {r["key"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    for key, item in items.items():
        frames, rate = _check_level(out / item["path"], -23.0)
        start, end = points[key]
        total = soundfile.info(str(out / rows[key]["media"])).frames  # trim points are rounded to 1 ms
        assert frames == min(round(end * rate), total) - round(start * rate)
        trim, norm = item["lineage"]["transforms"]
        assert (trim["op"], trim["start_s"], trim["end_s"]) == ("trim", start, end)
        assert (norm["op"], norm["target_lufs"], norm["peak_limit_dbfs"]) == ("normalize", -23.0, LIMIT_DBFS)
        original = rows[key]
        assert item["lineage"]["source"]["sha256"] == original["sha256"]
        assert sha256_file(out / original["media"])[0] == original["sha256"] == files[original["media"]]
        assert files[item["path"]] == item["sha256"] == sha256_file(out / item["path"])[0]
        qc = item["qc"]  # the same QC, run again on the derived audio
        assert qc["profile"] == original["qc"]["profile"] and qc["verdict"] in ("pass", "review", "fail")
        assert abs(qc["metrics"]["duration_s"] - frames / rate) < 1e-3
        assert qc["metrics"]["trim_start_s"] is not None and qc["metrics"]["edge_silence_s"] is not None
        assert any(a["name"] == "silero-vad" for a in qc["analyzers"])
    assert {p: sha256_file(p)[0] for p in (demo / "blobs").rglob("*") if p.is_file()} == blobs_before

    again = run("export", "--store", store_url(demo), "--out", str(out), "--format", "jsonl", "--quiet",
                "--derive", "trim,normalize", "--json")  # fmt: skip
    assert json.loads(again.output)["written"] == 0  # a resumed export keeps the derived files


def test_loud_targets_are_peak_limited(demo: Path, tmp_path: Path) -> None:
    manifest = export(demo, tmp_path / "loud", "jsonl", "--modality", "audio", "--derive", "normalize",
                      "--target-lufs", "-10")  # fmt: skip
    items: list[dict[str, Any]] = manifest["derived"]["items"]
    assert items
    for item in items:
        _check_level(tmp_path / "loud" / item["path"], -10.0)
        (norm,) = item["lineage"]["transforms"]
        assert norm["limiter"]["samples_limited"] > 0  # the target needs the limiter on these takes
        source = soundfile.info(str(tmp_path / "loud" / f"media/{item['key']}.wav"))
        assert soundfile.info(str(tmp_path / "loud" / item["path"])).frames == source.frames  # untrimmed


@pytest.mark.parametrize("seed", range(12))
def test_peaky_takes_reach_a_loud_target(seed: int) -> None:
    """Short takes of plosives and clicks over a quiet floor: once the limiter works, a dB of gain
    adds far less than 1 LU, and re-fitting 1 LU per dB stopped up to 2 LU short (seen on the demo's
    takes on a loaded machine). The target is reached and the manifest says what was reached."""
    rng = np.random.default_rng(seed)
    rate = 48000
    n = int(rng.uniform(0.45, 1.5) * rate)
    x = rng.standard_normal((n, 2)) * 0.002
    for start in rng.integers(0, n - 400, int(rng.integers(3, 40))):
        x[start : start + int(rng.integers(20, 400))] += rng.standard_normal((1, 2)) * rng.uniform(0.05, 0.4)
    out, step = normalize(x, rate, -10.0, LIMIT_DBFS)
    measured = pyloudnorm.Meter(rate).integrated_loudness(out)
    assert abs(measured - -10.0) <= 0.1
    assert abs(step["loudness_after_lufs"] - measured) <= 0.02
    assert float(np.abs(out).max()) <= 10 ** (LIMIT_DBFS / 20)
    assert step["limiter"]["samples_limited"] > 0


def test_derive_mistakes_are_one_line(demo: Path, tmp_path: Path) -> None:
    for extra, message in (
        (["--derive", "trim,denoise"], "--derive 'denoise'"),
        (["--derive", "normalize", "--target-lufs", "3"], "--target-lufs"),
    ):
        result = run("export", "--store", store_url(demo), "--out", str(tmp_path / "x"), "--format", "jsonl", *extra)
        assert result.exit_code in (1, 2) and message in result.output, result.output
