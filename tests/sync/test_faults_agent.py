"""The device's publisher killed with SIGKILL mid-transfer, and resumed from its SQLite outbox.

The publisher runs in a child process over the device's catalog file; the test kills it while
records are in flight, again while a blob is half uploaded, and resumes the last time with a
different chunk size (the central side addresses chunks by offset, so the ranges still fit).
"""

from __future__ import annotations

import json
from pathlib import Path

from sync_harness import (
    Central,
    Device,
    assert_exactly_once,
    kill9,
    publisher_process,
    running_ingester,
    settings,
    staged_bytes,
    stop,
    wait_for,
)

from central.broker import LocalBroker


def test_kill9_mid_record_and_mid_blob_then_resume_with_another_chunk_size(
    mosquitto: LocalBroker, device: Device, central: Central, tmp_path: Path
) -> None:
    device.add(records=1500, blob_sizes=(3_000_000, 200_000), seed=21)
    log = tmp_path / "publisher.log"
    slow = settings(mosquitto.url, bandwidth_bps=500_000, chunk_size=65536)
    with running_ingester(mosquitto.url, central):
        first = publisher_process(device, slow, log)
        wait_for(lambda: device.confirmed() > 0, 60, "the first records to be confirmed")
        kill9(first)  # mid-record
        assert device.confirmed() < device.total()

        before = staged_bytes(central)
        second = publisher_process(device, slow, log)
        wait_for(lambda: staged_bytes(central) > before, 60, "the second to upload part of a blob")
        kill9(second)  # mid-blob
        staged = staged_bytes(central)
        assert staged > 0 and central.store.count("blobs") < 2

        third = publisher_process(device, settings(mosquitto.url, chunk_size=20000), log)
        try:
            wait_for(lambda: device.confirmed() == device.total(), 90, "every item to be confirmed")
        finally:
            stop(third)
    assert_exactly_once(device, central)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    stats = json.loads(text.split("STATS ")[-1].splitlines()[0])
    # It resumed: the staged bytes were not sent again (20000-byte chunks of what was missing).
    assert 0 < stats["chunks_sent"] * 20000 < 3_200_000 - staged + 20000 * 4, (stats, staged)
