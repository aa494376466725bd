"""The Prometheus endpoint of a running agent, scraped over HTTP and checked against the catalog."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from waits import wait_until

from agent.config import MetricsSettings, parse_config
from agent.daemon import Agent
from agent.errors import ConfigError, FieldcapError
from agent.ops.disk import disk_usage
from agent.ops.metrics import MetricsServer


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_serves_the_agents_numbers(tmp_path: Path) -> None:
    config = parse_config(
        {
            "agent": {"device_id": "metrics-01", "data_dir": str(tmp_path / "data")},
            "devices": [
                {"name": "cam", "type": "sim-camera", "width": 64, "height": 48, "fps": 10},
                {"name": "mic", "type": "sim-microphone", "sample_rate": 8000, "channels": 1, "blocksize": 800},
            ],
            "capture": {
                "cam": {"policy": "interval", "interval_s": 0.2},
                "mic": {"policy": "segment", "segment_s": 0.5},
            },
            "sync": {"enabled": False},
            "daemon": {"status_interval_s": 0.3},
        }
    )
    agent = Agent(config)
    agent.start()
    server = MetricsServer(MetricsSettings(port=0), agent.snapshot)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        wait_until("captures", lambda: agent.streams["cam"].samples > 15 and agent.streams["mic"].samples > 15)
        live = scrape(server.url)
        assert live[("fieldcap_stream_up", (("stream", "cam"),))] == 1.0
        assert live[("fieldcap_frames_captured_total", (("stream", "cam"),))] > 0
        agent.stop_capture(20)
        assert agent.wait_screened(60)
        with agent.catalog() as cat:
            verdicts = dict(
                cat.conn.execute("SELECT profile || '/' || verdict, COUNT(*) FROM verdicts GROUP BY 1").fetchall()
            )
            backlog = cat.conn.execute("SELECT COUNT(*) FROM outbox WHERE record_state = 'pending'").fetchone()[0]
            blob_bytes = cat.conn.execute("SELECT SUM(blob_size) FROM outbox WHERE blob_sha256 IS NOT NULL").fetchone()[
                0
            ]
        # Housekeeping refreshes the catalog numbers every status_interval_s.
        wait_until("backlog numbers", lambda: scrape(server.url)[("fieldcap_outbox_backlog_records", ())] == backlog)
        m = scrape(server.url)
        assert m[("fieldcap_outbox_backlog_bytes", ())] == blob_bytes
        for key, n in verdicts.items():
            profile, verdict = key.split("/")
            assert m[("fieldcap_qc_verdicts_total", (("profile", profile), ("verdict", verdict)))] == n
        mic_total = sum(n for k, n in verdicts.items() if k.startswith("booth-speech/"))
        if mic_total:
            expected = verdicts.get("booth-speech/pass", 0) / mic_total
            assert m[("fieldcap_qc_pass_ratio", (("profile", "booth-speech"),))] == pytest.approx(expected, abs=1e-3)
        for stream in ("cam", "mic"):
            labels = (("stream", stream),)
            assert m[("fieldcap_frames_captured_total", labels)] == agent.streams[stream].samples
            assert m[("fieldcap_driver_restarts_total", labels)] == 0
            assert m[("fieldcap_stream_up", labels)] == 0.0  # capture stopped
            for reason in ("driver", "gap", "duplicate", "bad_frame", "writer_queue", "disk_full"):
                assert (("fieldcap_frames_dropped_total", (("reason", reason), *labels))) in m
        assert ("fieldcap_audio_overflows_total", (("stream", "mic"),)) in m
        free = disk_usage(tmp_path / "data").free_bytes
        assert m[("fieldcap_disk_free_bytes", ())] == pytest.approx(free, rel=0.01)
        assert m[("fieldcap_media_paused", ())] == 0.0
        assert m[("fieldcap_clock_synced", ())] == float(agent.clock.health().synced)
        assert ("fieldcap_last_receipt_age_seconds", ()) not in m  # never had a receipt: no made-up age
        assert m[("fieldcap_loop_stalled", (("loop", "writer"),))] == 0.0
        assert m[("fieldcap_agent_info", (("device_id", "metrics-01"),))] == 1.0
    finally:
        server.close()
        agent.stop(20)


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FieldcapError, match=rf"metrics: cannot listen on 127.0.0.1:{port}: .*\[metrics\] port"):
            MetricsServer(MetricsSettings(port=port), dict)


def test_metrics_address_must_be_an_ip() -> None:
    with pytest.raises(ConfigError, match=r"metrics: address 'localhost' is not an IP address"):
        parse_config({"agent": {"device_id": "x"}, "metrics": {"address": "localhost"}})
