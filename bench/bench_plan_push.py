"""A collection plan pushed to 100 booths, half of them offline at push time.

    python bench/bench_plan_push.py [--booths 100] [--offline-s 10] [--command-interval 30] [--workers 4]

One real Mosquitto, one real ``fieldcap ingest`` (which publishes open commands again every
``--command-interval`` seconds until each device acknowledges it), and booths that are lightweight
but real: a catalog and a publisher each (signed commands verified), in ``--workers`` processes.
The plan is pushed (``central.plans.push``, what ``fieldcap central plan push`` runs) when half the
booths are online; the other half come online ``--offline-s`` later. Reported: seconds from the
push until every booth has stored its assignment and its acknowledgement is in the central store,
for the online and the late half, and how long after coming online the late booths took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sync import ingesters  # noqa: E402

from agent.catalog.db import Catalog  # noqa: E402
from central.broker import LocalBroker  # noqa: E402
from central.commands import list_commands  # noqa: E402
from central.plans.planfile import load_plan  # noqa: E402
from central.plans.push import push  # noqa: E402
from central.store import open_store  # noqa: E402
from sync.mqtt import Credentials  # noqa: E402
from sync.publisher import Publisher  # noqa: E402
from sync.settings import SyncSettings  # noqa: E402
from sync.signing import ReceiptVerifier, generate  # noqa: E402

PLAN = """\
name = "bench-plan"

[attributes]
sex = ["female", "male"]

[consent]
scope = "speech-corpus"
max_age_days = 365

[scripts.words]
items = [{id = "w1", text = "seven", type = "word"}, {id = "w2", text = "eight", type = "word"}]

[rounds]
r1 = ["words"]

[sites.lab]
booths = [BOOTHS]
speakers = 40
"""


def booths_worker(names: list[str], workdir: str, broker: str, public_key: str, start_at: float, out: Any) -> None:
    """Bring ``names`` online at wall time ``start_at``; report when each stored its assignment."""
    from agent.catalog.plan_rows import current_assignment

    verifier = ReceiptVerifier.load(Path(public_key))
    settings = SyncSettings(broker=broker, receipt_timeout_s=60.0)
    time.sleep(max(0.0, start_at - time.time()))
    online = time.time()
    pubs = []
    for name in names:
        path = Path(workdir) / name / "catalog.sqlite"
        Catalog(path, name).close()
        pub = Publisher(
            device_id=name,
            settings=settings,
            credentials=Credentials(),
            open_store=lambda p=path, n=name: Catalog(p, n).outbox,
            verifier=verifier,
        )
        pub.start()
        pubs.append((name, path, pub))
    got: dict[str, float] = {}
    deadline = time.time() + 600
    while len(got) < len(names) and time.time() < deadline:
        for name, path, _pub in pubs:
            if name not in got:
                with Catalog(path, name) as cat:
                    if current_assignment(cat) is not None:
                        got[name] = time.time()
        time.sleep(0.2)
    for _name, _path, pub in pubs:
        pub.wait_idle(60)  # the acknowledgement record is synced
        pub.stop(30)
    out.put({"online": online, "stored": got, "missing": sorted(set(names) - set(got))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--booths", type=int, default=100)
    ap.add_argument("--offline-s", type=float, default=10.0)
    ap.add_argument("--command-interval", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fieldcap-plan-push-"))
    names = [f"booth-{i:03d}" for i in range(args.booths)]
    plan_file = work / "plan.toml"
    plan_file.write_text(PLAN.replace("BOOTHS", ", ".join(f'"{n}"' for n in names)))
    private, public, _ = generate(work / "keys")
    store_url = f"sqlite:///{work / 'central.sqlite'}"
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(LocalBroker(work / "broker"))
        stack.enter_context(
            ingesters(
                broker.url,
                store_url,
                work / "blobs",
                1,
                work / "ingest",
                "--receipt-key",
                str(private),
                "--command-interval",
                str(args.command_interval),
            )
        )
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        early, late = names[::2], names[1::2]
        t_push = time.time() + 5.0  # the early half is online by then
        procs = []
        for group, start in ((early, time.time()), (late, t_push + args.offline_s)):
            w = max(1, args.workers // 2)
            for j in range(w):
                part = group[j::w]
                procs.append(
                    ctx.Process(
                        target=booths_worker, args=(part, str(work / "booths"), broker.url, str(public), start, queue)
                    )
                )
        for p in procs:
            p.start()
        time.sleep(max(0.0, t_push - time.time()))
        store = open_store(store_url)
        try:
            push(store, load_plan(plan_file), "bench")
            pushed = time.time()
            results = [queue.get(timeout=900) for _ in procs]
            deadline = time.time() + 120
            while time.time() < deadline:
                acked = [c for c in list_commands(store, "assignment") if c.acked_utc]
                if len(acked) == len(names):
                    break
                time.sleep(0.2)
            all_acked = time.time()
        finally:
            store.close()
        for p in procs:
            p.join(60)
    stored = {n: t for r in results for n, t in r["stored"].items()}
    online = {n: r["online"] for r in results for n in r["stored"]}
    missing = [n for r in results for n in r["missing"]]
    late_after_online = [stored[n] - online[n] for n in late if n in stored]
    print(
        json.dumps(
            {
                "booths": args.booths,
                "offline_at_push": len(late),
                "offline_s": args.offline_s,
                "command_interval_s": args.command_interval,
                "online_half_all_stored_s": round(max(stored[n] for n in early if n in stored) - pushed, 2),
                "late_half_all_stored_s": round(max(stored[n] for n in late if n in stored) - pushed, 2),
                "late_half_after_coming_online_max_s": round(max(late_after_online), 2),
                "every_ack_central_s": round(all_acked - pushed, 2),
                "missing": missing,
            }
        )
    )


if __name__ == "__main__":
    main()
