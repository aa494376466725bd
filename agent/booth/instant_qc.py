"""The verdict an operator sees the moment a take is committed, per microphone.

The agent's QC pass (``agent.qc``) screens every take with the stream's full profile and records
its verdict and each microphone's (they are what syncs and what coverage counts). DNSMOS, its
slowest part, needs seconds per take on a small box, which is too long to keep a subject waiting.
So the booth runs the pass's per-microphone screening (``agent.qc.screen_channels``) on the
committed WAV right away with the same profile minus DNSMOS — every signal metric, the VAD, SNR,
clipping, silence, edges — so that the operator learns which mic is the problem. The full verdict
replaces it on screen when it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from agent.qc import screen_channels
from models import QcSettings, Screener

__all__ = ["InstantQc", "MicCheck", "worst"]

RANK = {"pass": 0, "review": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class MicCheck:
    mic: str
    verdict: str
    reasons: tuple[str, ...]
    metrics: dict[str, Any]


def worst(verdicts: list[str]) -> str:
    """fail over review over pass (an empty list is a pass)."""
    return max(verdicts, key=lambda v: RANK.get(v, 1), default="pass")


class InstantQc:
    """Screens take files with each stream's profile, DNSMOS left out."""

    def __init__(self, qc: QcSettings) -> None:
        self._qc = qc
        self._screeners: dict[str, tuple[str, Screener]] = {}

    def _screener(self, profile: str | None) -> tuple[str, Screener]:
        key = profile or ""
        if key not in self._screeners:
            name, prof = self._qc.profile(profile, "audio")
            quick = prof.model_copy(update={"use_dnsmos": False, "min_dnsmos_ovrl": None})
            settings = self._qc.model_copy(update={"profiles": {**self._qc.profiles, name: quick}})
            self._screeners[key] = (name, Screener(settings))
        return self._screeners[key]

    def warm(self, profile: str | None, sample_rate: int = 48000) -> None:
        """Load the models and run them once (on 2 s of noise loud enough for the VAD to run)."""
        name, screener = self._screener(profile)
        noise = (np.random.default_rng(0).standard_normal(2 * sample_rate) * 3000).astype(np.int16)
        screener.audio(noise, sample_rate, name)

    def check(self, path: Path, profile: str | None, mics: list[str]) -> list[MicCheck]:
        """Screen each channel of a take file on its own (as the QC pass does); ``mics`` names the channels."""
        samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
        name, screener = self._screener(profile)
        names = [mics[c] if c < len(mics) else f"{path.name}:ch{c}" for c in range(samples.shape[1])]
        return [
            MicCheck(r["mic"], r["verdict"], tuple(r["reasons"]), dict(r["metrics"]))
            for r in screen_channels(screener, samples, int(rate), name, names)
        ]
