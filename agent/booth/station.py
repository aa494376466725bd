"""The booth's running agent: the daemon's own pipeline, with a level tap, opened and checked first.

The booth records through exactly what ``fieldcap run`` runs — drivers, the recorder's take policy,
the writer and catalog, the QC thread, the outbox and the publisher — by running the daemon's
``Agent`` in-process (one process per data directory, so a running daemon must be stopped first).
What is added: every audio block also feeds the live level meter (through ``Agent.make_recorder``,
the agent's extension point), and every audio device records takes: a device whose configured policy is not
``take`` (a booth config written for the daemon's continuous segments) is switched to it, and the
booth says so.

Before a subject is asked to speak, ``Station.open`` checks what can fail: the data directory is
not used by a running agent or another booth, the subject key file can be read, and every
microphone opened (else the driver's own error, which names the devices it found).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from agent.booth.levels import LevelMeter, LevelThresholds
from agent.booth.records import Mic
from agent.capture.recorder import StreamRecorder
from agent.catalog.db import Catalog
from agent.config import CaptureSettings, Config
from agent.daemon import Agent
from agent.errors import ConfigError, FieldcapError
from agent.sessions.takes import Sessions
from drivers import Sample, driver_modality

__all__ = ["BoothAgent", "BoothError", "Station", "booth_config"]

log = logging.getLogger("fieldcap.booth")

TAKE_PAD_S = 0.5  # pre/post padding when the booth switches a device to takes
OPEN_GRACE_S = 5.0


class BoothError(FieldcapError):
    """The booth cannot start or go on; the message says why and what to do."""


def booth_config(config: Config, config_file: str) -> tuple[Config, list[str]]:
    """The config with every audio device recording takes; the notes say what was switched."""
    notes: list[str] = []
    capture = dict(config.capture)
    audio = [d for d in config.devices if driver_modality(d.type) == "audio"]
    if not audio:
        raise BoothError(
            f"{config_file}: devices: no microphone; the booth needs an audio device"
            " (a [[devices]] table with type = 'microphone', or 'sim-microphone' to try it out)"
        )
    for device in audio:
        policy = config.capture_for(device.name)
        if policy.policy != "take":
            capture[device.name] = CaptureSettings(
                policy="take", pre_s=TAKE_PAD_S, post_s=TAKE_PAD_S, qc_profile=policy.qc_profile
            )
            notes.append(
                f"{device.name}: capture policy {policy.policy!r} replaced by 'take' (padding {TAKE_PAD_S:g} s)"
                " for the booth"
            )
    if not config.session.subject_key_file:
        raise BoothError(
            f"{config_file}: session.subject_key_file: not set; the booth stores subjects only as pseudonyms"
            " (HMAC-SHA256) and needs a key file: `head -c 32 /dev/urandom > subject-key; chmod 600 subject-key`"
            " and set subject_key_file in [session]"
        )
    return config.model_copy(update={"capture": capture}), notes


class BoothAgent(Agent):
    """The daemon's ``Agent`` with a level-meter tap and no session of its own.

    The daemon opens a continuous session at start for captures made outside any other session.
    In a booth whose every device records takes nothing is captured outside a take, and takes
    belong to the booth session, so that session would stay empty: it is not opened, and one booth
    run is one session (the booth session it starts, resumes or reopens). A booth config that also
    has streams recording on their own (a sensor, a camera) keeps it, because those streams capture
    before the booth session opens (while the operator answers the resume question) and after it
    ends, and every capture belongs to a session.
    """

    def __init__(self, config: Config, *, config_file: str, meter: LevelMeter) -> None:
        super().__init__(config, config_file=config_file)
        self.meter = meter

    def needs_background_session(self) -> bool:
        return not all(self.config.capture_for(d.name).policy == "take" for d in self.config.devices)

    def make_recorder(
        self, name: str, modality: str, policy: CaptureSettings, settings: dict[str, Any]
    ) -> StreamRecorder:
        """The agent's recorder; an audio stream's blocks also feed the level meter (after the recorder)."""
        recorder = super().make_recorder(name, modality, policy, settings)
        if modality != "audio":
            return recorder
        channels = int(settings.get("channels") or 1)
        self.meter.attach(name, settings.get("channel_names"), channels)
        feed, meter = recorder.feed, self.meter

        def feed_and_meter(sample: Sample) -> None:
            feed(sample)  # the recorder first: the meter must never delay or break capture
            if isinstance(sample.payload, np.ndarray):
                try:
                    meter.feed(name, sample.payload)
                except Exception:  # a display problem; the take itself is unaffected
                    log.exception("%s: level meter failed on a block", name)

        recorder.feed = feed_and_meter  # type: ignore[method-assign]
        return recorder


@dataclass(frozen=True, slots=True)
class TakeStream:
    name: str
    profile: str | None
    sample_rate: int
    mics: tuple[Mic, ...]


class Station:
    """A started booth agent with its microphones open, or a ``BoothError`` saying why not."""

    def __init__(self, config: Config, config_file: str, *, notes: list[str] | None = None) -> None:
        self.config = config
        self.config_file = config_file
        self.notes = list(notes or [])
        self.data_dir = config.agent.data_dir
        profile = next(
            (config.capture_for(d.name).qc_profile for d in config.devices if driver_modality(d.type) == "audio"),
            None,
        )
        _, prof = config.qc.profile(profile, "audio")
        self.meter = LevelMeter(LevelThresholds.from_profile(prof))
        self.agent: BoothAgent | None = None
        self.streams: list[TakeStream] = []
        self._lock: TextIO | None = None

    @property
    def sessions(self) -> Sessions:
        assert self.agent is not None, "Station.open() first"
        return self.agent.recording.sessions

    def catalog(self) -> Catalog:
        """A new connection to the booth's catalog (one per thread)."""
        assert self.agent is not None, "Station.open() first"
        return self.agent.catalog()

    @property
    def mics(self) -> list[Mic]:
        return [m for s in self.streams for m in s.mics]

    def open(self, timeout_s: float | None = None) -> None:
        """Lock the data directory, start the agent, and wait until every microphone is open."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_no_daemon()
            try:
                self.agent = BoothAgent(self.config, config_file=self.config_file, meter=self.meter)
            except ConfigError as exc:
                raise BoothError(_key_hint(str(exc), self.config.session.subject_key_file)) from None
            self.agent.start()
            self._wait_mics(timeout_s)
        except BaseException:
            self.close(sync_wait_s=0.0)
            raise

    def _take_lock(self) -> None:
        path = self.data_dir / "booth.lock"
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise BoothError(
                f"{self.data_dir}: another booth (pid {pid}) is recording into this data directory; quit it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def _check_no_daemon(self) -> None:
        from agent.ops.status import read_status

        try:
            snap = read_status(self.data_dir, device_id=self.config.agent.device_id)
        except (OSError, ValueError):
            return  # no readable status: no daemon has written one
        if snap.get("running"):
            raise BoothError(
                f"{self.data_dir}: the agent (pid {snap.get('pid')}) is running on this data directory; the booth"
                " runs the same capture, QC and sync itself, so stop the agent first"
                " (`sudo systemctl stop fieldcap-agent`) and start it again after the session"
            )

    def _wait_mics(self, timeout_s: float | None) -> None:
        agent = self.agent
        assert agent is not None
        audio = [d for d in self.config.devices if driver_modality(d.type) == "audio"]
        limit = timeout_s if timeout_s is not None else max(d.open_timeout_s for d in audio) + OPEN_GRACE_S
        deadline = time.monotonic() + limit
        pending = {d.name for d in audio}
        while pending:
            for name in sorted(pending):
                state = agent.streams.get(name)
                if state is None:
                    continue
                if state.open and state.recorder is not None:
                    pending.discard(name)
                elif state.attempted.is_set() and state.last_error and state.state in ("restarting", "failed"):
                    raise BoothError(f"{name}: {state.last_error}")
            if pending and time.monotonic() > deadline:
                raise BoothError(
                    f"{', '.join(sorted(pending))}: the microphone did not open within {limit:g} s"
                    " (list audio inputs with `fieldcap devices probe`)"
                )
            time.sleep(0.05)
        for device in audio:
            state = agent.streams[device.name]
            assert state.recorder is not None
            settings = state.recorder.settings
            names = list(settings.get("channel_names") or [])
            channels = int(settings.get("channels") or 1)
            names += [f"ch{i}" for i in range(len(names), channels)]
            self.streams.append(
                TakeStream(
                    device.name,
                    self.config.capture_for(device.name).qc_profile,
                    int(settings.get("sample_rate") or 48000),
                    tuple(Mic(f"{device.name}:{n}", device.name, i) for i, n in enumerate(names[:channels])),
                )
            )

    def profile_of(self, stream: str) -> str | None:
        return next((s.profile for s in self.streams if s.name == stream), None)

    def close(self, *, sync_wait_s: float, progress: Any = None) -> dict[str, Any]:
        """Stop capture, finish QC of what was recorded, give sync up to ``sync_wait_s``, stop."""
        out: dict[str, Any] = {"screened": True, "synced": None}
        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                agent.stop_capture()
                out["screened"] = agent.wait_screened(240.0)  # each capture, and each microphone of a take
                if agent.publisher is not None and sync_wait_s > 0:
                    if progress is not None:
                        progress(f"sending the session to the central store (up to {sync_wait_s:g} s) ...")
                    out["synced"] = agent.publisher.wait_idle(sync_wait_s)
                with agent.catalog() as cat:
                    out["backlog_records"], out["backlog_bytes"] = cat.outbox_backlog()
            finally:
                agent.stop()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
        return out


def _key_hint(message: str, key_file: str | None) -> str:
    """Add where a relative key file name was looked for (systemd credentials are not set here)."""
    if key_file and not Path(key_file).is_absolute() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        return (
            f"{message} (a relative name is looked up in $CREDENTIALS_DIRECTORY, which is not set here, so in"
            f" the current directory {Path.cwd()}; give an absolute path in the config)"
        )
    return message
