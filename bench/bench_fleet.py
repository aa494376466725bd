"""A fleet of devices through one broker to 1, 2 and 4 ingesters on PostgreSQL.

    python bench/bench_fleet.py [--devices 10,100,1000] [--ingesters 1,2,4] [--seconds 60]
                                [--mix booth|camera] [--workers 4] [--backlog N] [--blobs DIR|s3://BUCKET/PREFIX]

Each simulated device is lightweight but real: its own catalog (SQLite) and outbox, and its own
publisher (one MQTT connection, signed receipts verified), in ``--workers`` processes. A producer in
each worker commits the mix at the device's pace for ``--seconds``; then the run waits for the
backlog to drain. The mixes, per device:

    booth   a 5 s 16 kHz mono take (160 kB WAV) and its take record every 20 s
    camera  a 100 kB frame every 10 s and a sensor readings record every 10 s

Reported per run: offered and sustained records/s and MB/s (confirmed on the devices),
capture-commit → receipt latency p50/p99 (polled every 0.25 s, so ±0.25 s), CPU seconds of the
ingesters per 1,000 records and per MB, and the CPU share of each component (devices, broker,
ingesters, PostgreSQL) — the one near a full core is the bottleneck. Results go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sync import drop_tables, ingesters, throwaway_postgres  # noqa: E402
from soak_procs import cpu_seconds  # noqa: E402

from agent.catalog.db import Catalog  # noqa: E402
from central.broker import LocalBroker  # noqa: E402
from sync.files import write_atomic  # noqa: E402
from sync.mqtt import Credentials  # noqa: E402
from sync.outbox import BlobRef  # noqa: E402
from sync.publisher import Publisher  # noqa: E402
from sync.settings import SyncSettings  # noqa: E402
from sync.signing import ReceiptVerifier, generate  # noqa: E402

MIXES: dict[str, tuple[float, int, str]] = {  # period (s), media bytes, media type
    "booth": (20.0, 160_044, "audio/wav"),
    "camera": (10.0, 100_000, "image/jpeg"),
}
POLL_S = 0.25


def _commit(cat: Catalog, root: Path, mix: str, i: int) -> list[str]:
    """One period's items of the mix: a media capture plus a small record."""
    _period, size, media_type = MIXES[mix]
    now, utc = time.monotonic_ns(), time.time_ns()
    rel = f"media/{mix}/{i:07d}.bin"
    written = write_atomic(root / rel, os.urandom(size))
    ref = BlobRef(written.sha256, written.size, written.path, media_type)
    common = {"t_start_mono_ns": now, "t_end_mono_ns": now, "t_start_utc_ns": utc, "seq_first": i, "seq_last": i}
    media_id = cat.add_capture(
        stream="mic" if mix == "booth" else "cam",
        kind="take" if mix == "booth" else "frame",
        modality="audio" if mix == "booth" else "visible",
        media=ref,
        media_rel=rel,
        meta={"item": i},
        **common,
    )
    small_id = cat.add_capture(
        stream="env", kind="reading", modality="sensor", media=None, media_rel=None, meta={"t_c": 21.5}, **common
    )
    return [media_id, small_id]


def worker(
    devices: list[str], workdir: str, broker: str, public_key: str, mix: str, seconds: float, backlog: int, out: Any
) -> None:
    """Run ``devices`` (catalog + publisher each) for ``seconds`` of production, then drain; report.

    With ``backlog``, each device first commits that many periods of the mix and the clock runs
    from the publishers' start until everything is confirmed: the most the fleet path sustains.
    """
    period = MIXES[mix][0]
    roots = {d: Path(workdir) / d for d in devices}
    verifier = ReceiptVerifier.load(Path(public_key))
    settings = SyncSettings(broker=broker, receipt_timeout_s=60.0)
    pubs: list[Publisher] = []
    queued = 0
    t_start = 0.0
    for d in devices:
        catalog = roots[d] / "catalog.sqlite"
        with Catalog(catalog, d, synchronous="normal") as cat:
            for i in range(backlog):
                _commit(cat, roots[d], mix, i)
                queued += 1
        pub = Publisher(
            device_id=d,
            settings=settings,
            credentials=Credentials(),
            open_store=lambda c=catalog, dev=d: Catalog(c, dev, synchronous="normal").outbox,
            verifier=verifier,
        )
        pubs.append(pub)
    t_start = time.monotonic()
    for pub in pubs:
        pub.start()
    cats = {d: Catalog(roots[d] / "catalog.sqlite", d, synchronous="normal") for d in devices}
    committed: dict[str, dict[str, float]] = {d: {} for d in devices}  # record id -> commit time
    latencies: list[float] = []
    media_bytes = 0
    stop_watch = threading.Event()

    def watch() -> None:
        """Poll each catalog for newly confirmed items (their latency, ± the poll period)."""
        with contextlib.ExitStack() as stack:
            readers = {d: stack.enter_context(Catalog(roots[d] / "catalog.sqlite", d)) for d in devices}
            while True:
                done = stop_watch.is_set()
                now = time.monotonic()
                for d, cat in readers.items():
                    waiting = list(committed[d])  # items confirm out of order (media after records)
                    for i in range(0, len(waiting), 500):
                        part = waiting[i : i + 500]
                        rows = cat.conn.execute(
                            "SELECT record_id FROM outbox WHERE confirmed_utc IS NOT NULL AND record_id IN"
                            f" ({','.join('?' * len(part))})",
                            part,
                        ).fetchall()
                        for (rid,) in rows:
                            t = committed[d].pop(rid, None)
                            if t is not None:
                                latencies.append(now - t)
                if done:
                    return
                time.sleep(POLL_S)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic() if not backlog else t_start
    offsets = {d: (k / max(1, len(devices))) * period for k, d in enumerate(devices)}  # spread the devices
    produced = dict.fromkeys(devices, backlog)
    while not backlog and time.monotonic() - t0 < seconds:
        now = time.monotonic() - t0
        for d in devices:
            while produced[d] * period + offsets[d] <= now:
                for rid in _commit(cats[d], roots[d], mix, produced[d]):
                    committed[d][rid] = time.monotonic()
                produced[d] += 1
                media_bytes += MIXES[mix][1]
        time.sleep(0.05)
    produced_s = time.monotonic() - t0
    drained = all(p.wait_idle(600) for p in pubs)
    drain_s = time.monotonic() - t0
    time.sleep(2 * POLL_S)
    stop_watch.set()
    watcher.join(30)
    for p in pubs:
        p.stop(30)
    for c in cats.values():
        c.close()
    out.put(
        {
            "records": sum(produced.values()) * 2,
            "media_bytes": media_bytes + queued * MIXES[mix][1],
            "produced_s": produced_s,
            "drain_s": drain_s,
            "drained": drained,
            "latencies": latencies,
            "unconfirmed": sum(len(v) for v in committed.values()),
            "cpu": time.process_time(),
        }
    )


def _pg_pids(data_dir: Path) -> list[int]:
    """The postmaster of our throwaway cluster and its children."""
    try:
        master = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            pids.append(int(stat.parent.name))
    return pids


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


def run(n: int, k: int, args: argparse.Namespace, store: str, pg_data: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"fieldcap-fleet-{n}-{k}-"))
    drop_tables(store)
    private, public, _ = generate(work / "keys")
    blobs = args.blobs or str(work / "blobs")
    broker_conf = "max_connections -1\nmax_queued_messages 100000\n"
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(LocalBroker(work / "broker", extra_config=broker_conf))
        procs = stack.enter_context(
            ingesters(broker.url, store, Path(blobs), k, work / "ingest", "--receipt-key", str(private))
        )
        ing = [p.pid for p in procs]
        pg = _pg_pids(pg_data) if pg_data else []
        broker_pid = [broker.proc.pid] if broker.proc else []
        cpu0 = {"ingesters": _cpu(ing), "postgres": _cpu(pg), "broker": _cpu(broker_pid)}
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        names = [f"fleet-{i:04d}" for i in range(n)]
        w = max(1, min(args.workers, n))
        workers = [
            ctx.Process(
                target=worker,
                args=(
                    names[j::w],
                    str(work / "devices"),
                    broker.url,
                    str(public),
                    args.mix,
                    args.seconds,
                    args.backlog,
                    queue,
                ),
            )
            for j in range(w)
        ]
        t0 = time.monotonic()
        for wp in workers:
            wp.start()
        results = [queue.get(timeout=args.seconds + 900) for _ in workers]
        wall = time.monotonic() - t0
        for wp in workers:
            wp.join(60)
        cpu = {
            "ingesters": _cpu(ing) - cpu0["ingesters"],
            "postgres": _cpu(pg) - cpu0["postgres"],
            "broker": _cpu(broker_pid) - cpu0["broker"],
        }
        dev_cpu = sum(r.get("cpu", 0.0) for r in results)
    records = sum(r["records"] for r in results)
    mb = sum(r["media_bytes"] for r in results) / 1e6
    drain = max(r["drain_s"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    shares = {c: round(v / wall, 2) for c, v in {**cpu, "devices": dev_cpu}.items()}
    return {
        "devices": n,
        "ingesters": k,
        "mix": args.mix,
        "backlog_per_device": args.backlog,
        "offered_records_s": round(records / args.seconds, 1) if not args.backlog else None,
        "sustained_records_s": round(records / drain, 1),
        "offered_mb_s": round(mb / args.seconds, 2) if not args.backlog else None,
        "sustained_mb_s": round(mb / drain, 2),
        "drained": all(r["drained"] for r in results),
        "unconfirmed": sum(r["unconfirmed"] for r in results),
        "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
        "latency_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "ingest_cpu_s_per_1k_records": round(1000 * cpu["ingesters"] / max(1, records), 3),
        "ingest_cpu_s_per_mb": round(cpu["ingesters"] / max(mb, 1e-9), 3),
        "cpu_share_of_one_core": shares,
        "device_processes_cpu_s": round(dev_cpu, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="10,100,1000")
    ap.add_argument("--ingesters", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mix", choices=sorted(MIXES), default="camera")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--backlog", type=int, default=0, help="periods of the mix each device holds before it syncs")
    ap.add_argument("--blobs", help="blob store: a directory (default: one per run) or s3://BUCKET/PREFIX")
    ap.add_argument("--store", help="PostgreSQL URL (default: a throwaway cluster)")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        if args.store:
            store, pg_data = args.store, None
        else:
            store = stack.enter_context(throwaway_postgres())
            pg_data = _throwaway_data_dir(store)
        for n in (int(x) for x in args.devices.split(",")):
            for k in (int(x) for x in args.ingesters.split(",")):
                result = run(n, k, args, store, pg_data)
                print(json.dumps(result), flush=True)


def _throwaway_data_dir(url: str) -> Path | None:
    """The data directory of the throwaway cluster serving ``url`` (for its CPU accounting)."""
    port = url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    for pidfile in Path(tempfile.gettempdir()).glob("fieldcap-bench-pg-*/data/postmaster.pid"):
        lines = pidfile.read_text().splitlines()
        if len(lines) > 3 and lines[3].strip() == port:
            return pidfile.parent
    return None


if __name__ == "__main__":
    main()
