"""fieldcap models: QC screening of captures, pre-annotation with ONNX models, model registry.

Public surface::

    screener = Screener(settings.qc)             # once per process
    result = screener.audio(samples, 48000)      # or .image(bgr) / .thermal(raw, meta)
    result.verdict, result.reasons, result.metrics, result.annotations
    screen_file("take.wav")                      # the same, from a file

Models are fetched ahead of time (``fieldcap models fetch``); see ``models.registry``.

Names are imported lazily (PEP 562) so that ``models.runner`` can be used where only numpy and
onnxruntime are installed (``bench/bench_onnx.py`` on a GPU machine); the exceptions are light
and imported at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from models.files import screen_file
    from models.screener import Screener
    from models.screening import AnalyzerInfo, Annotation, Screening
    from models.settings import (
        AudioProfile,
        QcProfile,
        QcSettings,
        ThermalProfile,
        VisibleProfile,
    )

_LAZY = {
    "screen_file": "models.files",
    "Screener": "models.screener",
    "AnalyzerInfo": "models.screening",
    "Annotation": "models.screening",
    "Screening": "models.screening",
    "AudioProfile": "models.settings",
    "QcProfile": "models.settings",
    "QcSettings": "models.settings",
    "ThermalProfile": "models.settings",
    "VisibleProfile": "models.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
