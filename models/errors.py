"""Exceptions raised by `models`.

Every message says what is wrong *and* what to do about it, because these end up in front of an
operator (``fieldcap qc``, ``fieldcap models``) or in a verdict's reasons.

    ModelError
    ├── ManifestError     a manifest file is invalid or names an unknown model
    ├── ModelMissing      the model file is not in the cache        → fetch it
    ├── ModelTampered     the file's sha256 differs from the manifest → fetch it again
    ├── FetchError        ``pip download`` or unpacking the wheel failed
    └── ModelLoadError    onnxruntime cannot load/run it (provider, inputs, missing ``onnx``)
    ProfileError          unknown QC profile, or one for another modality
    MediaError            samples/frames/files that cannot be screened
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class for model registry and runtime problems."""


class ManifestError(ModelError):
    """A manifest is malformed or a model name is not known."""


class ModelMissing(ModelError):
    """The model file is not in the cache directory."""


class ModelTampered(ModelError):
    """The cached model file does not match the sha256 pinned in its manifest."""


class FetchError(ModelError):
    """Downloading the source wheel or extracting the model from it failed."""


class ModelLoadError(ModelError):
    """onnxruntime could not create a session or the model's interface is not the expected one."""


class ProfileError(ValueError):
    """A QC profile name is unknown or does not fit the modality being screened."""


class MediaError(ValueError):
    """Input that cannot be screened: unreadable file, wrong dtype or shape, empty data."""
