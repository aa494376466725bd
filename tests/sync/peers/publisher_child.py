"""The device's publisher alone, in its own process, over an existing catalog (tests kill it -9).

Usage: publisher_child.py DATA_DIR DEVICE_ID SYNC_SETTINGS_JSON
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from agent.catalog.db import Catalog
from sync.mqtt import Credentials
from sync.publisher import Publisher
from sync.settings import SyncSettings


def main() -> None:
    root, device, settings_json = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pub = Publisher(
        device_id=device,
        settings=SyncSettings.model_validate_json(settings_json),
        credentials=Credentials(),
        open_store=lambda: Catalog(root / "catalog.sqlite", device, synchronous="normal").outbox,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    pub.start()
    done.wait()
    pub.stop(10)
    print("STATS " + json.dumps(dataclasses.asdict(pub.stats)), flush=True)


if __name__ == "__main__":
    main()
