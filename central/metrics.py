"""Prometheus metrics and a once-a-minute log line for ``fieldcap ingest``.

Both read the ingester's counters (``IngestStats``), so what a scrape shows and what the log says are
the same numbers: every refusal (invalid record, quota, oversize message, rate-limited query or dead
letter) is visible in both, beside what was stored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from central.errors import CentralError

if TYPE_CHECKING:
    from central.ingester import IngestStats

log = logging.getLogger("fieldcap.ingest")

# counter name (without fieldcap_ingest_ and _total) -> (IngestStats field, help)
COUNTERS: dict[str, tuple[str, str]] = {
    "messages": ("messages", "Messages received from devices."),
    "records_stored": ("records_stored", "Records stored (first copy)."),
    "duplicates": ("duplicates", "Records and blobs a device sent again (answered, not stored twice)."),
    "chunks": ("chunks", "Blob chunks received."),
    "chunk_bytes": ("chunk_bytes", "Bytes of blob chunks received."),
    "blobs_stored": ("blobs_stored", "Blobs verified (size and sha256) and stored."),
    "rejected": ("rejected", "Messages refused with a 'rejected' receipt or a dead letter."),
    "records_invalid": ("records_invalid", "Records refused because their body does not match its kind's schema."),
    "quota_refusals": ("quota_refusals", "Uploads refused by the blob size limit or a device quota."),
    "query_items_limited": ("query_items_limited", "Query items left unanswered: the device asked too fast."),
    "dead_letters_dropped": ("dead_letters_dropped", "Dead letters counted but not kept (over a device's rate)."),
    "oversize_dropped": ("oversize_dropped", "Messages dropped unread: larger than the protocol allows."),
    "uploads_expired": ("uploads_expired", "Abandoned uploads removed by the sweep."),
    "staging_files_removed": ("staging_files_removed", "Orphan staging files removed by the sweep."),
    "dead_letters_expired": ("dead_letters_expired", "Dead letters removed for age."),
    "batches": ("batches", "Store transactions committed."),
    "outages": ("outages", "Times the store or blob disk could not take data (not acknowledged, retried)."),
}

# the once-a-minute line: the totals people look for first
SUMMARY = (
    "messages",
    "records_stored",
    "blobs_stored",
    "duplicates",
    "rejected",
    "records_invalid",
    "quota_refusals",
    "oversize_dropped",
    "dead_letters_dropped",
)


class IngestCollector(Collector):
    """Reads the counters at scrape time (no bookkeeping in the ingest path)."""

    def __init__(self, stats: Callable[[], IngestStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name, (attr, doc) in COUNTERS.items():
            yield CounterMetricFamily(f"fieldcap_ingest_{name}", doc, value=float(getattr(stats, attr)))
        by_device = CounterMetricFamily(
            "fieldcap_ingest_dead_letters_dropped_by_device",
            "Dead letters counted but not kept, per device.",
            labels=["device"],
        )
        for device, n in sorted(dict(stats.dead_letters_dropped_by_device).items()):
            by_device.add_metric([device], float(n))
        yield by_device
        by_kind = CounterMetricFamily(
            "fieldcap_ingest_records_stored_by_kind", "Records stored (first copy), per record kind.", labels=["kind"]
        )
        for kind, n in sorted(dict(stats.records_by_kind).items()):
            by_kind.add_metric([kind], float(n))
        yield by_kind
        yield CounterMetricFamily(
            "fieldcap_ingest_blob_bytes_stored",
            "Bytes of blobs verified and stored.",
            value=float(stats.blob_bytes_stored),
        )
        by_reason = CounterMetricFamily(
            "fieldcap_ingest_rejected_by_reason",
            "Refusals (rejected receipts and dead letters) by the reason's leading words (at most 40, then other).",
            labels=["reason"],
        )
        for reason, n in sorted(dict(stats.rejected_by_reason).items()):
            by_reason.add_metric([reason], float(n))
        yield by_reason
        yield GaugeMetricFamily("fieldcap_ingest_connected", "1 while connected to the broker.", value=stats.connected)
        yield GaugeMetricFamily(
            "fieldcap_ingest_open_uploads", "Unfinished uploads in the store (all ingesters).", value=stats.open_uploads
        )
        yield GaugeMetricFamily(
            "fieldcap_ingest_staged_bytes",
            "Bytes announced by unfinished uploads (all ingesters).",
            value=stats.staged_bytes,
        )
        receipts = HistogramMetricFamily(
            "fieldcap_ingest_receipt_latency_seconds", "Message arrival to its receipt published."
        )
        receipts.add_metric([], stats.receipt_latency.buckets(), stats.receipt_latency.total)
        yield receipts
        store = HistogramMetricFamily(
            "fieldcap_ingest_store_latency_seconds", "One store transaction (a batch of messages)."
        )
        store.add_metric([], stats.store_latency.buckets(), stats.store_latency.total)
        yield store


class IngestMetricsServer:
    """The ingester's HTTP endpoint (``port = 0`` picks a free port; ``url`` says which)."""

    def __init__(self, address: str, port: int, stats: Callable[[], IngestStats]) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise CentralError(f"--metrics-address {address!r} is not an IP address; use 127.0.0.1 or ::1") from None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(IngestCollector(stats))
        try:
            server, thread = start_http_server(port, address, self.registry)
        except OSError as exc:
            raise CentralError(
                f"metrics: cannot listen on {address}:{port}: {exc.strerror}; choose another --metrics-port"
            ) from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        host = address if ":" not in address else f"[{address}]"
        self.url = f"http://{host}:{server.server_port}/metrics"
        log.info("metrics on %s", self.url)
        if not ip.is_loopback:
            log.warning(
                "metrics endpoint %s is reachable from other machines (%s is not a loopback address); it names "
                "every device that misbehaved. Bind it to 127.0.0.1 and let a local collector scrape it, or "
                "firewall the port",
                self.url,
                address,
            )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def summary_line(stats: IngestStats, previous: dict[str, int] | None = None) -> str:
    """``messages 120 (+30), records_stored 100 (+25), ...``: totals, with the change since ``previous``."""
    now = dataclasses.asdict(stats)
    parts = []
    for key in SUMMARY:
        value = int(now[key])
        delta = value - previous.get(key, 0) if previous is not None else None
        parts.append(f"{key} {value}" + (f" (+{delta})" if delta else ""))
    return ", ".join(parts)
