"""Per-microphone QC: each channel of a multi-channel take screened on its own, and kept.

The agent's QC thread screens a take file as a whole and stores one verdict per capture, the worst
channel's — that is what syncs and what the rest of the agent counts. In a booth the near and mid
microphones are two channels of one take, and "the take failed" is not enough: the operator, the
reviewer and coverage (item x round x microphone) need to know which microphone failed. So while a
booth runs, this thread screens every channel of every multi-channel audio take with the stream's
full profile (DNSMOS included) and stores the results in ``channel_verdicts`` (migration 0004),
synced as one ``channel_verdict`` record per capture.

It works from the catalog (takes without channel verdicts, oldest first), so a booth that crashed
or quit before screening a take catches up the next time a booth or rerecord runs on the data
directory; until then review and coverage fall back to the whole-take verdict. It shares the
agent's ``Screener`` (models are loaded once); the price is screening each take twice, about
1.2 s more for a 10 s two-channel take on a small box (measured), which the booth hides behind the
operator's next prompt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import soundfile as sf

from agent.catalog.db import Catalog
from models import ModelError, Screener

__all__ = ["ChannelQc", "channel_mics"]

log = logging.getLogger("fieldcap.booth")

POLL_S = 0.5
BATCH = 8


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


class ChannelQc:
    """Screens the channels of multi-channel audio takes; a thread while the booth's agent runs."""

    def __init__(
        self,
        open_catalog: Callable[[], AbstractContextManager[Catalog]],
        data_dir: Path,
        screener: Callable[[], Screener],
        profile_of: Callable[[str], str | None],
    ) -> None:
        self.open_catalog = open_catalog
        self.data_dir = data_dir
        self.screener = screener
        self.profile_of = profile_of
        self.screened = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fieldcap-channel-qc", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the capture being screened (the rest waits for the next booth run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once no take is left to screen per channel (False after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.open_catalog() as cat:
            while cat.channel_unscreened(1):
                if time.monotonic() > deadline:
                    return False
                if self._thread is None or not self._thread.is_alive():
                    self.screen_pending(cat)  # not running (or stopped): do it here
                    continue
                time.sleep(0.1)
        return True

    def _loop(self) -> None:
        with self.open_catalog() as cat:
            while not self._stop.is_set():
                try:
                    done = self.screen_pending(cat, stoppable=True)
                except Exception:  # a catalog hiccup must not end per-microphone QC for the session
                    log.exception("per-microphone QC pass failed; retrying")
                    done = 0
                if not done:
                    self._stop.wait(POLL_S)

    def screen_pending(self, cat: Catalog, limit: int = BATCH, *, stoppable: bool = False) -> int:
        """Screen up to ``limit`` takes still lacking channel verdicts; return how many."""
        rows = cat.channel_unscreened(limit)
        for row in rows:
            if stoppable and self._stop.is_set():
                break
            self._screen_one(cat, row)
            self.screened += 1
        return len(rows)

    def _screen_one(self, cat: Catalog, row: Any) -> None:
        stream = row["stream"]
        profile = self.profile_of(stream)
        path = self.data_dir / row["path"]
        results: list[dict[str, Any]] = []
        try:
            samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
            mics = channel_mics(cat, row, samples.shape[1])
            screener = self.screener()
            for c, mic in enumerate(mics):
                doc = screener.audio(samples[:, [c]], int(rate), profile).to_dict()  # JSON-safe metrics
                keep = ("profile", "profile_version", "verdict", "reasons", "metrics")
                results.append({"channel": c, "mic": mic, **{k: doc[k] for k in keep}})
        except (ModelError, ValueError, OSError, RuntimeError) as exc:
            channels = int(json.loads(row["meta_json"] or "{}").get("channels") or 1)
            log.error("per-microphone QC of %s failed: %s", path, exc)
            results = [
                {
                    "channel": c,
                    "mic": mic,
                    "profile": profile or "none",
                    "profile_version": "-",
                    "verdict": "review",
                    "reasons": [f"per-microphone QC could not run: {exc}"],
                    "metrics": {},
                }
                for c, mic in enumerate(channel_mics(cat, row, channels))
            ]
        cat.add_channel_verdicts(row["record_id"], results)
