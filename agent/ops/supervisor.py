"""``fieldcap run``: the agent as a service — signals, systemd notify and watchdog, reload, status.

The main thread owns the process: it starts the ``Agent``, tells systemd ``READY=1`` once every
device has had its first open attempt (a device that cannot open does not block the others; it
shows in ``STATUS=``), and then ticks: it feeds the watchdog only while every loop has beaten
within ``WatchdogSec/2`` (see ``agent.ops.heartbeat``), refreshes ``STATUS=`` and the status file, and
serves reloads. Signal handlers only set flags; the work happens on this thread.

- SIGTERM / SIGINT: ``STOPPING=1``, stop capture (open segments and windows are flushed), drain the
  writer, stop QC and sync (the outbox is the catalog: its state is already committed), exit 0
  within ``[daemon] stop_timeout_s``.
- SIGHUP: read and validate the file again (secrets included); if it is invalid, or changes a
  setting that only a restart can change, keep running the old configuration, log why, record a
  ``config_rejected`` event and show it in ``STATUS=``; otherwise apply it, restarting only the
  streams whose settings changed (and the ones that had been given up).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent.catalog.db import Catalog
from agent.config import Config, check_secrets, load_config
from agent.daemon import Agent
from agent.errors import FieldcapError
from agent.ops.heartbeat import Heartbeats
from agent.ops.metrics import MetricsServer
from agent.ops.notify import Notifier
from agent.ops.status import problems_of, summary_line, write_status
from sync.wire import utc_now

log = logging.getLogger("fieldcap.supervisor")


def load_checked(config_file: Path) -> Config:
    """Load and validate a config file, its secret files included (raises ``ConfigError``)."""
    config = load_config(config_file)
    check_secrets(config, str(config_file))
    return config


class ReloadRefused(FieldcapError):
    """A valid configuration that changes something only a restart can change."""


class Supervisor:
    """Runs an ``Agent`` under systemd (or in a terminal) until asked to stop."""

    def __init__(self, config_file: Path, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config_file = config_file
        self.config = config
        self.notifier = notifier or Notifier()
        self.heartbeats = Heartbeats()
        self.agent: Agent | None = None
        self.metrics: MetricsServer | None = None
        self.state = "starting"
        self.started_utc = utc_now()
        self.started_mono = time.monotonic()
        self.config_loaded_utc = self.started_utc
        self.reloads = {"ok": 0, "rejected": 0}
        self.last_reload_error: str | None = None
        self._stop = False
        self._reload = False
        self._wake = threading.Event()
        self._stalled: set[str] = set()

    # ------------------------------------------------------------------ control (any thread, or a signal)

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (call from the main thread)."""

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.request_stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("received SIGHUP: reloading %s", self.config_file)
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    # ------------------------------------------------------------------ timing

    @property
    def heartbeat_limit_s(self) -> float:
        """How stale a loop may be: WatchdogSec/2 under a systemd watchdog, else the config's timeout."""
        wd = self.notifier.watchdog_s
        return wd / 2 if wd else self.config.daemon.heartbeat_timeout_s

    @property
    def tick_s(self) -> float:
        wd = self.notifier.watchdog_s
        return min(1.0, wd / 4) if wd else 1.0

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Start, serve until a stop is requested, stop cleanly; return the exit status."""
        agent = self.agent = Agent(self.config, config_file=str(self.config_file), heartbeats=self.heartbeats)
        agent.heartbeat_limit_s = self.heartbeat_limit_s
        try:
            if self.config.metrics.enabled:  # first: a busy port fails the start before devices open
                self.metrics = MetricsServer(self.config.metrics, self.snapshot)
            agent.start()
        except BaseException:
            if self.metrics is not None:
                self.metrics.close()
            agent.stop(self.config.daemon.stop_timeout_s)
            raise
        self._publish_status()
        deadline = time.monotonic() + self.config.daemon.ready_timeout_s
        while not agent.devices_attempted() and time.monotonic() < deadline and not self._stop:
            self._wake.wait(0.1)
        self.state = "running"
        line = summary_line(self.snapshot())
        self.notifier.ready(line)
        log.info("ready: %s", line)
        next_status = 0.0
        while not self._stop:
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._reload and not self._stop:
                self._reload = False
                self._do_reload()
                next_status = 0.0
            self._check_loops()
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.config.daemon.status_interval_s
                self._publish_status()
        return self._shutdown()

    def _check_loops(self) -> None:
        """Feed the watchdog only while every loop progresses; report a stall once when it starts."""
        limit = self.heartbeat_limit_s
        stalled = self.heartbeats.stalled(limit)
        names = {a.name for a in stalled}
        if not stalled:
            self.notifier.watchdog()
        for a in stalled:
            if a.name not in self._stalled:
                msg = (
                    f"loop {a.name} has made no progress for {a.age_s:.1f} s (limit {limit:g} s + "
                    f"{a.allowance_s:g} s announced)"
                    + (
                        "; withholding the systemd watchdog so systemd restarts the agent"
                        if self.notifier.watchdog_s
                        else ""
                    )
                )
                log.error("%s", msg, extra={"event": "loop_stalled", "loop": a.name})
                self._event("loop_stalled", msg, {"loop": a.name, "age_s": round(a.age_s, 3)})
        for name in self._stalled - names:
            log.warning("loop %s is progressing again", name)
        self._stalled = names
        if stalled:
            self.notifier.status(summary_line(self.snapshot()))

    def _publish_status(self) -> None:
        snap = self.snapshot()
        self.notifier.status(summary_line(snap))
        try:
            write_status(self.config.agent.data_dir, snap)
        except OSError as exc:
            log.error("cannot write the status file in %s: %s", self.config.agent.data_dir, exc.strerror)

    def _event(self, kind: str, message: str, detail: dict[str, Any]) -> None:
        try:
            with Catalog(self.config.agent.data_dir / "catalog.sqlite", self.config.agent.device_id) as cat:
                cat.add_event(kind, message, detail=detail)
        except Exception as exc:  # the supervisor must outlive a catalog that cannot take an event
            log.error("cannot record a %s event: %s", kind, exc)

    # ------------------------------------------------------------------ reload

    def _do_reload(self) -> None:
        agent = self.agent
        assert agent is not None
        self.notifier.reloading()
        self.state = "reloading"
        try:
            new = load_checked(self.config_file)
            blocked = agent.restart_needed(new)
            if blocked:
                raise ReloadRefused(
                    f"{self.config_file}: {', '.join(blocked)} changed; that takes effect only on a restart "
                    "(systemctl restart fieldcap-agent)"
                )
            changes = agent.apply(new)
        except Exception as exc:  # any failure keeps the old configuration running
            why = str(exc) or type(exc).__name__
            self.reloads["rejected"] += 1
            self.last_reload_error = why
            log.error(
                "reload refused, still running the previous configuration: %s", why, extra={"event": "config_rejected"}
            )
            self._event(
                "config_rejected",
                f"reload refused, previous configuration kept: {why}",
                {"file": str(self.config_file)},
            )
        else:
            self.config = new
            agent.heartbeat_limit_s = self.heartbeat_limit_s
            self.reloads["ok"] += 1
            self.last_reload_error = None
            self.config_loaded_utc = utc_now()
            what = ", ".join(changes) or "nothing changed"
            log.info("configuration reloaded: %s", what, extra={"event": "config_reloaded"})
            self._event(
                "config_reloaded",
                f"configuration reloaded from {self.config_file}: {what}",
                {"file": str(self.config_file), "changes": changes},
            )
        finally:
            self.state = "running"
            self.notifier.ready(summary_line(self.snapshot()))

    # ------------------------------------------------------------------ stop

    def _shutdown(self) -> int:
        agent = self.agent
        assert agent is not None
        self.state = "stopping"
        budget = self.config.daemon.stop_timeout_s
        self.notifier.stopping(f"stopping: flushing open segments, draining the writer (budget {budget:g} s)")
        t0 = time.monotonic()
        agent.stop(max(1.0, budget - 1.0))
        if self.metrics is not None:
            self.metrics.close()
        self.state = "stopped"
        self._publish_status()
        log.info("stopped in %.1f s", time.monotonic() - t0)
        self.notifier.close()
        return 0

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """The agent's numbers plus the service's own: what status, STATUS= and metrics show."""
        snap = self.agent.snapshot() if self.agent is not None else {}
        snap.update(
            {
                "pid": os.getpid(),
                "state": self.state,
                "started_utc": self.started_utc,
                "written_utc": utc_now(),
                "uptime_s": round(time.monotonic() - self.started_mono, 3),
                "config_file": str(self.config_file),
                "config_loaded_utc": self.config_loaded_utc,
                "reloads": dict(self.reloads),
                "last_reload_error": self.last_reload_error,
                "metrics_url": self.metrics.url if self.metrics is not None else None,
                "watchdog_s": self.notifier.watchdog_s,
                "heartbeat_limit_s": self.heartbeat_limit_s,
            }
        )
        problems, warnings = problems_of(snap)
        snap["health"] = "degraded" if problems else "ok"
        snap["problems"] = problems
        snap["warnings"] = warnings
        return snap
