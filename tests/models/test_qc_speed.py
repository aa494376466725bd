"""The fast audio QC paths compute what the reference paths compute.

Silero VAD runs as a rebuilt sequence graph (models/silero_graph.py), decimation to 16 kHz as a
banded GEMM (models/resample.py) and K-weighting in float32: each is compared here with the
published graph run chunk by chunk, ``scipy.signal.resample_poly`` and pyloudnorm.
"""

from __future__ import annotations

import pathlib
import types
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pyloudnorm
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.signal import resample_poly
from scipy.signal import sosfilt as scipy_sosfilt

from models import Screener, graph_build, iir, resample, silero_graph, vad
from models.audio_metrics import _k_weighting, loudness_lufs, programme_loudness_lufs
from models.registry import ModelManifest
from models.runner import ModelSession

Speech = Callable[[str], npt.NDArray[np.float32]]


def _two_mics(speech: Speech, material: types.SimpleNamespace) -> npt.NDArray[np.float32]:
    """A near mic (clean-ish) and a mid mic (quieter, noisier, delayed) at 16 kHz."""
    near = material.mix(material.take(speech("en")), 25, "pink", seed=3)
    mid = np.roll(material.mix(material.take(speech("en")) * 0.4, 8, "white", seed=4), 240)
    return resample.to_16k(np.stack([near, mid], axis=1).astype(np.float32), material.rate)


def test_sequence_graph_matches_published_graph_on_speech(
    screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    session = screener.session("silero-vad")
    sequence = vad.sequence_session(session)
    assert sequence is not None, vad._unavailable
    audio16 = _two_mics(speech, material)
    reference = vad.chunkwise_probabilities(session, audio16)
    assert reference.max() > 0.9 and reference.min() < 0.1  # speech and pauses both present
    for block in (100_000, vad.SEQUENCE_BLOCK, 37):  # one call; the default; many calls carrying the LSTM state
        fast = vad.sequence_probabilities(sequence, audio16, block=block)
        assert fast.shape == reference.shape
        assert float(np.max(np.abs(fast - reference))) <= 1e-4
    assert np.array_equal(vad.speech_probabilities(session, audio16), vad.sequence_probabilities(sequence, audio16))
    assert sequence.sha256 == session.sha256 and sequence.manifest is session.manifest  # provenance


def _perturbed(session: ModelSession, sequence_bytes: bytes) -> ModelSession:
    model = onnx.load_from_string(sequence_bytes)
    for init in model.graph.initializer:
        if init.name.startswith("decb"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    built = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return ModelSession(session.manifest, built, session.sha256)


def test_probe_check_tells_a_wrong_graph_from_the_right_one(screener: Screener) -> None:
    session = screener.session("silero-vad")
    assert session.path is not None
    built = silero_graph.build_sequence_model(session.path)
    right = session.derived(vad.SEQUENCE_VARIANT, silero_graph.build_sequence_model)
    assert vad.probe_difference(session, right) <= vad.PROBE_TOLERANCE
    assert vad.probe_difference(session, _perturbed(session, built)) > 100 * vad.PROBE_TOLERANCE


def _not_silero(path: pathlib.Path) -> None:
    """A model with Silero's interface but not its structure: p = sigmoid(40 * mean|x|)."""
    nodes = [
        helper.make_node("Abs", ["input"], ["abs"]),
        helper.make_node("ReduceMean", ["abs"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["level", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
        helper.make_node("Identity", ["state"], ["stateN"]),
        helper.make_node("Cast", ["sr"], ["unused"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "not-silero",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 576]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "B", 128]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "B", 128]),
        ],
        [numpy_helper.from_array(np.array(40.0, np.float32), "gain")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_unknown_vad_graph_falls_back_to_chunk_calls(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "not-silero.onnx"
    _not_silero(path)
    with pytest.raises(silero_graph.SequenceGraphError, match="If"):
        silero_graph.build_sequence_model(path)
    manifest = ModelManifest.model_validate(
        {"name": "not-silero", "version": "0", "kind": "vad", "license": "MIT", "file": path.name, "sha256": "0" * 64}
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ModelSession(manifest, ort.InferenceSession(str(path), options), manifest.sha256, path)
    assert vad.sequence_session(session) is None
    assert "no If" in vad._unavailable[("0" * 64, tuple(session.providers))]
    audio = np.zeros((32 * 512, 1), np.float32)
    audio[16 * 512 :] = 0.2
    probs = vad.speech_probabilities(session, audio)
    assert np.array_equal(probs, vad.chunkwise_probabilities(session, audio))
    assert probs[:10].max() < 0.6 and probs[-10:].min() > 0.99  # loud half scored as "speech"


@pytest.mark.parametrize("factor", [2, 3, 6, 12])
@pytest.mark.parametrize("n", [1, 61, 4801, 123_457])
def test_decimation_equals_resample_poly(factor: int, n: int) -> None:
    rng = np.random.default_rng(n + factor)
    x = (rng.standard_normal((n, 2)) * 0.3).astype(np.float32)
    x[:, 1] += np.sin(np.arange(n) * 0.9 * np.pi / factor).astype(np.float32)  # near the cutoff
    ours = resample.decimate(x, factor)
    reference = resample_poly(x, 1, factor, axis=0)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert float(np.max(np.abs(ours - reference))) < 1e-5


def test_to_16k_for_other_rates_and_anti_aliasing() -> None:
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[:, None]
    out = resample.to_16k(tone, 44100)  # not an integer ratio: soxr
    assert out.shape == (16000, 1)
    alias = np.sin(2 * np.pi * 11000 * np.arange(48000) / 48000).astype(np.float32)[:, None]
    folded = resample.to_16k(alias, 48000)  # 11 kHz > 8 kHz Nyquist: must be filtered out
    assert float(np.sqrt(np.mean(folded[1000:-1000] ** 2))) < 1e-3
    assert resample.to_16k(tone, 16000) is tone


@pytest.mark.parametrize("rate", [16000, 44100, 48000, 96000, 192000])
def test_float32_loudness_matches_pyloudnorm(material: types.SimpleNamespace, rate: int) -> None:
    rng = np.random.default_rng(rate)
    n = 4 * rate
    bursts = (rng.standard_normal(n) * (np.sin(np.arange(n) * 2 * np.pi / rate) > 0.3)).astype(np.float32) * 0.2
    pink = (material.noise("pink", n, 7) * 0.02).astype(np.float32)
    for x in (bursts, pink, bursts + pink):
        reference = pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
        assert loudness_lufs(x[:, None], rate)[0] == pytest.approx(reference, abs=0.01)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_programme_loudness_of_several_channels_matches_pyloudnorm(material: types.SimpleNamespace, rate: int) -> None:
    rng = np.random.default_rng(rate)
    n = 3 * rate
    near = (rng.standard_normal(n) * (np.sin(np.arange(n) * 2 * np.pi / rate) > 0.3)).astype(np.float32) * 0.2
    mid = (np.roll(near, 40) * 0.3 + material.noise("pink", n, 3) * 0.02).astype(np.float32)
    x = np.stack([near, mid], axis=1)
    reference = pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
    assert programme_loudness_lufs(x, rate) == pytest.approx(reference, abs=0.01)
    assert programme_loudness_lufs(x[: rate // 10], rate) > -70  # shorter than a gating block: tiled


@pytest.mark.parametrize("rate", [16000, 44100, 48000, 192000])
def test_k_weighting_and_iir_match_pyloudnorm_and_scipy(rate: int) -> None:
    stages = [
        pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    ]
    expected = np.array([np.concatenate([st.b, st.a]) for st in stages])
    sos = _k_weighting(rate)
    assert np.allclose(sos, expected, rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(rate)
    for n in (1, 127, 128, 129, 3 * rate + 17):
        x = rng.standard_normal(n)
        reference = scipy_sosfilt(sos, x)
        assert np.allclose(iir.sosfilt(sos, x), reference, rtol=0, atol=1e-9 * max(1.0, np.abs(reference).max()))
        ours32 = iir.sosfilt(sos, x.astype(np.float32))
        assert ours32.dtype == np.float32
        assert float(np.max(np.abs(ours32 - reference))) <= 1e-5 * max(1.0, float(np.abs(reference).max()))


def test_decimation_without_its_graph_uses_numpy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(kind: str, arg: str) -> bytes:
        calls.append(arg)
        raise graph_build.GraphBuildError("no child process here")

    monkeypatch.setattr(graph_build, "build", broken)
    resample._session.cache_clear()
    try:
        x = (np.random.default_rng(3).standard_normal((48_001, 2)) * 0.3).astype(np.float32)
        for _ in range(2):
            ours = resample.decimate(x, 3)
            assert float(np.max(np.abs(ours - resample_poly(x, 1, 3, axis=0)))) < 1e-5
        assert calls == ["3"]  # the failure is remembered, not retried for every take
    finally:
        resample._session.cache_clear()
