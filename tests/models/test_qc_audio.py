"""Audio screening on real synthetic speech (espeak-ng, English and Mandarin) mixed with noise."""

from __future__ import annotations

import pathlib
import types
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest

from models import MediaError, ModelMissing, QcSettings, Screener
from models.audio_metrics import loudness_lufs

Speech = Callable[[str], npt.NDArray[np.float32]]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr", [5, 10, 15, 20])
def test_vad_snr_within_3_db(
    screener: Screener,
    speech: Speech,
    material: types.SimpleNamespace,
    lang: str,
    kind: str,
    snr: int,
) -> None:
    noisy = material.mix(material.take(speech(lang)), snr, kind, seed=snr)
    result = screener.audio(noisy, material.rate)
    assert result.metrics["snr_db"] is not None
    assert abs(float(result.metrics["snr_db"]) - snr) <= 3.0, result.metrics
    if snr < 17:
        assert result.verdict == "fail"
        assert any(r.startswith("snr ") and "background noise" in r for r in result.reasons)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_snr_orders_takes_and_clean_take_passes(
    screener: Screener, speech: Speech, material: types.SimpleNamespace, lang: str
) -> None:
    clean = material.take(speech(lang))
    values = []
    for snr in (5, 15, 25, 30):
        result = screener.audio(material.mix(clean, snr, "pink", seed=1), material.rate)
        values.append(float(result.metrics["snr_db"] or 0))
        wada = result.metrics["wada_snr_db"]
        assert wada is not None
    assert values == sorted(values)
    assert values[-1] >= 25
    result = screener.audio(material.mix(clean, 35, "pink"), material.rate)
    assert result.verdict == "pass", result.reasons


def test_speech_segments_trim_points_and_provenance(
    screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    sentence = speech("en")
    result = screener.audio(material.take(sentence, lead_s=1.0, tail_s=1.0), material.rate)
    segments = [a for a in result.annotations if a.kind == "speech_segment"]
    assert segments and all(a.model == "silero-vad" and a.model_sha256 for a in segments)
    voiced = np.flatnonzero(np.abs(sentence) > 0.01)  # where espeak's waveform really is
    start, end = 1.0 + voiced[0] / material.rate, 1.0 + voiced[-1] / material.rate
    assert segments[0].t_start_s == pytest.approx(start, abs=0.15)
    assert segments[-1].t_end_s == pytest.approx(end, abs=0.2)
    first, last = segments[0].t_start_s or 0.0, segments[-1].t_end_s or 0.0
    assert result.metrics["trim_start_s"] == pytest.approx(first - 0.25, abs=1e-3)
    assert result.metrics["trim_end_s"] == pytest.approx(last + 0.25, abs=1e-3)
    assert {a.name for a in result.analyzers} >= {"fieldcap.audio-signal", "silero-vad"}
    assert 0.2 < float(result.metrics["silence_ratio"] or 0) < 0.6


def test_int16_and_float_input_agree(screener: Screener, speech: Speech, material: types.SimpleNamespace) -> None:
    noisy = material.mix(material.take(speech("en")), 25, "white")
    as_int = np.round(noisy * 32767).astype(np.int16)
    a = screener.audio(noisy, material.rate).metrics
    b = screener.audio(as_int, material.rate).metrics
    for key in ("peak_dbfs", "rms_dbfs", "snr_db", "loudness_lufs"):
        assert float(a[key] or 0) == pytest.approx(float(b[key] or 0), abs=0.1), key


def test_clipped_take_fails_with_clipping_reason(
    screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    hot = np.clip(material.take(speech("en")) * 6.0, -1.0, 1.0)
    result = screener.audio(hot, material.rate)
    assert result.verdict == "fail"
    assert float(result.metrics["clipping_ratio"] or 0) > 0.001
    assert any(r.startswith("clipping") and "lower the input gain" in r for r in result.reasons)


@pytest.mark.parametrize("level", [0.0, 1e-5])
def test_silent_take_fails_as_silent(screener: Screener, material: types.SimpleNamespace, level: float) -> None:
    quiet = (material.noise("white", 2 * material.rate, 3) * level).astype(np.float32)
    result = screener.audio(quiet, material.rate)
    assert result.verdict == "fail"
    assert any("recording is silent" in r for r in result.reasons), result.reasons
    assert len(result.reasons) == 1  # no pile of follow-on reasons


def test_too_quiet_take_fails(screener: Screener, speech: Speech, material: types.SimpleNamespace) -> None:
    quiet = material.take(speech("en")) * 0.05  # peak ≈ -32 dBFS
    result = screener.audio(quiet, material.rate)
    assert result.verdict == "fail"
    assert any(r.startswith("peak") and "too quiet" in r for r in result.reasons)


def test_multichannel_reports_worst_channel(
    screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    near = material.mix(material.take(speech("en")), 30, "white")
    stereo = np.stack([near, np.zeros_like(near)], axis=1)
    result = screener.audio(stereo, material.rate)
    assert result.metrics["channels"] == 2
    assert result.metrics["rms_dbfs"] is None  # the dead channel is the worst one
    assert result.verdict == "fail"
    assert any("recording is silent" in r for r in result.reasons)


def test_loudness_matches_pyloudnorm_and_short_takes_get_a_value(
    material: types.SimpleNamespace,
) -> None:
    x = (material.noise("pink", 3 * material.rate, 5) * 0.1).astype(np.float32)
    reference = pyloudnorm.Meter(material.rate).integrated_loudness(x.astype(np.float64))
    assert loudness_lufs(x[:, None], material.rate)[0] == pytest.approx(reference, abs=0.01)
    short = x[: int(0.2 * material.rate)]
    value = loudness_lufs(short[:, None], material.rate)[0]
    assert np.isfinite(value) and value == pytest.approx(reference, abs=1.0)


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros(0, np.float32), 48000, "empty"),
        (np.zeros((10, 2, 2), np.float32), 48000, "shape"),
        (np.zeros(100, np.uint8), 48000, "int16"),
        (np.array([0.0, np.nan] * 100, np.float32), 48000, "NaN"),
        (np.zeros(1000, np.float32), 10, "sample rate"),
        ([0.0] * 10, 48000, "numpy"),
    ],
)
def test_bad_audio_input_is_a_clear_error(screener: Screener, samples: object, rate: int, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        screener.audio(samples, rate)  # type: ignore[arg-type]


def test_missing_models_give_review_with_the_fix(
    tmp_path: pathlib.Path, speech: Speech, material: types.SimpleNamespace
) -> None:
    result = Screener(model_dir=tmp_path).audio(material.take(speech("en")), material.rate)
    assert result.verdict == "review"
    assert any("run: fieldcap models fetch silero-vad" in r for r in result.reasons)
    strict = QcSettings.model_validate({"profiles": {"booth-speech": {"on_missing_model": "error"}}})
    with pytest.raises(ModelMissing, match="fieldcap models fetch silero-vad"):
        Screener(strict, model_dir=tmp_path).audio(material.take(speech("en")), material.rate)


def test_dnsmos_scores_clean_above_noisy(
    full_screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    clean = material.take(speech("en"))
    good = full_screener.audio(material.mix(clean, 40, "pink"), material.rate).metrics
    bad = full_screener.audio(material.mix(clean, 0, "white"), material.rate).metrics
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"):
        assert 1.0 <= float(good[key] or 0) <= 5.0
    assert float(good["dnsmos_bak"] or 0) > float(bad["dnsmos_bak"] or 0) + 1.0
    assert float(good["dnsmos_ovrl"] or 0) > float(bad["dnsmos_ovrl"] or 0)


def test_session_mos_over_short_takes(full_screener: Screener, speech: Speech, material: types.SimpleNamespace) -> None:
    sentence = speech("zh")
    takes = [sentence[i : i + material.rate] for i in range(0, len(sentence) - material.rate, material.rate)]
    scores = full_screener.session_mos(takes, material.rate)
    assert 1.0 <= scores["dnsmos_ovrl"] <= 5.0


def test_speech_without_pauses_falls_back_to_wada(
    screener: Screener, speech: Speech, material: types.SimpleNamespace
) -> None:
    sentence = speech("zh")
    voiced = np.flatnonzero(np.abs(sentence) > 0.01)
    tight = sentence[voiced[0] : voiced[-1]]  # no lead-in, no tail: nothing to measure noise in
    result = screener.audio(material.mix(tight, 8, "white"), material.rate)
    assert result.metrics["snr_db"] == result.metrics["wada_snr_db"]
    assert result.verdict == "fail"
    assert any(r.startswith("snr ") for r in result.reasons)
