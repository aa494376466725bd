"""An ingester in its own process that kills itself (SIGKILL) right after a commit, before its
receipts go out: the window in which the central side has stored something the device has not
heard about.

Usage: ingester_child.py BROKER_URL STORE_URL BLOB_DIR
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from central.blobs import BlobTree
from central.ingester import Ingester
from central.store import open_store


def main() -> None:
    broker, store_url, blob_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = open_store(store_url)
    ing = Ingester(broker=broker, store=store, blobs=BlobTree(blob_dir))

    def die_after_commit(_n: int) -> None:
        if ing.stats.records_stored > 0 and ing.pending_receipts:
            print(f"KILLED after committing {ing.stats.records_stored} records", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    ing.on_commit = die_after_commit
    ing.run()


if __name__ == "__main__":
    main()
