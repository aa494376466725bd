"""Broker restarts (SIGTERM and SIGKILL, with and without persistence) mid-record and mid-blob.

The device and the ingester both lose the broker; without persistence the broker also forgets
their sessions, the ingester's subscription and every queued message. Nothing may be lost or
stored twice, and the device must confirm everything once the broker is back.
"""

from __future__ import annotations

import signal

import pytest
from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    running_ingester,
    running_publisher,
    settings,
    staged_bytes,
    wait_for,
)

from central.broker import LocalBroker


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "ephemeral"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_broker_restart_mid_record_and_mid_blob(
    tmp_path: object, device: Device, central: Central, sig: signal.Signals, persistence: bool
) -> None:
    device.add(records=1000, blob_sizes=(1_200_000, 60_000), seed=11)
    with LocalBroker(persistence=persistence) as broker:
        sync = settings(broker.url, bandwidth_bps=400_000)
        with running_ingester(broker.url, central) as ing, running_publisher(device, sync) as pub:
            wait_for(lambda: device.confirmed() > 0, 30, "the first records to be confirmed")
            assert device.confirmed() < 1000, "too fast to restart mid-record"
            broker.restart(sig)  # mid-record
            staged = staged_bytes(central)
            wait_for(lambda: pub.stats.connects >= 2, 30, "the device to reconnect")
            wait_for(lambda: staged_bytes(central) > staged, 60, "the blob upload to go on")
            assert central.store.count("blobs") < 2, "too fast to restart mid-blob"
            broker.restart(sig)  # mid-blob
            assert pub.wait_idle(90), pub.stats
            assert pub.stats.connects >= 3 and ing.stats.connected
    assert_exactly_once(device, central)
