"""Fixtures for the models tests: fetched models, real speech from espeak-ng, real photos.

Models are fetched once per session into ``$FIELDCAP_MODEL_DIR`` when it is set (so CI can keep a
cache), else into a temporary directory.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import types
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from scipy.signal import resample_poly

from models import QcSettings, Screener, registry

RATE = 48000
SENTENCES = {
    "en": ("en", "The quick brown fox jumps over the lazy dog near the river bank."),
    "zh": ("cmn", "今天天气很好，我们去公园散步吧。"),
}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    env = os.environ.get("FIELDCAP_MODEL_DIR")
    folder = pathlib.Path(env) if env else tmp_path_factory.mktemp("models")
    statuses = registry.fetch(None, folder)
    assert all(s.state == "ok" for s in statuses), statuses
    return folder


@pytest.fixture(scope="session")
def screener(model_dir: pathlib.Path) -> Screener:
    """Default profiles, DNSMOS off (it is tested on its own; it costs ~1 s per take)."""
    settings = QcSettings.model_validate({"profiles": {"booth-speech": {"use_dnsmos": False}}})
    return Screener(settings, model_dir=model_dir)


@pytest.fixture(scope="session")
def full_screener(model_dir: pathlib.Path) -> Screener:
    return Screener(model_dir=model_dir)


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], npt.NDArray[np.float32]]:
    """``speech(lang)``: an espeak-ng sentence at 48 kHz float32 peaking at 0.5."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[str, npt.NDArray[np.float32]] = {}

    def make(lang: str) -> npt.NDArray[np.float32]:
        if lang not in cache:
            voice, text = SENTENCES[lang]
            wav = folder / f"{lang}.wav"
            subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True)
            data, rate = soundfile.read(str(wav), dtype="float32")
            assert rate == 22050
            up = resample_poly(data, 320, 147).astype(np.float32)  # 22.05 → 48 kHz
            cache[lang] = (up / np.abs(up).max() * 0.5).astype(np.float32)
        return cache[lang]

    return make


def take(speech: npt.NDArray[np.float32], lead_s: float = 0.6, tail_s: float = 0.6) -> npt.NDArray[np.float32]:
    """Speech with silence before and after, as a booth take has."""
    return np.concatenate([np.zeros(int(lead_s * RATE), np.float32), speech, np.zeros(int(tail_s * RATE), np.float32)])


def active_power(x: npt.NDArray[np.float32]) -> float:
    """Speech power over 20 ms frames within 40 dB of the loudest (a simple active speech level)."""
    frame = int(0.02 * RATE)
    n = len(x) // frame
    power = (x[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1)
    return float(power[power > power.max() * 1e-4].mean())


def noise(kind: str, n: int, seed: int) -> npt.NDArray[np.float64]:
    """Unit-power stationary noise: 'white' or 'pink' (1/f, like room and fan noise)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        freqs[0] = freqs[1]
        white = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    unit: npt.NDArray[np.float64] = white / np.sqrt(np.mean(white**2))
    return unit


def mix(clean: npt.NDArray[np.float32], snr_db: float, kind: str, seed: int = 0) -> npt.NDArray[np.float32]:
    """``clean`` take plus noise so that active speech power / noise power = ``snr_db``."""
    scale = np.sqrt(active_power(clean) / 10 ** (snr_db / 10))
    mixed: npt.NDArray[np.float32] = (clean + noise(kind, len(clean), seed) * scale).astype(np.float32)
    return mixed


@pytest.fixture(scope="session")
def material() -> types.SimpleNamespace:
    """Helpers for building takes (a fixture so tests need no import path for this folder)."""
    return types.SimpleNamespace(take=take, mix=mix, noise=noise, active_power=active_power, rate=RATE)
