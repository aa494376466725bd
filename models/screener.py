"""``Screener``: the one entry point the daemon's QC worker, ``fieldcap qc`` and the booth's instant check call.

Create one per process. It resolves QC profiles, loads each ONNX model once (lazily, on the first
capture that needs it), runs the signal metrics and the analyzers, and returns a ``Screening``.

Multi-channel audio: every metric is computed per channel and the *worst* channel is reported
(highest peak, clipping and |DC|; lowest RMS, loudness, SNR and DNSMOS), because one bad
microphone makes the take a retake. Speech segments are shared: a chunk is speech when any
channel's VAD says so (near and mid microphones hear the same speaker).

``snr_db`` is the VAD-based SNR (speech-segment power against pause power). When the take has
speech but no pause long enough to measure noise in, it falls back to the WADA-SNR estimate so
that the SNR check still applies; ``wada_snr_db`` always holds the WADA value.

SNR values are clamped to -30..100 dB: below -30 the "speech" is noise, above 100 the pauses are
digital silence (synthetic audio) and the ratio carries no information.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from models import audio_metrics as am
from models import detector as det
from models import dnsmos, faces, image_metrics, ocr, resample, thermal_metrics, vad
from models.errors import ManifestError, MediaError, ModelError
from models.registry import ModelManifest, default_cache_dir, load_manifests
from models.runner import ModelSession, OnnxRunner
from models.screening import AnalyzerInfo, Annotation, MetricValue, Screening
from models.settings import AudioProfile, QcProfile, QcSettings, ThermalProfile, VisibleProfile
from models.thermal_settling import SettlingTracker
from models.verdicts import Findings, judge_audio, judge_thermal, judge_visible

SIGNAL_VERSION = "1"
# 2: blur_effect (re-blur ratio) next to the Laplacian variance
# 3: blur, Tenengrad and exposure estimated from half the rows (image_metrics.screening_bands)
IMAGE_SIGNAL_VERSION = "3"
SNR_RANGE = (-30.0, 100.0)
MAX_CHANNELS = 64
T = TypeVar("T")


def _finite(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _worst(values: Sequence[float] | npt.NDArray[np.float64] | None, pick: Callable[..., Any]) -> float | None:
    if values is None:
        return None
    known = [float(v) for v in values if not np.isnan(v)]
    return _finite(float(pick(known))) if known else None  # -inf (silence) can be the worst


def _snr(values: Sequence[float] | npt.NDArray[np.float64] | None) -> float | None:
    if values is None:
        return None
    clean = [float(np.clip(v, *SNR_RANGE)) for v in values if not np.isnan(v)]
    return round(min(clean), 2) if clean else None


class Screener:
    """Screens audio takes, visible images and thermal frames against QC profiles."""

    def __init__(
        self,
        settings: QcSettings | None = None,
        model_dir: pathlib.Path | None = None,
        provider: str = "auto",
    ) -> None:
        self.settings = settings or QcSettings()
        self.model_dir = pathlib.Path(model_dir or self.settings.model_dir or default_cache_dir()).expanduser()
        chosen = provider if provider != "auto" else self.settings.provider
        self.runner = OnnxRunner(chosen, self.settings.threads)
        self._manifests: dict[str, ModelManifest] | None = None
        self._lock = threading.Lock()
        # analyzers that could not run (model missing or unloadable) -> why; callers may clear it
        self.not_run: dict[str, str] = {}
        # id(profile) -> (profile, its fingerprint): the settings and their profiles are frozen,
        # and hashing a profile's JSON dump cost ~80 us per screened image (keeping the profile
        # in the value keeps its id from being reused)
        self._fingerprints: dict[int, tuple[QcProfile, str]] = {}

    def _fingerprint(self, prof: QcProfile) -> str:
        cached = self._fingerprints.get(id(prof))
        if cached is not None and cached[0] is prof:
            return cached[1]
        fingerprint = prof.fingerprint()
        self._fingerprints[id(prof)] = (prof, fingerprint)
        return fingerprint

    # --- models -------------------------------------------------------------------------------

    def manifests(self) -> dict[str, ModelManifest]:
        with self._lock:
            if self._manifests is None:
                self._manifests = load_manifests(self.model_dir)
            return self._manifests

    def session(self, name: str) -> ModelSession:
        """The loaded model ``name``; raises a ModelError subclass naming the fix."""
        manifests = self.manifests()
        if name not in manifests:
            raise ManifestError(f"unknown model {name!r} (known: {', '.join(sorted(manifests))})")
        return self.runner.load(manifests[name], self.model_dir)

    def _optional(
        self, name: str, profile: QcProfile, findings: Findings, used: list[AnalyzerInfo]
    ) -> ModelSession | None:
        try:
            loaded = self.session(name)
        except ModelError as exc:
            if profile.on_missing_model == "error":
                raise
            self.not_run[name] = str(exc)
            if profile.on_missing_model == "review":
                findings.add("review", f"{name} not run: {exc}")
            return None
        used.append(AnalyzerInfo(name, loaded.manifest.version, loaded.sha256))
        return loaded

    # --- audio --------------------------------------------------------------------------------

    def audio(self, samples: npt.NDArray[Any], sample_rate: int, profile: str | None = None) -> Screening:
        """Screen one take: int16/int32/float samples, shape (n,) or (n, channels)."""
        name, prof = self.settings.profile(profile, "audio")
        assert isinstance(prof, AudioProfile)
        x = _check_audio(samples, sample_rate)
        n, channels = x.shape
        duration = n / sample_rate
        metrics: dict[str, MetricValue] = {
            "duration_s": round(duration, 4),
            "sample_rate": int(sample_rate),
            "channels": int(channels),
            "peak_dbfs": _round(_worst(am.peak_dbfs(x), max)),
            "rms_dbfs": _round(_worst(am.rms_dbfs(x), min)),
            "clipping_ratio": _round(_worst(am.clipping_ratio(x, prof.clip_run_samples), max), 6),
            "dc_offset": _round(_worst(am.dc_offset(x), lambda v: max(v, key=abs)), 6),
            "silence_ratio": None,
            "speech_s": None,
            "snr_db": None,
            "wada_snr_db": None,
            "loudness_lufs": _round(_worst(am.loudness_lufs(x, sample_rate), min)),
            "dnsmos_ovrl": None,
            "dnsmos_sig": None,
            "dnsmos_bak": None,
            "trim_start_s": None,
            "trim_end_s": None,
            "edge_silence_s": None,
        }
        used = [AnalyzerInfo("fieldcap.audio-signal", SIGNAL_VERSION)]
        annotations: list[Annotation] = []
        findings = Findings(metrics)
        audio16 = resample.to_16k(x, sample_rate)  # VAD, WADA and DNSMOS all work at 16 kHz
        speech16 = audio16
        audible = metrics["rms_dbfs"] is not None and (
            prof.silence_max_rms_dbfs is None or float(metrics["rms_dbfs"]) >= prof.silence_max_rms_dbfs
        )
        if prof.use_vad and audible:
            session = self._optional("silero-vad", prof, findings, used)
            if session is not None:
                segments = self._speech(
                    session,
                    x=x,
                    audio16=audio16,
                    sample_rate=sample_rate,
                    prof=prof,
                    metrics=metrics,
                    annotations=annotations,
                )
                if segments:
                    rate16 = vad.VAD_RATE
                    speech16 = audio16[int(segments[0][0] * rate16) : int(segments[-1][1] * rate16)]
        metrics["wada_snr_db"] = _snr(
            [v for v in (am.wada_snr_db(speech16[:, c]) for c in range(channels)) if v is not None]
        )
        if metrics["snr_db"] is None and metrics["speech_s"]:
            # speech fills the take: no pause to measure noise in, so WADA stands in
            metrics["snr_db"] = metrics["wada_snr_db"]
        del x, speech16  # DNSMOS needs only audio16: free the full-rate copy before its activations
        if prof.use_dnsmos and audible:
            session = self._optional("dnsmos", prof, findings, used)
            if session is not None:
                scored = dnsmos.score(session, audio16, rows_per_tile=self.settings.dnsmos_tile_rows)
                worst = min(scored, key=lambda s: s.ovrl)
                metrics.update(
                    dnsmos_ovrl=round(worst.ovrl, 3),
                    dnsmos_sig=round(worst.sig, 3),
                    dnsmos_bak=round(worst.bak, 3),
                )
        judge_audio(metrics, prof, findings)
        verdict, reasons = findings.verdict()
        return Screening("audio", metrics, verdict, reasons, name, self._fingerprint(prof), annotations, used)

    def _speech(
        self,
        session: ModelSession,
        *,
        x: npt.NDArray[np.float32],
        audio16: npt.NDArray[np.float32],
        sample_rate: int,
        prof: AudioProfile,
        metrics: dict[str, MetricValue],
        annotations: list[Annotation],
    ) -> list[tuple[float, float]]:
        """VAD-derived metrics and annotations; returns the speech segments (seconds)."""
        duration = x.shape[0] / sample_rate
        result = vad.detect(
            session,
            audio16,
            duration,
            threshold=prof.vad_threshold,
            min_speech_s=prof.vad_min_speech_s,
            min_silence_s=prof.vad_min_silence_s,
        )
        speech = sum(e - s for s, e in result.segments)
        metrics["speech_s"] = round(speech, 3)
        metrics["silence_ratio"] = round(1.0 - speech / duration, 4) if duration else None
        manifest = session.manifest
        step = vad.CHUNK / vad.VAD_RATE
        for start, end in result.segments:
            probs = result.probabilities[int(start / step) : max(int(start / step) + 1, int(end / step))]
            annotations.append(
                Annotation(
                    kind="speech_segment",
                    label="speech",
                    model=manifest.name,
                    model_version=manifest.version,
                    model_sha256=session.sha256,
                    score=round(float(probs.mean()), 3),
                    t_start_s=start,
                    t_end_s=end,
                )
            )
        if not result.segments:
            return []
        metrics["snr_db"] = _snr(am.vad_snr_db(x, sample_rate, result.segments))
        first, last = result.segments[0][0], result.segments[-1][1]
        metrics["edge_silence_s"] = round(max(0.0, min(first, duration - last)), 3)
        trim_start = round(max(0.0, first - prof.trim_padding_s), 3)
        trim_end = round(min(duration, last + prof.trim_padding_s), 3)
        metrics["trim_start_s"], metrics["trim_end_s"] = trim_start, trim_end
        annotations.append(
            Annotation(
                kind="trim",
                label="keep",
                model="fieldcap.trim",
                model_version=SIGNAL_VERSION,
                t_start_s=trim_start,
                t_end_s=trim_end,
            )
        )
        return result.segments

    def session_mos(self, takes: Sequence[npt.NDArray[Any]], sample_rate: int) -> dict[str, float]:
        """DNSMOS over several (short) mono takes joined end to end, e.g. a whole booth session."""
        if not takes:
            raise MediaError("no takes to score")
        mono = [_check_audio(t, sample_rate).mean(axis=1) for t in takes]
        scores = dnsmos.score_concatenated(
            self.session("dnsmos"), mono, sample_rate, rows_per_tile=self.settings.dnsmos_tile_rows
        )
        return {"dnsmos_ovrl": scores.ovrl, "dnsmos_sig": scores.sig, "dnsmos_bak": scores.bak}

    # --- visible ------------------------------------------------------------------------------

    def image(self, bgr: npt.NDArray[Any], profile: str | None = None) -> Screening:
        """Screen a visible image: uint8 HxWx3 BGR (or HxW gray)."""
        name, prof = self.settings.profile(profile, "visible")
        assert isinstance(prof, VisibleProfile)
        reblur_below = None if prof.max_blur_effect is None else (prof.min_blur or float("inf"))
        m = image_metrics.measure(bgr, prof.blur_width, prof.dark_level, prof.bright_level, reblur_below=reblur_below)
        metrics: dict[str, MetricValue] = {
            "width": m.width,
            "height": m.height,
            "blur": round(m.blur, 3),
            "blur_effect": None if m.blur_effect is None else round(m.blur_effect, 4),
            "tenengrad": round(m.tenengrad, 3),
            "mean_luma": round(m.mean_luma, 3),
            "underexposed_ratio": round(m.underexposed_ratio, 6),
            "overexposed_ratio": round(m.overexposed_ratio, 6),
        }
        used = [AnalyzerInfo("fieldcap.image-signal", IMAGE_SIGNAL_VERSION)]
        annotations: list[Annotation] = []
        findings = Findings(metrics)
        if prof.detect_faces:
            session = self._optional("centerface", prof, findings, used)
            if session is not None:
                boxes = faces.detect_faces(session, bgr, prof.face_threshold)
                metrics["faces"] = len(boxes)
                annotations.extend(
                    Annotation(
                        kind="face",
                        label="face",
                        score=round(b.score, 3),
                        geometry=b.geometry(),
                        model=session.manifest.name,
                        model_version=session.manifest.version,
                        model_sha256=session.sha256,
                    )
                    for b in boxes
                )
        for detector_name in prof.detectors:
            session = self._optional(detector_name, prof, findings, used)
            if session is None:
                continue
            for d in det.detect(session, bgr):
                annotations.append(
                    Annotation(
                        kind="detection",
                        label=d.label,
                        score=round(d.score, 3),
                        geometry=d.geometry(),
                        model=session.manifest.name,
                        model_version=session.manifest.version,
                        model_sha256=session.sha256,
                    )
                )
        if prof.detect_text:
            annotations.extend(self._text(bgr, prof, metrics, findings, used))
        judge_visible(prof, findings)
        verdict, reasons = findings.verdict()
        return Screening("visible", metrics, verdict, reasons, name, self._fingerprint(prof), annotations, used)

    def _text(
        self,
        bgr: npt.NDArray[Any],
        prof: VisibleProfile,
        metrics: dict[str, MetricValue],
        findings: Findings,
        used: list[AnalyzerInfo],
    ) -> list[Annotation]:
        """PP-OCR text lines as ``ocr_text`` annotations. The row's model is the recogniser (it
        produced the label and score); ``geometry`` also names the detector that drew the box."""
        det_session = self._optional("ppocr-det", prof, findings, used)
        rec_session = self._optional("ppocr-rec", prof, findings, used) if det_session else None
        if det_session is None or rec_session is None:
            return []
        options = ocr.OcrOptions(max_side=prof.text_max_side, text_threshold=prof.text_min_score)
        lines = ocr.read_text(det_session, rec_session, bgr, options)
        metrics["text_lines"] = len(lines)
        rec = rec_session.manifest
        return [
            Annotation(
                kind="ocr_text",
                label=line.text,
                score=round(line.score, 3),
                geometry={
                    **line.geometry(),
                    "box_model": det_session.manifest.name,
                    "box_model_sha256": det_session.sha256,
                },
                model=rec.name,
                model_version=rec.version,
                model_sha256=rec_session.sha256,
            )
            for line in lines
        ]

    def redact_faces(
        self, bgr: npt.NDArray[np.uint8], threshold: float = 0.5
    ) -> tuple[npt.NDArray[np.uint8], list[faces.Box]]:
        """A copy of ``bgr`` with detected faces blurred, and the boxes that were blurred."""
        image_metrics.to_gray(bgr)  # same input checks as screening
        boxes = faces.detect_faces(self.session("centerface"), bgr, threshold)
        return faces.redact(bgr, boxes), boxes

    # --- thermal ------------------------------------------------------------------------------

    def thermal(
        self,
        raw: npt.NDArray[Any],
        meta: Mapping[str, Any] | None = None,
        profile: str | None = None,
        previous: npt.NDArray[Any] | None = None,
        tracker: SettlingTracker | None = None,
    ) -> Screening:
        """Screen a uint16 radiometric frame; ``meta['units']`` is 'centikelvin' (default) or
        'centicelsius'; ``meta['ffc_age_s']`` enables the settling check; ``previous`` the
        frozen-frame check. ``tracker`` (one per stream, fed every frame with ``meta['t_s']``, its
        time in seconds) detects flat-field corrections from the frames: an offset step and the
        drift after it (``models.thermal_settling``)."""
        name, prof = self.settings.profile(profile, "thermal")
        assert isinstance(prof, ThermalProfile)
        info = meta or {}
        m = thermal_metrics.measure(raw, info, prof.default_units, prof.stuck_delta_c, previous)
        step_age: float | None = None
        drift: float | None = None
        if tracker is not None:
            if "t_s" not in info:
                raise MediaError("a settling tracker needs meta['t_s']: the frame's time in seconds")
            units = str(info.get("units", prof.default_units))
            state = tracker.update(
                thermal_metrics.celsius(thermal_metrics.checked_frame(raw), units), float(info["t_s"])
            )
            step_age, drift = state.step_age_s, state.drift_c_per_s
        frozen: int | None = None
        if m.frame_diff_c is not None:
            limit = prof.frozen_max_diff_c if prof.frozen_max_diff_c is not None else 0.0
            frozen = int(m.frame_diff_c <= limit)
        metrics: dict[str, MetricValue] = {
            "width": m.width,
            "height": m.height,
            "min_c": _round(m.min_c),
            "max_c": _round(m.max_c),
            "mean_c": _round(m.mean_c),
            "flat": _round(m.flat, 4),
            "frozen": frozen,
            "frame_diff_c": _round(m.frame_diff_c, 4),
            "dead_pixel_ratio": round(m.dead_pixel_ratio, 6),
            "stuck_pixel_ratio": round(m.stuck_pixel_ratio, 6),
            "saturated_ratio": round(m.saturated_ratio, 6),
            "ffc_age_s": m.ffc_age_s,
            "ffc_step_age_s": _round(step_age),
            "offset_drift_c_per_s": _round(drift, 4),
        }
        findings = Findings(metrics)
        judge_thermal(metrics, prof, findings)
        verdict, reasons = findings.verdict()
        return Screening(
            "thermal",
            metrics,
            verdict,
            reasons,
            name,
            self._fingerprint(prof),
            [],
            [AnalyzerInfo("fieldcap.thermal-signal", SIGNAL_VERSION)],
        )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _check_audio(samples: Any, sample_rate: Any) -> npt.NDArray[np.float32]:
    if not isinstance(samples, np.ndarray):
        raise MediaError(f"expected a numpy array of samples, got {type(samples).__name__}")
    if samples.dtype not in (np.int16, np.int32, np.float32, np.float64):
        raise MediaError(f"audio samples must be int16, int32 or float, got {samples.dtype}")
    if samples.ndim not in (1, 2):
        raise MediaError(f"audio must have shape (n,) or (n, channels), got {samples.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise MediaError(f"sample rate must be an integer, got {sample_rate!r}")
    if not 1000 <= int(sample_rate) <= 768000:
        raise MediaError(f"sample rate {sample_rate} Hz is outside 1000..768000")
    if samples.shape[0] == 0:
        raise MediaError("the take is empty (0 samples)")
    if samples.ndim == 2 and not 1 <= samples.shape[1] <= MAX_CHANNELS:
        raise MediaError(f"{samples.shape[1]} channels; expected 1..{MAX_CHANNELS} (n, channels)")
    x = am.to_float(samples)
    if samples.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise MediaError("audio contains NaN or infinite samples")
    return x
