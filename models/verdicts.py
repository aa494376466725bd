"""Turn metrics and a profile into a verdict with reasons a person can act on.

Each check compares one metric with one threshold and, when it trips, adds a sentence of the form
``"<metric> <value> <op> <limit>: <what it means / what to do>"`` with a severity: ``fail``
(re-record / retake now) or ``review`` (a person should look). A metric that could not be computed
(None) trips nothing; checks whose threshold is None are off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from models.screening import MetricValue, Verdict
from models.settings import AudioProfile, ThermalProfile, VisibleProfile

Severity = Literal["fail", "review"]


def _num(value: float) -> str:
    """Short human number: 20, 11.8, 0.5, 0.013."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        text = f"{value:.1f}"
        return text[:-2] if text.endswith(".0") else text
    if magnitude == 0:
        return "0"
    return f"{value:.2g}"


def _pct(value: float) -> str:
    return f"{_num(value * 100)} %"


class Findings:
    """Collects tripped checks; ``verdict()`` is fail > review > pass."""

    def __init__(self, metrics: Mapping[str, MetricValue]) -> None:
        self.metrics = metrics
        self.items: list[tuple[Severity, str]] = []

    def add(self, severity: Severity, reason: str) -> None:
        self.items.append((severity, reason))

    def _value(self, key: str) -> float | None:
        value = self.metrics.get(key)
        if value is None:
            return None
        return float(value)

    def below(
        self,
        key: str,
        limit: float | None,
        severity: Severity,
        label: str,
        why: str,
        *,
        unit: str = "",
        percent: bool = False,
    ) -> None:
        value = self._value(key)
        if limit is None or value is None or value >= limit:
            return
        self.add(
            severity,
            f"{label} {self._show(value, unit, percent)} < {self._show(limit, unit, percent)}: {why}",
        )

    def above(
        self,
        key: str,
        limit: float | None,
        severity: Severity,
        label: str,
        why: str,
        *,
        unit: str = "",
        percent: bool = False,
    ) -> None:
        value = self._value(key)
        if limit is None or value is None or value <= limit:
            return
        self.add(
            severity,
            f"{label} {self._show(value, unit, percent)} > {self._show(limit, unit, percent)}: {why}",
        )

    @staticmethod
    def _show(value: float, unit: str, percent: bool) -> str:
        if percent:
            return _pct(value)
        return f"{_num(value)} {unit}".rstrip()

    def verdict(self) -> tuple[Verdict, list[str]]:
        fails = [r for s, r in self.items if s == "fail"]
        reviews = [r for s, r in self.items if s == "review"]
        if fails:
            return "fail", fails + reviews
        if reviews:
            return "review", reviews
        return "pass", []


def judge_audio(metrics: Mapping[str, MetricValue], p: AudioProfile, findings: Findings) -> None:
    f = findings
    f.below("duration_s", p.min_duration_s, "fail", "duration", "take too short", unit="s")
    f.above("duration_s", p.max_duration_s, "review", "duration", "take unusually long", unit="s")
    silent = p.silence_max_rms_dbfs is not None and (
        metrics.get("rms_dbfs") is None or float(metrics["rms_dbfs"] or 0) < p.silence_max_rms_dbfs
    )
    if silent and metrics.get("duration_s"):
        rms = metrics.get("rms_dbfs")
        shown = "-inf" if rms is None else _num(float(rms))
        f.add(
            "fail",
            f"rms {shown} dBFS < {_num(p.silence_max_rms_dbfs or 0)} dBFS: recording "
            "is silent, check that the microphone is connected, switched on and unmuted",
        )
    else:
        f.below(
            "peak_dbfs",
            p.min_peak_dbfs,
            "fail",
            "peak",
            "too quiet, raise the input gain or move closer to the microphone",
            unit="dBFS",
        )
    f.above(
        "clipping_ratio",
        p.max_clipping_ratio,
        "fail",
        "clipping",
        "clipped, lower the input gain and record again",
        percent=True,
    )
    dc = metrics.get("dc_offset")
    if p.max_dc_offset is not None and dc is not None and abs(float(dc)) > p.max_dc_offset:
        f.add(
            "review",
            f"dc offset {_pct(abs(float(dc)))} > {_pct(p.max_dc_offset)}: "
            "check the preamp or enable its high-pass filter",
        )
    if silent:
        return  # speech, SNR and loudness of a silent take only repeat the same problem
    f.below(
        "speech_s",
        p.min_speech_s,
        "fail",
        "speech",
        "no speech detected, was the prompt read?",
        unit="s",
    )
    f.below("snr_db", p.min_snr_db, "fail", "snr", "too much background noise", unit="dB")
    f.below(
        "wada_snr_db",
        p.min_wada_snr_db,
        "review",
        "wada snr",
        "noisy speech (WADA estimate)",
        unit="dB",
    )
    f.above(
        "silence_ratio",
        p.max_silence_ratio,
        "review",
        "silence",
        "mostly silence, the prompt may have been missed",
        percent=True,
    )
    f.below(
        "edge_silence_s",
        p.min_edge_silence_s,
        "review",
        "edge silence",
        "speech touches the start or end of the take and may be cut off",
        unit="s",
    )
    f.below(
        "loudness_lufs",
        p.min_loudness_lufs,
        "review",
        "loudness",
        "speech is quiet, raise the gain or move closer",
        unit="LUFS",
    )
    f.above(
        "loudness_lufs",
        p.max_loudness_lufs,
        "review",
        "loudness",
        "speech is very loud, lower the gain",
        unit="LUFS",
    )
    f.below(
        "dnsmos_ovrl",
        p.min_dnsmos_ovrl,
        "review",
        "dnsmos ovrl",
        "poor perceived quality (noise, reverberation or distortion)",
    )


BLURRED = "image is blurred, hold the camera steady, focus and retake"


def _judge_blur(p: VisibleProfile, f: Findings) -> None:
    """Blurred when the Laplacian variance is low (little fine detail) and, where the profile sets
    ``max_blur_effect``, re-blurring the image also removes little of its detail: a sharp wall,
    sky or face has little detail but loses most of it to a re-blur, a defocused photo does not."""
    blur, effect = f.metrics.get("blur"), f.metrics.get("blur_effect")
    if p.max_blur_effect is None or effect is None:
        f.below("blur", p.min_blur, "fail", "blur", BLURRED)
        return
    low_detail = p.min_blur is None or (blur is not None and float(blur) < p.min_blur)
    if not low_detail or float(effect) <= p.max_blur_effect:
        return
    shown = f"blur effect {_num(float(effect))} > {_num(p.max_blur_effect)}"
    if p.min_blur is not None and blur is not None:
        shown = f"blur {_num(float(blur))} < {_num(p.min_blur)} and {shown}"
    f.add("fail", f"{shown}: {BLURRED}")


def judge_visible(p: VisibleProfile, f: Findings) -> None:
    f.below("width", p.min_width, "fail", "width", "resolution too low", unit="px")
    f.below("height", p.min_height, "fail", "height", "resolution too low", unit="px")
    _judge_blur(p, f)
    f.below("tenengrad", p.min_tenengrad, "review", "tenengrad", "image looks soft")
    f.above(
        "underexposed_ratio",
        p.max_underexposed_ratio,
        "fail",
        "underexposed",
        "too dark, add light or increase exposure",
        percent=True,
    )
    f.above(
        "overexposed_ratio",
        p.max_overexposed_ratio,
        "fail",
        "overexposed",
        "over-exposed, reduce exposure or avoid direct light",
        percent=True,
    )
    f.below(
        "mean_luma",
        p.min_mean_luma,
        "fail",
        "mean luma",
        "too dark, add light or increase exposure",
    )
    f.above("mean_luma", p.max_mean_luma, "fail", "mean luma", "over-exposed, reduce exposure")
    f.above("faces", p.max_faces, "review", "faces", "people are visible, redact or retake without them")


def judge_thermal(metrics: Mapping[str, MetricValue], p: ThermalProfile, f: Findings) -> None:
    f.above(
        "dead_pixel_ratio",
        p.max_dead_pixel_ratio,
        "fail",
        "dead pixels",
        "sensor has dead pixels or the frame is truncated",
        percent=True,
    )
    f.above(
        "saturated_ratio",
        p.max_saturated_ratio,
        "fail",
        "saturated",
        "scene too hot for this gain mode, switch to low gain",
        percent=True,
    )
    f.below(
        "min_c",
        p.min_temp_c,
        "fail",
        "min temperature",
        "implausible, check units and radiometric mode",
        unit="°C",
    )
    f.above(
        "max_c",
        p.max_temp_c,
        "fail",
        "max temperature",
        "implausible, check units and radiometric mode",
        unit="°C",
    )
    f.below(
        "flat",
        p.min_std_c,
        "fail",
        "std",
        "flat frame, shutter closed or flat-field correction in progress",
        unit="°C",
    )
    if metrics.get("frozen") == 1:
        f.add(
            "fail",
            f"frame difference {_num(float(metrics.get('frame_diff_c') or 0))} °C <= "
            f"{_num(p.frozen_max_diff_c or 0)} °C: frozen frame, the camera stopped "
            "updating",
        )
    f.above(
        "stuck_pixel_ratio",
        p.max_stuck_pixel_ratio,
        "review",
        "stuck pixels",
        "isolated hot/cold pixels, the sensor may need a flat-field correction",
        percent=True,
    )
    f.below(
        "ffc_age_s",
        p.min_settle_s,
        "review",
        "time since FFC",
        "sensor still settling after flat-field correction",
        unit="s",
    )
    f.below(
        "ffc_step_age_s",
        p.min_settle_s,
        "review",
        "time since offset step",
        "sensor still settling after a flat-field correction seen in the frames",
        unit="s",
    )
    f.above(
        "offset_drift_c_per_s",
        p.max_offset_drift_c_per_s,
        "review",
        "offset drift",
        "sensor still settling (flat-field correction or warm-up), wait for readings to stabilise",
        unit="°C/s",
    )
