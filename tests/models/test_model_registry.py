"""Model registry and runner: pinned manifests, fetch, tamper and missing-model errors."""

from __future__ import annotations

import pathlib
import shutil

import onnxruntime as ort
import pytest

from models import FetchError, ManifestError, ModelLoadError, ModelMissing, ModelTampered, registry
from models.runner import OnnxRunner, resolve_provider


def test_builtin_manifests_pin_the_models() -> None:
    manifests = registry.load_manifests(pathlib.Path("/nonexistent"))
    licenses = {
        "silero-vad": "MIT",
        "dnsmos": "MIT",
        "centerface": "MIT",
        "ppocr-det": "Apache-2.0",
        "ppocr-rec": "Apache-2.0",
    }
    assert set(manifests) == set(licenses)
    for manifest in manifests.values():
        assert isinstance(manifest.source, registry.WheelSource)
        assert "==" in manifest.source.package
        assert manifest.license == licenses[manifest.name]


def test_fetched_models_verify(model_dir: pathlib.Path) -> None:
    assert {s.state for s in registry.verify(None, model_dir)} == {"ok"}
    assert {s.state for s in registry.list_models(model_dir)} == {"present"}


def test_missing_model_names_the_fix(tmp_path: pathlib.Path) -> None:
    manifest = registry.get_manifest("silero-vad", tmp_path)
    with pytest.raises(ModelMissing, match="run: fieldcap models fetch silero-vad"):
        registry.model_path(manifest, tmp_path)
    status = registry.verify(["silero-vad"], tmp_path)[0]
    assert status.state == "missing" and "fieldcap models fetch silero-vad" in status.detail


def test_tampered_model_is_detected(model_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    manifest = registry.get_manifest("silero-vad", tmp_path)
    copy = tmp_path / manifest.file
    shutil.copyfile(model_dir / manifest.file, copy)
    assert registry.verify(["silero-vad"], tmp_path)[0].state == "ok"
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    status = registry.verify(["silero-vad"], tmp_path)[0]
    assert status.state == "tampered"
    with pytest.raises(ModelTampered, match="fieldcap models fetch silero-vad --force"):
        OnnxRunner("cpu").load(manifest, tmp_path)


def test_fetch_refuses_a_source_that_does_not_match_the_pin(tmp_path: pathlib.Path) -> None:
    (tmp_path / "manifests").mkdir()
    source = tmp_path / "model.bin"
    source.write_bytes(b"not the pinned bytes")
    (tmp_path / "manifests" / "x.toml").write_text(
        f'name = "x"\nversion = "1"\nkind = "other"\nlicense = "MIT"\nfile = "x.onnx"\n'
        f'sha256 = "{"0" * 64}"\n[source]\npath = "{source}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ModelTampered, match="refusing to install"):
        registry.fetch(["x"], tmp_path)
    assert not (tmp_path / "x.onnx").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_fetch_reports_pip_failure(tmp_path: pathlib.Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "y.toml").write_text(
        'name = "y"\nversion = "1"\nkind = "other"\nlicense = "MIT"\nfile = "y.onnx"\n'
        f'sha256 = "{"0" * 64}"\n[source]\npackage = "fieldcap-no-such-package-4711==0.0.1"\n'
        'member = "y.onnx"\n',
        encoding="utf-8",
    )
    with pytest.raises(FetchError, match="pip download fieldcap-no-such-package-4711"):
        registry.fetch(["y"], tmp_path)


def test_bad_manifest_names_file_and_field(tmp_path: pathlib.Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "bad.toml").write_text(
        'name = "bad"\nversion = "1"\nkind = "other"\nlicense = "MIT"\nfile = "b.onnx"\nsha256 = "xyz"\n',
        encoding="utf-8",
    )
    with pytest.raises(ManifestError, match=r"bad\.toml: sha256"):
        registry.load_manifests(tmp_path)
    with pytest.raises(ManifestError, match="unknown model 'nope'"):
        registry.get_manifest("nope", pathlib.Path("/nonexistent"))


def test_provider_choice() -> None:
    assert resolve_provider("cpu") == ["CPUExecutionProvider"]
    auto = resolve_provider("auto")
    assert auto[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelLoadError, match="onnxruntime-gpu"):
            resolve_provider("cuda")


def test_one_session_per_model_per_process(model_dir: pathlib.Path) -> None:
    manifest = registry.get_manifest("silero-vad", model_dir)
    first = OnnxRunner("cpu", threads=1).load(manifest, model_dir)
    second = OnnxRunner("cpu", threads=1).load(manifest, model_dir)
    assert first is second
    assert first.input_names == ["input", "state", "sr"]
