"""``fieldcap qc`` and ``fieldcap models`` through click, on real files."""

from __future__ import annotations

import json
import pathlib
import types
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import skimage.data
import soundfile
from click.testing import CliRunner

from agent.cli.qc import models_group, qc_command


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory,
    speech: Callable[[str], npt.NDArray[np.float32]],
    material: types.SimpleNamespace,
) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("qc-files")
    paths = {
        name: folder / name
        for name in (
            "good.wav",
            "noisy.flac",
            "photo.png",
            "dark.jpg",
            "ir.png",
            "corrupt.wav",
            "fake.png",
            "notes.txt",
        )
    }
    clean = material.take(speech("en"))
    soundfile.write(paths["good.wav"], material.mix(clean, 35, "pink"), material.rate, subtype="PCM_16")
    soundfile.write(paths["noisy.flac"], material.mix(clean, 8, "white"), material.rate)
    coffee = skimage.data.coffee()[:, :, ::-1]  # type: ignore[no-untyped-call]
    photo = cv2.resize(coffee, (1280, 853), interpolation=cv2.INTER_LANCZOS4)
    cv2.imwrite(str(paths["photo.png"]), photo)
    cv2.imwrite(str(paths["dark.jpg"]), (photo * 0.05).astype(np.uint8))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(paths["ir.png"]), (29800 + rng.normal(0, 100, (120, 160))).astype(np.uint16))
    paths["corrupt.wav"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    paths["fake.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    paths["notes.txt"].write_text("hello", encoding="utf-8")
    return paths


def _run_json(args: list[str]) -> tuple[int, list[dict[str, object]]]:
    result = CliRunner().invoke(qc_command, args)
    lines = [json.loads(line) for line in result.output.splitlines()]
    return result.exit_code, lines


def test_qc_json_screens_each_file(files: dict[str, pathlib.Path], model_dir: pathlib.Path) -> None:
    names = ["good.wav", "noisy.flac", "photo.png", "dark.jpg", "ir.png"]
    code, rows = _run_json(["--json", "--model-dir", str(model_dir), *(str(files[n]) for n in names)])
    assert code == 0
    by_name = {pathlib.Path(str(r["file"])).name: r for r in rows}
    assert set(by_name) == set(names)
    for row in rows:
        assert {"file", "modality", "metrics", "verdict", "reasons"} <= row.keys()
    assert by_name["good.wav"]["verdict"] in ("pass", "review")
    assert by_name["noisy.flac"]["verdict"] == "fail"
    assert any("snr" in r for r in by_name["noisy.flac"]["reasons"])  # type: ignore[attr-defined]
    assert by_name["photo.png"]["modality"] == "visible"
    assert by_name["photo.png"]["verdict"] == "pass"
    assert by_name["dark.jpg"]["verdict"] == "fail"
    assert by_name["ir.png"]["modality"] == "thermal"
    metrics = by_name["good.wav"]["metrics"]
    assert isinstance(metrics, dict)
    for key in (
        "duration_s",
        "sample_rate",
        "channels",
        "peak_dbfs",
        "rms_dbfs",
        "clipping_ratio",
        "silence_ratio",
        "speech_s",
        "snr_db",
        "loudness_lufs",
        "dnsmos_ovrl",
    ):
        assert key in metrics


def test_unreadable_files_get_an_error_and_exit_4(files: dict[str, pathlib.Path], model_dir: pathlib.Path) -> None:
    args = [
        "--json",
        "--model-dir",
        str(model_dir),
        str(files["corrupt.wav"]),
        str(files["photo.png"]),
        str(files["fake.png"]),
        str(files["notes.txt"]),
        str(files["photo.png"].with_name("missing.wav")),
    ]
    code, rows = _run_json(args)
    assert code == 4
    assert len(rows) == 5
    errors = {pathlib.Path(str(r["file"])).name: str(r.get("error", "")) for r in rows}
    assert "cannot read audio corrupt.wav" in errors["corrupt.wav"]
    assert "cannot decode image fake.png" in errors["fake.png"]
    assert "unsupported file type .txt" in errors["notes.txt"]
    assert "no such file" in errors["missing.wav"]
    assert errors["photo.png"] == ""  # still screened


def test_table_output_and_profile_errors(files: dict[str, pathlib.Path]) -> None:
    runner = CliRunner()
    result = runner.invoke(qc_command, [str(files["photo.png"])])
    assert result.exit_code == 0 and "pass" in result.output and "blur=" in result.output
    result = runner.invoke(qc_command, ["--profile", "nope", str(files["photo.png"])])
    assert result.exit_code == 2 and "unknown profile 'nope'" in result.output
    result = runner.invoke(qc_command, ["--json", "--profile", "camera-ir", str(files["photo.png"])])
    assert result.exit_code == 4
    assert "screens thermal, not visible" in json.loads(result.output)["error"]


def test_models_commands(model_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(models_group, ["list", "--json", "--model-dir", str(model_dir)])
    assert listed.exit_code == 0
    assert {json.loads(line)["name"] for line in listed.output.splitlines()} == {
        "silero-vad",
        "dnsmos",
        "centerface",
        "ppocr-det",
        "ppocr-rec",
    }
    assert runner.invoke(models_group, ["verify", "--model-dir", str(model_dir)]).exit_code == 0
    missing = runner.invoke(models_group, ["verify", "dnsmos", "--model-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert "fieldcap models fetch dnsmos" in missing.output
    unknown = runner.invoke(models_group, ["fetch", "nope", "--model-dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown model 'nope'" in unknown.output
    assert "Traceback" not in unknown.output
