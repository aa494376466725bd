"""Network faults between the device and a real Mosquitto, through an in-process TCP proxy.

Each test ends with the same check: every committed capture is stored centrally exactly once with
the right sha256, and the device deleted nothing that was not confirmed.
"""

from __future__ import annotations

import time

from mqtt_proxy import Proxy
from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    running_ingester,
    running_publisher,
    settings,
    wait_for,
)

from central.broker import LocalBroker


def test_half_open_connection_is_detected_and_the_upload_resumes(
    mosquitto: LocalBroker, device: Device, central: Central
) -> None:
    device.add(records=200, blob_sizes=(800_000, 400_000), seed=2)
    with (
        running_ingester(mosquitto.url, central),
        Proxy(mosquitto.port) as proxy,
        running_publisher(device, settings(proxy.url, bandwidth_bps=400_000)) as pub,
    ):
        wait_for(lambda: central.store.count("chunks") > 0, 30, "some chunks to arrive")
        proxy.blackhole = True  # nothing gets through, but both TCP connections stay open
        wait_for(lambda: pub.stats.disconnects >= 1, 30, "the publisher to notice the dead link")
        confirmed_during = device.confirmed()
        time.sleep(1.0)
        assert device.confirmed() == confirmed_during  # nothing is confirmed without a receipt
        proxy.blackhole = False
        assert pub.wait_idle(60), pub.stats
        assert pub.stats.connects >= 2
    assert_exactly_once(device, central)


def test_connection_resets_mid_transfer(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=500, blob_sizes=(2_000_000, 300_000, 70_000), seed=3)
    with (
        running_ingester(mosquitto.url, central),
        Proxy(mosquitto.port) as proxy,
        running_publisher(device, settings(proxy.url, bandwidth_bps=1_000_000)) as pub,
    ):
        for n in range(3):
            wait_for(lambda n=n: pub.stats.connects > n and proxy.live() > 0, 30, "a connection")
            time.sleep(0.4)
            proxy.reset()
        assert pub.wait_idle(60), pub.stats
        assert pub.stats.connects >= 4
    assert_exactly_once(device, central)


def test_added_latency(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=100, blob_sizes=(300_000,), seed=4)
    with (
        running_ingester(mosquitto.url, central),
        Proxy(mosquitto.port) as proxy,
    ):
        proxy.latency_s = 0.25  # each way, so a PUBACK takes 0.5 s
        with running_publisher(device, settings(proxy.url)) as pub:
            assert pub.wait_idle(60), pub.stats
            assert pub.stats.connects == 1  # latency alone must not look like a dead link
    assert_exactly_once(device, central)


def test_throttled_network(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=50, blob_sizes=(600_000,), seed=5)
    with running_ingester(mosquitto.url, central), Proxy(mosquitto.port) as proxy:
        proxy.bandwidth_bps = 200_000
        t0 = time.monotonic()
        with running_publisher(device, settings(proxy.url)) as pub:
            assert pub.wait_idle(90), pub.stats
        assert time.monotonic() - t0 >= 600_000 / 200_000 * 0.8  # it really went through the throttle
        assert pub.stats.connects == 1
    assert_exactly_once(device, central)


def test_bandwidth_cap_on_the_device(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(blob_sizes=(400_000, 400_000), seed=6)
    cap = 200_000
    with running_ingester(mosquitto.url, central):
        t0 = time.monotonic()
        with running_publisher(device, settings(mosquitto.url, bandwidth_bps=cap)) as pub:
            assert pub.wait_idle(60), pub.stats
            elapsed = time.monotonic() - t0
            burst = max(65536, cap // 4)
            # Never faster than the cap allows (a slower machine only makes this easier).
            assert pub.stats.bytes_sent - burst <= cap * elapsed, (pub.stats.bytes_sent, elapsed)
    assert_exactly_once(device, central)


def test_long_outage_with_a_large_backlog(mosquitto: LocalBroker, device: Device, central: Central) -> None:
    device.add(records=100, blob_sizes=(100_000,), seed=7)
    with (
        running_ingester(mosquitto.url, central),
        Proxy(mosquitto.port) as proxy,
        running_publisher(device, settings(proxy.url)) as pub,
    ):
        assert pub.wait_idle(30), pub.stats
        proxy.refuse = True
        proxy.reset()
        wait_for(lambda: not pub.stats.connected, 10, "the publisher to lose the broker")
        # While the device is cut off it keeps capturing: a backlog builds up in the outbox.
        for seed in range(8, 12):
            device.add(records=800, blob_sizes=(250_000, 40_000, 0), seed=seed)
        time.sleep(3)  # several refused reconnect attempts
        assert device.confirmed() < device.total()
        proxy.refuse = False
        assert pub.wait_idle(120), pub.stats
    assert_exactly_once(device, central)
