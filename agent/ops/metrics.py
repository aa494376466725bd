"""Prometheus metrics on localhost, built at scrape time from the same snapshot as ``fieldcap status``.

A custom collector (not global counters sprinkled through the code) turns ``Supervisor.snapshot()``
into metric families, so the endpoint, the status file and systemd's ``STATUS=`` can never
disagree. The registry is private to the agent: no process/platform collectors of the library's
global registry, and a test can run several agents in one process.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.config import MetricsSettings
from agent.errors import FieldcapError

log = logging.getLogger("fieldcap.metrics")

Snapshot = Callable[[], dict[str, Any]]

# status key -> ``reason`` label
DROP_REASONS = {
    "drops": "driver",
    "gaps": "gap",
    "duplicates": "duplicate",
    "bad_frames": "bad_frame",
    "writer_queue": "writer_queue",
    "disk_full": "disk_full",
}


class AgentCollector(Collector):
    """Metric families from one snapshot per scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield from _streams(snap)
        yield from _qc(snap)
        yield from _sync(snap)
        yield from _disk(snap)
        yield from _daemon(snap)


def _streams(snap: dict[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily("fieldcap_stream_up", "1 while the stream's device is open and read.", labels=["stream"])
    captured = CounterMetricFamily(
        "fieldcap_frames_captured",
        "Samples delivered by the device (frames, audio blocks, readings).",
        labels=["stream"],
    )
    dropped = CounterMetricFamily(
        "fieldcap_frames_dropped",
        "Samples or captures lost, by reason: driver (the device or its buffer dropped them), gap (the device's "
        "counter skipped), duplicate, bad_frame, writer_queue (the writer fell behind), disk_full (media refused).",
        labels=["stream", "reason"],
    )
    overflows = CounterMetricFamily("fieldcap_audio_overflows", "Audio input overflows.", labels=["stream"])
    restarts = CounterMetricFamily("fieldcap_driver_restarts", "Stream restarts after a failure.", labels=["stream"])
    age = GaugeMetricFamily(
        "fieldcap_stream_last_sample_age_seconds", "Seconds since the stream's last sample.", labels=["stream"]
    )
    for name, s in snap.get("streams", {}).items():
        up.add_metric([name], 1.0 if s["state"] == "running" else 0.0)
        captured.add_metric([name], float(s.get("samples", 0)))
        for key, reason in DROP_REASONS.items():
            dropped.add_metric([name, reason], float((s.get("dropped") or {}).get(key, 0)))
        restarts.add_metric([name], float(s.get("restarts", 0)))
        if s.get("modality") == "audio":
            overflows.add_metric([name], float(s.get("overflows", 0)))
        if s.get("last_sample_age_s") is not None:
            age.add_metric([name], float(s["last_sample_age_s"]))
    yield from (up, captured, dropped, overflows, restarts, age)


def _qc(snap: dict[str, Any]) -> Iterator[Metric]:
    verdicts = CounterMetricFamily("fieldcap_qc_verdicts", "QC verdicts by profile.", labels=["profile", "verdict"])
    rate = GaugeMetricFamily(
        "fieldcap_qc_pass_ratio", "Share of verdicts that passed, per profile.", labels=["profile"]
    )
    for profile, q in (snap.get("qc") or {}).items():
        for verdict in ("pass", "fail", "review"):
            verdicts.add_metric([profile, verdict], float(q.get(verdict, 0)))
        if q.get("pass_rate") is not None:
            rate.add_metric([profile], float(q["pass_rate"]))
    backlog = snap.get("qc_backlog") or {}
    waiting = GaugeMetricFamily(
        "fieldcap_qc_backlog_captures", "Captures waiting for their QC verdict (counted up to 10,000)."
    )
    waiting.add_metric([], float(backlog.get("captures", 0)))
    oldest = GaugeMetricFamily(
        "fieldcap_qc_backlog_oldest_seconds", "Age of the oldest capture waiting for QC (0 when none waits)."
    )
    oldest.add_metric([], float(backlog.get("oldest_age_s") or 0.0))
    unscreened = CounterMetricFamily(
        "fieldcap_qc_unscreened", "Captures QC marked unscreened because it fell behind ([qc] when_behind)."
    )
    unscreened.add_metric([], float(backlog.get("unscreened", 0)))
    yield from (verdicts, rate, waiting, oldest, unscreened)


def _sync(snap: dict[str, Any]) -> Iterator[Metric]:
    outbox = snap.get("outbox") or {}
    yield GaugeMetricFamily(
        "fieldcap_outbox_backlog_records",
        "Records not yet confirmed by a central receipt.",
        value=float(outbox.get("records", 0)),
    )
    yield GaugeMetricFamily(
        "fieldcap_outbox_backlog_bytes",
        "Bytes of media not yet confirmed by a central receipt.",
        value=float(outbox.get("bytes", 0)),
    )
    yield GaugeMetricFamily(
        "fieldcap_outbox_rejected_records", "Records the central side rejected.", value=float(outbox.get("rejected", 0))
    )
    age = GaugeMetricFamily("fieldcap_last_receipt_age_seconds", "Seconds since the last central receipt.")
    if snap.get("last_receipt_age_s") is not None:
        age.add_metric([], float(snap["last_receipt_age_s"]))
    yield age
    if snap.get("broker_connected") is not None:
        yield GaugeMetricFamily(
            "fieldcap_broker_connected", "1 while connected to the broker.", value=float(bool(snap["broker_connected"]))
        )
    if snap.get("forged_receipts") is not None:
        yield CounterMetricFamily(
            "fieldcap_forged_receipts",
            "Receipt messages refused because the central side's signature was missing or wrong.",
            value=float(snap["forged_receipts"]),
        )


def _disk(snap: dict[str, Any]) -> Iterator[Metric]:
    disk = snap.get("disk") or {}
    if not disk:
        return
    yield GaugeMetricFamily(
        "fieldcap_disk_free_bytes", "Free bytes on the data directory's filesystem.", value=float(disk["free_bytes"])
    )
    yield GaugeMetricFamily(
        "fieldcap_disk_size_bytes", "Size of the data directory's filesystem.", value=float(disk["total_bytes"])
    )
    yield GaugeMetricFamily(
        "fieldcap_disk_used_ratio",
        "Used share of the data directory's filesystem.",
        value=float(disk["used_pct"]) / 100.0,
    )
    yield GaugeMetricFamily(
        "fieldcap_media_paused",
        "1 while new media is refused because the disk is full of unsynced data (an alert).",
        value=float(bool(disk["media_paused"])),
    )
    yield CounterMetricFamily(
        "fieldcap_evicted_files",
        "Confirmed media files deleted to free space.",
        value=float(disk.get("evicted_files", 0)),
    )
    yield CounterMetricFamily(
        "fieldcap_evicted_bytes",
        "Bytes of confirmed media deleted to free space.",
        value=float(disk.get("evicted_bytes", 0)),
    )
    refused = CounterMetricFamily(
        "fieldcap_captures_refused", "Captures not written while media was paused.", labels=["stream"]
    )
    for stream, n in (disk.get("refused") or {}).items():
        refused.add_metric([stream], float(n))
    yield refused


def _daemon(snap: dict[str, Any]) -> Iterator[Metric]:
    clock = snap.get("clock") or {}
    if clock:
        yield GaugeMetricFamily(
            "fieldcap_clock_synced",
            "1 when the system clock is synchronised (NTP/chrony).",
            value=float(bool(clock.get("synced"))),
        )
        if clock.get("maxerror_us") is not None:
            yield GaugeMetricFamily(
                "fieldcap_clock_maxerror_seconds",
                "Kernel's maximum clock error estimate.",
                value=float(clock["maxerror_us"]) / 1e6,
            )
    loops = GaugeMetricFamily(
        "fieldcap_loop_heartbeat_age_seconds", "Seconds since each loop last made progress.", labels=["loop"]
    )
    stalled = GaugeMetricFamily(
        "fieldcap_loop_stalled", "1 when a loop has not made progress in time.", labels=["loop"]
    )
    for name, loop in (snap.get("loops") or {}).items():
        loops.add_metric([name], float(loop["age_s"]))
        stalled.add_metric([name], float(bool(loop["stalled"])))
    yield from (loops, stalled)
    reloads = CounterMetricFamily("fieldcap_config_reloads", "Configuration reloads by result.", labels=["result"])
    for result, n in (snap.get("reloads") or {}).items():
        reloads.add_metric([result], float(n))
    yield reloads
    info = GaugeMetricFamily("fieldcap_agent_info", "The agent's identity.", labels=["device_id"])
    info.add_metric([str(snap.get("device_id", ""))], 1.0)
    yield info


class MetricsServer:
    """The HTTP endpoint; ``url`` says where it listens (``port = 0`` picks a free port)."""

    def __init__(self, settings: MetricsSettings, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(snapshot))
        try:
            server, thread = start_http_server(settings.port, settings.address, self.registry)
        except OSError as exc:
            raise FieldcapError(
                f"metrics: cannot listen on {settings.address}:{settings.port}: {exc.strerror}; "
                "choose another [metrics] port or set enabled = false"
            ) from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        host = settings.address if ":" not in settings.address else f"[{settings.address}]"
        self.url = f"http://{host}:{server.server_port}/metrics"
        log.info("metrics on %s", self.url)
        if not ipaddress.ip_address(settings.address).is_loopback:
            log.warning(
                "metrics endpoint %s is reachable from other machines (%s is not a loopback address); it tells "
                "anyone who can reach it the device id, streams and backlog. Bind it to 127.0.0.1 and let a local "
                "collector scrape it, or firewall the port",
                self.url,
                settings.address,
            )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
