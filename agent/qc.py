"""The QC worker: one pass over each capture, with the per-microphone verdicts of multi-channel takes.

The daemon's QC thread (a booth's agent is the daemon's) hands every capture that has media and no
verdict yet to ``QcWorker.screen``: it reads the file once and stores the capture's verdict with
the stream's profile — for multi-channel audio the worst channel's, which is what syncs and what
the rest of the agent counts. In the same pass, a multi-channel audio take (a booth's near and mid
microphones are two channels of one take) is also screened channel by channel with the full
profile, DNSMOS included, and its per-microphone verdicts stored in ``channel_verdicts``
(migration 0004, synced as one ``channel_verdict`` record per capture): the operator, the reviewer
and coverage (item x round x microphone) need to know which microphone failed, whether or not a
booth is still running. A take that has a verdict but no per-microphone ones (screened by an older
version) is caught up by ``screen_channels_pending`` when nothing else waits.

The booth's instant check (``agent.booth.instant_qc``) uses the same per-channel screening
(``screen_channels``) on the committed file, with the profile minus DNSMOS, so the operator sees a
per-microphone verdict within about a second; this pass's verdicts replace it.

QC can fall behind capture (a loaded machine, heavy models). The worker measures its backlog
(``Backlog``: how many captures wait, the oldest's age) for status and metrics; past
``[qc] max_backlog_s`` the agent is degraded and, with ``when_behind = "sample"``, only one capture
in ``sample_one_in`` is screened while the others get a ``review`` verdict that says they were not
screened, plus a ``qc_unscreened`` event: never a silent skip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from agent.catalog.db import Catalog
from agent.catalog.reports import pass_rate
from models import ModelError, Screener, Screening
from models.thermal_settling import SettlingTracker

__all__ = ["QC_ERRORS", "Backlog", "QcWorker", "channel_mics", "screen_channels", "screen_channels_pending"]

log = logging.getLogger("fieldcap.qc")

QC_ERRORS = (ModelError, ValueError, OSError, RuntimeError)
CHANNEL_KEYS = ("profile", "profile_version", "verdict", "reasons", "metrics")
BACKLOG_CAP = 10_000  # counted up to this many; beyond, the count says "at least"


@dataclass
class Backlog:
    """Captures waiting for QC, for ``fieldcap status`` and the metrics."""

    captures: int = 0
    capped: bool = False  # more than ``captures`` wait
    oldest_age_s: float | None = None
    max_age_s: float = 600.0
    policy: str = "sample"
    unscreened: int = 0  # captures marked unscreened since start

    @property
    def behind(self) -> bool:
        return self.oldest_age_s is not None and self.oldest_age_s > self.max_age_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "behind": self.behind}


def channel_mics(cat: Catalog, row: Any, channels: int) -> list[str]:
    """Names of a capture's channels: as the booth session lists its mics, else as the device names them."""
    names: dict[int, str] = {}
    session = cat.sessions.session(row["session_id"]) if row["session_id"] else None
    if session is not None:
        for m in json.loads(session["meta_json"] or "{}").get("mics") or ():
            if isinstance(m, dict) and m.get("stream") == row["stream"] and isinstance(m.get("channel"), int):
                names[m["channel"]] = str(m["mic"])
    if not names and row["stream_id"]:
        found = cat.sessions.stream_settings(row["stream_id"])
        given = found.get("channel_names") if found else None
        if isinstance(given, list):
            names = {i: f"{row['stream']}:{n}" for i, n in enumerate(given)}
    return [names.get(c, f"{row['stream']}:ch{c}") for c in range(channels)]


def screen_channels(
    screener: Screener, samples: np.ndarray[Any, Any], rate: int, profile: str | None, mics: list[str]
) -> list[dict[str, Any]]:
    """Each channel of a take screened on its own: ``channel``, ``mic`` and the verdict's fields."""
    out = []
    for c in range(samples.shape[1]):
        mic = mics[c] if c < len(mics) else f"ch{c}"
        doc = screener.audio(samples[:, [c]], rate, profile).to_dict()  # JSON-safe metrics
        out.append({"channel": c, "mic": mic, **{k: doc[k] for k in CHANNEL_KEYS}})
    return out


def _channels_not_screened(mics: list[str], profile: str | None, exc: Exception) -> list[dict[str, Any]]:
    return [
        {
            "channel": c,
            "mic": mic,
            "profile": profile or "none",
            "profile_version": "-",
            "verdict": "review",
            "reasons": [f"per-microphone QC could not run: {exc}"],
            "metrics": {},
        }
        for c, mic in enumerate(mics)
    ]


def _per_channel(row: Any) -> bool:
    """A multi-channel audio take: its microphones get verdicts of their own."""
    meta = json.loads(row["meta_json"] or "{}")
    return row["kind"] == "take" and row["modality"] == "audio" and int(meta.get("channels") or 1) > 1


def _store_channels(
    cat: Catalog,
    row: Any,
    screener: Screener,
    profile: str | None,
    audio: tuple[np.ndarray[Any, Any], int] | None,
    path: Path,
) -> None:
    try:
        if audio is None:
            audio = _read_audio(path)
        samples, rate = audio
        results = screen_channels(screener, samples, rate, profile, channel_mics(cat, row, samples.shape[1]))
    except QC_ERRORS as exc:
        channels = int(json.loads(row["meta_json"] or "{}").get("channels") or 1)
        log.error("per-microphone QC of %s failed: %s", path, exc)
        results = _channels_not_screened(channel_mics(cat, row, channels), profile, exc)
    cat.add_channel_verdicts(row["record_id"], results)


def _read_audio(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return samples, int(rate)


def screen_channels_pending(
    cat: Catalog, data_dir: Path, screener: Screener, profile_of: Callable[[str], str | None], limit: int = 8
) -> int:
    """Screen per microphone up to ``limit`` takes that have none of those verdicts yet; return how many."""
    rows = cat.channel_unscreened(limit)
    for row in rows:
        _store_channels(cat, row, screener, profile_of(row["stream"]), None, data_dir / row["path"])
    return len(rows)


class QcWorker:
    """Screens captures for the daemon's QC thread; ``screener`` and ``profile_of`` follow reloads."""

    def __init__(
        self, data_dir: Path, screener: Callable[[], Screener], profile_of: Callable[[str], str | None]
    ) -> None:
        self.data_dir = data_dir
        self.screener = screener
        self.profile_of = profile_of
        self.counts: dict[str, dict[str, Any]] = {}
        self.backlog = Backlog()
        self._settling: dict[str, SettlingTracker] = {}
        self._previous: dict[str, np.ndarray[Any, Any]] = {}

    def screen(self, cat: Catalog, row: Any) -> Screening | None:
        """Screen one capture and store its verdict (and its microphones'); None if QC could not run."""
        stream, modality = row["stream"], row["modality"]
        profile = self.profile_of(stream)
        path = self.data_dir / row["path"]
        screener = self.screener()
        audio = None
        try:
            meta = json.loads(row["meta_json"])
            meta["t_s"] = row["t_start_utc_ns"] / 1e9  # the settling tracker's time axis (UTC survives reboots)
            if modality == "audio":
                audio = _read_audio(path)
                result = screener.audio(audio[0], audio[1], profile)
            else:
                result = self._screen_image(screener, path, stream, modality, profile, meta)
        except QC_ERRORS as exc:
            cat.add_verdict(
                row["record_id"],
                profile=profile or "none",
                profile_version="-",
                verdict="review",
                reasons=[f"QC could not run: {exc}"],
                metrics={},
                analyzers=[],
                annotations=[],
            )
            self._count(profile or "none", "review")
            log.error("QC of %s failed: %s", path, exc)
            if _per_channel(row):
                _store_channels(cat, row, screener, profile, None, path)
            return None
        cat.add_verdict(
            row["record_id"],
            profile=result.profile,
            profile_version=result.profile_version,
            verdict=result.verdict,
            reasons=result.reasons,
            metrics=result.metrics,
            analyzers=[a.to_dict() for a in result.analyzers],
            annotations=[a.to_dict() for a in result.annotations],
        )
        self._count(result.profile, result.verdict)
        if _per_channel(row):
            _store_channels(cat, row, screener, profile, audio, path)
        return result

    def measure_backlog(self, cat: Catalog | None, max_age_s: float, policy: str) -> Backlog:
        """Count what waits for QC (one query, counted up to ``BACKLOG_CAP``); ``None``: nothing waits."""
        count, oldest_ns = cat.qc_backlog(BACKLOG_CAP) if cat is not None else (0, None)
        age = None if oldest_ns is None else max(0.0, time.time() - oldest_ns / 1e9)
        b = self.backlog
        b.captures, b.capped, b.max_age_s, b.policy = count, count >= BACKLOG_CAP, max_age_s, policy
        b.oldest_age_s = None if age is None else round(age, 3)
        return b

    def mark_unscreened(self, cat: Catalog, rows: Sequence[Any], why: str) -> None:
        """Give captures QC skipped a ``review`` verdict that says so, and record one event for them."""
        for row in rows:
            profile = self.profile_of(row["stream"]) or "none"
            cat.add_verdict(
                row["record_id"],
                profile=profile,
                profile_version="-",
                verdict="review",
                reasons=[f"unscreened: {why}"],
                metrics={"unscreened": True},
                analyzers=[],
                annotations=[],
            )
            self._count(profile, "review")
        if rows:
            self.backlog.unscreened += len(rows)
            cat.add_event(
                "qc_unscreened",
                f"QC fell behind: {len(rows)} capture(s) marked unscreened ({why})",
                count=len(rows),
                detail={"record_ids": [r["record_id"] for r in rows], "why": why},
            )
            log.warning("QC behind: %d capture(s) marked unscreened (%s)", len(rows), why)

    def _screen_image(
        self, screener: Screener, path: Path, stream: str, modality: str, profile: str | None, meta: dict[str, Any]
    ) -> Screening:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: cannot decode the image")
        if modality != "thermal":
            return screener.image(img, profile)
        # One tracker per stream finds flat-field-correction steps and the drift after them
        # from the frames themselves; a frame out of time order starts it afresh.
        tracker = self._settling.get(stream)
        last = tracker.last_t_s if tracker is not None else None
        if tracker is None or (last is not None and meta["t_s"] <= last):
            tracker = self._settling[stream] = SettlingTracker()
        result = screener.thermal(img, meta, profile, previous=self._previous.get(stream), tracker=tracker)
        self._previous[stream] = img
        return result

    def _count(self, profile: str, verdict: str) -> None:
        counts = self.counts.setdefault(profile, {"pass": 0, "fail": 0, "review": 0})
        counts[verdict] = counts.get(verdict, 0) + 1
        pass_rate(counts)
