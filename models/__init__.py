"""fieldcap models: QC screening of captures, pre-annotation with ONNX models, model registry.

Public surface::

    screener = Screener(settings.qc)             # once per process
    result = screener.audio(samples, 48000)      # or .image(bgr) / .thermal(raw, meta)
    result.verdict, result.reasons, result.metrics, result.annotations
    screen_file("take.wav")                      # the same, from a file

Models are fetched ahead of time (``fieldcap models fetch``); see ``models.registry``.
"""

from models.errors import (
    FetchError,
    ManifestError,
    MediaError,
    ModelError,
    ModelLoadError,
    ModelMissing,
    ModelTampered,
    ProfileError,
)
from models.files import screen_file
from models.screener import Screener
from models.screening import AnalyzerInfo, Annotation, Screening
from models.settings import AudioProfile, QcProfile, QcSettings, ThermalProfile, VisibleProfile

__all__ = [
    "AnalyzerInfo",
    "Annotation",
    "AudioProfile",
    "FetchError",
    "ManifestError",
    "MediaError",
    "ModelError",
    "ModelLoadError",
    "ModelMissing",
    "ModelTampered",
    "ProfileError",
    "QcProfile",
    "QcSettings",
    "Screener",
    "Screening",
    "ThermalProfile",
    "VisibleProfile",
    "screen_file",
]
