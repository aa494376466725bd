"""The ``[qc]`` config section: validation from TOML, merging over built-in profiles."""

from __future__ import annotations

import tomllib

import pydantic
import pytest

from models import AudioProfile, ProfileError, QcSettings, ThermalProfile, VisibleProfile

CONFIG = """
provider = "cpu"
threads = 2

[profiles.booth-speech]
min_snr_db = 25.0

[profiles.quiet-room]
extends = "booth-speech"
min_snr_db = 30.0
use_dnsmos = false

[profiles.lab-photo]
modality = "visible"
min_blur = 40.0
"""


def test_validates_from_toml_and_merges_over_defaults() -> None:
    settings = QcSettings.model_validate(tomllib.loads(CONFIG))
    booth = settings.profiles["booth-speech"]
    assert isinstance(booth, AudioProfile)
    assert booth.min_snr_db == 25.0
    assert booth.max_clipping_ratio == 0.0001  # untouched default kept
    quiet = settings.profiles["quiet-room"]
    assert isinstance(quiet, AudioProfile) and quiet.min_snr_db == 30 and not quiet.use_dnsmos
    assert isinstance(settings.profiles["lab-photo"], VisibleProfile)
    assert isinstance(settings.profiles["camera-ir"], ThermalProfile)  # built-ins stay


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"profiles": {"booth-speech": {"min_snr_db": 500}}}, "less than or equal"),
        ({"profiles": {"booth-speech": {"min_blur": 3}}}, "Extra inputs"),
        ({"profiles": {"x": {"min_snr_db": 3}}}, "modality"),
        ({"profiles": {"x": {"extends": "nope"}}}, "unknown profile 'nope'"),
        ({"profiles": {"a": {"extends": "b"}, "b": {"extends": "a"}}}, "cycle"),
        ({"provider": "tpu"}, "provider"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_config_is_rejected(config: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        QcSettings.model_validate(config)


def test_fingerprint_changes_with_any_threshold() -> None:
    default = QcSettings().profiles["booth-speech"].fingerprint()
    changed = QcSettings.model_validate({"profiles": {"booth-speech": {"min_snr_db": 21}}})
    assert changed.profiles["booth-speech"].fingerprint() != default
    assert default.startswith("1+")


def test_every_field_is_documented() -> None:
    for model in (QcSettings, AudioProfile, VisibleProfile, ThermalProfile):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_profile_lookup_errors() -> None:
    settings = QcSettings()
    with pytest.raises(ProfileError, match="unknown QC profile 'nope'"):
        settings.profile("nope", "audio")
    with pytest.raises(ProfileError, match="screens visible, not audio"):
        settings.profile("camera-visible", "audio")
    assert settings.profile(None, "thermal")[0] == "camera-ir"
