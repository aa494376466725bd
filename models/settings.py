"""QC settings (the agent config's ``[qc]`` section) and the built-in QC profiles.

A profile is a set of thresholds for one modality. ``None`` switches a check off. The built-in
profiles are ``booth-speech`` (audio), ``camera-visible`` and ``camera-ir``; a config may
override any of their fields (the rest keep their defaults) or add its own profiles, optionally
starting from another one with ``extends``::

    [qc.profiles.booth-speech]
    min_snr_db = 25                 # only this changes

    [qc.profiles.quiet-room]
    extends = "booth-speech"
    min_snr_db = 30

Every verdict stores ``QcProfile.fingerprint()``: the profile's ``version`` plus a hash of all
thresholds, so a changed threshold can never hide behind an unchanged version string.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.errors import ProfileError

OnMissingModel = Literal["error", "review", "skip"]


class QcProfile(BaseModel):
    """Fields every profile has; subclasses add the thresholds of one modality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Literal["audio", "visible", "thermal"] = Field(
        description="What the profile screens: audio takes, visible images or thermal frames."
    )
    version: str = Field(
        "1",
        min_length=1,
        max_length=64,
        description="Human version label; bump it when you change thresholds on purpose.",
    )
    description: str = Field("", max_length=500, description="What this profile is for.")
    extends: str | None = Field(
        None,
        description="Profile whose values this one starts from (resolved when the settings load).",
    )
    on_missing_model: OnMissingModel = Field(
        "review",
        description=(
            "When a model the profile needs is not fetched: 'error' raises ModelMissing, 'review' "
            "gives a review verdict whose reason names the fetch command (the daemon keeps "
            "running), 'skip' leaves the model's metrics empty."
        ),
    )

    def fingerprint(self) -> str:
        """``version`` plus 8 hex digits of a hash over every field: stored with each verdict."""
        digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]
        return f"{self.version}+{digest}"


class AudioProfile(QcProfile):
    """Thresholds for a recorded take (booth speech by default)."""

    modality: Literal["audio"] = Field("audio", description="Always 'audio'.")
    min_duration_s: float | None = Field(None, ge=0, le=86400, description="Shorter takes fail (a prompt cannot fit).")
    max_duration_s: float | None = Field(None, ge=0, le=86400, description="Longer takes are sent to review.")
    silence_max_rms_dbfs: float | None = Field(
        None, ge=-200, le=0, description="A take whose RMS is below this is 'silent' and fails."
    )
    min_peak_dbfs: float | None = Field(None, ge=-200, le=0, description="Peaks below this fail as 'too quiet'.")
    max_clipping_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of samples in full-scale runs above which a take fails.",
    )
    clip_run_samples: int = Field(
        3, ge=1, le=1000, description="Consecutive full-scale samples that count as clipping."
    )
    max_dc_offset: float | None = Field(
        None, ge=0, le=1, description="|mean| as a fraction of full scale above which: review."
    )
    min_snr_db: float | None = Field(None, ge=-50, le=120, description="VAD-based SNR below this fails.")
    min_wada_snr_db: float | None = Field(
        None, ge=-50, le=120, description="WADA-SNR below this: review (secondary estimate)."
    )
    min_speech_s: float | None = Field(
        None, ge=0, le=86400, description="Less detected speech than this fails ('no speech')."
    )
    max_silence_ratio: float | None = Field(None, ge=0, le=1, description="More non-speech share than this: review.")
    min_edge_silence_s: float | None = Field(
        None,
        ge=0,
        le=60,
        description="Speech closer than this to the take's start or end: review (may be cut off).",
    )
    min_loudness_lufs: float | None = Field(None, ge=-200, le=10, description="BS.1770 loudness below this: review.")
    max_loudness_lufs: float | None = Field(None, ge=-200, le=10, description="BS.1770 loudness above this: review.")
    min_dnsmos_ovrl: float | None = Field(None, ge=1, le=5, description="DNSMOS overall below this: review.")
    use_vad: bool = Field(True, description="Run Silero VAD (speech segments, silence, SNR, trim).")
    use_dnsmos: bool = Field(True, description="Run DNSMOS P.835 (costs ~10 ms per second of audio).")
    vad_threshold: float = Field(
        0.5, ge=0.05, le=0.95, description="Speech probability at which a 32 ms chunk is speech."
    )
    vad_min_speech_s: float = Field(0.1, ge=0, le=10, description="Speech bursts shorter than this are dropped.")
    vad_min_silence_s: float = Field(0.3, ge=0, le=10, description="Pauses shorter than this do not split a segment.")
    trim_padding_s: float = Field(0.25, ge=0, le=10, description="Padding kept around speech in the trim points.")


class VisibleProfile(QcProfile):
    """Thresholds for a visible-light photo or frame."""

    modality: Literal["visible"] = Field("visible", description="Always 'visible'.")
    min_width: int | None = Field(None, ge=1, le=100000, description="Narrower images fail.")
    min_height: int | None = Field(None, ge=1, le=100000, description="Lower images fail.")
    blur_width: int = Field(
        1280,
        ge=64,
        le=16384,
        description="Width the image is resized to before measuring blur, so scores compare.",
    )
    min_blur: float | None = Field(
        None,
        ge=0,
        description=(
            "Variance of the Laplacian (at blur_width) below which: fail; with max_blur_effect set, "
            "only when the re-blur ratio also says blurred."
        ),
    )
    max_blur_effect: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Re-blur ratio (Crété-Roffet, 0 sharp .. 1 blurred, at half blur_width) above which an "
            "image with a low Laplacian variance fails as blurred; alone when min_blur is unset."
        ),
    )
    min_tenengrad: float | None = Field(None, ge=0, description="Mean squared Sobel gradient below which: review.")
    dark_level: int = Field(16, ge=0, le=255, description="Luma at or below which a pixel counts as under-exposed.")
    bright_level: int = Field(250, ge=0, le=255, description="Luma at or above which a pixel counts as over-exposed.")
    max_underexposed_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of under-exposed pixels above which: fail."
    )
    max_overexposed_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of over-exposed pixels above which: fail."
    )
    min_mean_luma: float | None = Field(
        None, ge=0, le=255, description="Mean luma below which the image fails as too dark."
    )
    max_mean_luma: float | None = Field(
        None, ge=0, le=255, description="Mean luma above which the image fails as too bright."
    )
    detect_faces: bool = Field(False, description="Run CenterFace and annotate faces.")
    face_threshold: float = Field(0.5, ge=0.05, le=0.99, description="CenterFace score at which a face is reported.")
    max_faces: int | None = Field(None, ge=0, le=10000, description="More faces than this: review (redact or retake).")
    detectors: list[str] = Field(
        default_factory=list,
        description="Names of detector manifests to run on each image (pre-annotation only).",
    )
    detect_text: bool = Field(
        False,
        description=(
            "Read text (equipment nameplates) with PP-OCR (ppocr-det + ppocr-rec) and annotate each "
            "line as 'ocr_text'. Off by default: 0.3-1 s per photo on a small CPU, and not every frame "
            "shows a nameplate."
        ),
    )
    text_max_side: int = Field(
        960,
        ge=64,
        le=4096,
        description="Longer image side given to the text detector; larger finds smaller text, slower.",
    )
    text_min_score: float = Field(
        0.5, ge=0, le=1, description="Recognition score (mean character probability) below which a line is dropped."
    )


class ThermalProfile(QcProfile):
    """Thresholds for a radiometric thermal frame."""

    modality: Literal["thermal"] = Field("thermal", description="Always 'thermal'.")
    default_units: Literal["centikelvin", "centicelsius"] = Field(
        "centikelvin", description="Raw units when the frame's meta has no 'units'."
    )
    min_temp_c: float | None = Field(
        None, ge=-273.15, le=2000, description="A minimum below this is implausible: fail."
    )
    max_temp_c: float | None = Field(
        None, ge=-273.15, le=5000, description="A maximum above this is implausible: fail."
    )
    min_std_c: float | None = Field(
        None, ge=0, le=100, description="Frames whose std is below this are 'flat' and fail."
    )
    frozen_max_diff_c: float | None = Field(
        None, ge=0, le=100, description="Mean |difference| to the previous frame at or below: fail."
    )
    max_dead_pixel_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of zero-valued pixels above which: fail."
    )
    stuck_delta_c: float = Field(
        10.0, ge=0, le=1000, description="A pixel this far from its 3x3 median counts as stuck."
    )
    max_stuck_pixel_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of stuck pixels above which: review."
    )
    max_saturated_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of saturated pixels above which: fail."
    )
    min_settle_s: float | None = Field(
        None,
        ge=0,
        le=600,
        description=(
            "Frames taken sooner than this after flat-field correction (meta 'ffc_age_s', or an "
            "offset step detected by a settling tracker): review."
        ),
    )
    max_offset_drift_c_per_s: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Common offset drift (from a settling tracker) faster than this, in °C/s: review.",
    )


AnyProfile = Annotated[AudioProfile | VisibleProfile | ThermalProfile, Field(discriminator="modality")]

BUILTIN_PROFILES: dict[str, AudioProfile | VisibleProfile | ThermalProfile] = {
    "booth-speech": AudioProfile(
        description="Prompted speech in a recording booth, near or mid-distance microphone.",
        # A single Mandarin syllable read with lead-in silence still lasts > 0.3 s.
        min_duration_s=0.3,
        # A working mic at sane gain never averages below -60 dBFS (booth noise floor and
        # preamp hiss sit around -70..-55); below that the mic is off, muted or unplugged.
        silence_max_rms_dbfs=-60.0,
        # Speech peaking under -30 dBFS uses < 6 bits of a 16-bit take: raise the gain.
        min_peak_dbfs=-30.0,
        # Runs of >= 3 full-scale samples are clipping, not waveform; 0.01 % lets an isolated
        # overshoot pass but catches any take recorded with the gain too high.
        max_clipping_ratio=0.0001,
        # 1 % of full scale DC eats headroom and clicks at edit points; means a faulty preamp.
        max_dc_offset=0.01,
        # Speech corpora for ASR/TTS aim at >= 20 dB; below it noise is plainly audible in pauses.
        min_snr_db=20.0,
        # At least one short word must have been detected.
        min_speech_s=0.2,
        # 90 % silence usually means the prompt was skipped or recording started far too early.
        max_silence_ratio=0.9,
        # Speech touching the take's edges is often clipped at onset or tail.
        min_edge_silence_s=0.05,
        # Raw booth speech lands around -30..-18 LUFS; outside -40..-12 the level is wrong.
        min_loudness_lufs=-40.0,
        max_loudness_lufs=-12.0,
        # DNSMOS OVRL < 2.5 is "poor" on the P.835 1-5 scale.
        min_dnsmos_ovrl=2.5,
    ),
    "camera-visible": VisibleProfile(
        description="Equipment-room photos and frames from visible-light cameras.",
        # Below VGA, nameplates and indicator LEDs are not legible.
        min_width=640,
        min_height=480,
        # Blurred = little fine detail AND a re-blur removes little of what there is. Laplacian
        # variance: sharp detailed photos upscaled to 1280 px score 28-230, sigma 3 drops them
        # to <= 3; but sharp low-texture scenes (a wall, sky, skin, haze) also score 1-12, so a
        # low value alone fails content, not focus. Re-blur ratio at 640 px on the bundled
        # photos, low-texture bands, haze and low contrast (bench/eval_blur.py): sharp ones
        # 0.10-0.50 (the 512 px brick wall upscaled 2.5x: 0.44-0.48 by interpolation), sigma 3
        # at 1280 px 0.36-0.9 with every full-contrast photo above 0.5. 0.45 fails sigma >= 3
        # on every photo; what passes at sigma 3 are hazy or very smooth scenes, a soft retake.
        min_blur=15.0,
        max_blur_effect=0.45,
        # Half the frame crushed to black, or a quarter blown out, hides the equipment.
        max_underexposed_ratio=0.5,
        max_overexposed_ratio=0.25,
        # Mean luma outside 30..225 is an exposure failure even without clipped pixels.
        min_mean_luma=30.0,
        max_mean_luma=225.0,
    ),
    "camera-ir": ThermalProfile(
        description="Radiometric thermal frames (FLIR Lepton/Boson style, 16-bit).",
        # Outside -40..400 °C a radiometric equipment-room frame is a units or mode error.
        min_temp_c=-40.0,
        max_temp_c=400.0,
        # A closed shutter (flat-field correction) gives std ~0.01-0.03 °C; a scene is > 0.1.
        min_std_c=0.05,
        # Sensor noise alone changes a live frame by > 0.02 °C mean; identical means frozen.
        frozen_max_diff_c=0.001,
        # Dead (zero) pixels beyond 0.1 % make the frame unusable for hot-spot detection.
        max_dead_pixel_ratio=0.001,
        max_stuck_pixel_ratio=0.001,
        # 1 % saturated pixels means the gain mode is wrong for the scene.
        max_saturated_ratio=0.01,
        # Microbolometers drift for ~2 s after a flat-field correction.
        min_settle_s=2.0,
        # 0.05 °C/s moves every reading by a Lepton's NETD (~0.05 °C) within a second: readings
        # taken then are not comparable with the next frame's. A settled sensor drifts < 0.01 °C/s.
        max_offset_drift_c_per_s=0.05,
    ),
}

DEFAULT_PROFILE = {"audio": "booth-speech", "visible": "camera-visible", "thermal": "camera-ir"}


class QcSettings(BaseModel):
    """The ``[qc]`` config section: profiles, where models live, how ONNX runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, AnyProfile] = Field(
        default_factory=lambda: dict(BUILTIN_PROFILES),
        description="QC profiles by name; merged field by field over the built-in ones.",
    )
    model_dir: pathlib.Path | None = Field(
        None,
        description="Model cache; default $FIELDCAP_MODEL_DIR, else $XDG_CACHE_HOME/fieldcap/models, else "
        "~/.cache/fieldcap/models (the CLI, the daemon and the demo share it).",
    )
    provider: Literal["auto", "cpu", "cuda", "openvino"] = Field(
        "auto", description="ONNX Runtime execution provider; 'auto' takes the first available."
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="Intra-op threads per ONNX session; default: ORT's choice."
    )
    dnsmos_tile_rows: int = Field(
        6,
        ge=1,
        le=112,
        description="DNSMOS on the CPU runs its convolutions in time tiles of this many output rows (112 per 9 s "
        "window), the same scores either way: memory against CPU. 6 keeps ~15 MB and costs ~1.8x the whole "
        "graph's CPU; 19 keeps ~32 MB for ~1.2x (BENCHMARKS.md). The default fits the agent's 250 MB budget.",
    )
    max_backlog_s: float = Field(
        600.0,
        gt=0,
        description="QC is behind when the oldest capture waiting for its verdict is older than this (seconds): "
        "`fieldcap status` says degraded, and `when_behind` applies.",
    )
    when_behind: Literal["queue", "sample"] = Field(
        "sample",
        description="What QC does while behind: 'sample' screens one capture in `sample_one_in` (oldest first) "
        "and marks the others unscreened (a 'review' verdict saying so, and a qc_unscreened event); 'queue' "
        "screens everything, however late.",
    )
    sample_one_in: int = Field(
        4, ge=2, le=1000, description="While behind with 'sample': screen one capture in this many."
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_profiles(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "profiles" not in data:
            return data
        given = data["profiles"]
        if not isinstance(given, dict):
            return data
        merged: dict[str, Any] = {k: v.model_dump() for k, v in BUILTIN_PROFILES.items()}
        resolving: set[str] = set()

        def resolve(name: str) -> Any:
            raw = given[name]
            if not isinstance(raw, dict):
                return raw  # let pydantic report the type error at profiles.NAME
            base_name = raw.get("extends")
            if base_name is None and name in BUILTIN_PROFILES:
                base_name = name
            if base_name is None:
                return dict(raw)
            if base_name in resolving:
                raise ValueError(f"profiles.{name}: 'extends' forms a cycle through {base_name!r}")
            if base_name in given and base_name != name:
                resolving.add(name)
                base = resolve(base_name)
                resolving.discard(name)
            elif base_name in BUILTIN_PROFILES:
                base = BUILTIN_PROFILES[base_name].model_dump()
            else:
                raise ValueError(f"profiles.{name}: extends unknown profile {base_name!r}")
            if not isinstance(base, dict):
                return raw
            return {**base, **raw}

        for name in given:
            merged[name] = resolve(name)
        return {**data, "profiles": merged}

    def profile(
        self, name: str | None, modality: Literal["audio", "visible", "thermal"]
    ) -> tuple[str, AudioProfile | VisibleProfile | ThermalProfile]:
        """The profile ``name`` (the modality's default when None), checked for modality."""
        chosen = name or DEFAULT_PROFILE[modality]
        found = self.profiles.get(chosen)
        if found is None:
            known = ", ".join(sorted(self.profiles))
            raise ProfileError(f"unknown QC profile {chosen!r} (known: {known})")
        if found.modality != modality:
            raise ProfileError(
                f"profile {chosen!r} screens {found.modality}, not {modality}; "
                f"choose a {modality} profile such as {DEFAULT_PROFILE[modality]!r}"
            )
        return chosen, found
