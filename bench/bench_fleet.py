"""A fleet of devices through one broker to 1, 2 and 4 ingesters on PostgreSQL.

    python bench/bench_fleet.py [--devices 10,100,1000] [--ingesters 1,2,4] [--seconds 60]
                                [--mix booth|camera|records] [--period S] [--workers 4]
                                [--backlog N [--hold]] [--blobs local,moto,DIR,s3://BUCKET/PREFIX]
                                [--repeat R]

Each simulated device is lightweight but real: its own catalog (SQLite) and outbox, and its own
publisher (one MQTT connection, signed receipts verified), in ``--workers`` processes. A producer in
each worker commits the mix at the device's pace (``--period`` overrides the mix's) for
``--seconds``; then the run waits for the backlog to drain. The mixes, per device:

    booth    a 5 s 16 kHz mono take (160 kB WAV) and its take record every 20 s
    camera   a 100 kB frame every 10 s and a sensor readings record every 10 s
    records  two sensor readings records every 10 s (no media)

``--backlog N``: each device holds N periods of the mix before it syncs, and the clock runs from
the publishers' start until everything is confirmed. ``--hold`` as well: the ingesters are stopped
(SIGSTOP, with broker sessions that keep their queues) while the devices hand their records to the
broker, and the clock runs from the ingesters' resumption — the devices then only apply receipts,
so what is timed is the ingesters' own drain (media cannot be held: a blob's chunks wait for an
ingester's answer to its announcement; use ``--mix records``).

``--blobs``: each store in turn for every combination — ``local`` (a directory of the run),
``moto`` (a throwaway S3 server, moto's HTTP server as the tests start it, through boto3), a
directory or ``s3://BUCKET/PREFIX`` (the AWS_* environment).

Reported per run: offered and sustained records/s and MB/s (confirmed on the devices),
capture-commit → receipt latency p50/p99 (polled every 0.25 s, so ±0.25 s), CPU seconds of the
ingesters per 1,000 records and per MB and records per ingester CPU-second (equal for 1, 2 and 4
ingesters = no contention between them), and the CPU share of each component over the timed
interval (devices, broker, ingesters, PostgreSQL, the S3 server) — the one near a full core is the
bottleneck. Results go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
    "records": (10.0, 0, ""),
}
POLL_S = 0.25
# A device here holds about 10 file descriptors (three catalog connections: db + WAL each and the
# shared -shm; its MQTT socket and paho's wake-up socket pair). paho's loop() is select()-based and
# loses a connection whose socket is numbered 1024 or more (FD_SETSIZE) — it reports "connection
# lost" and the publisher reconnects and backs off for ever — so one process must stay well below
# 1024 descriptors: at most this many devices per worker process.
DEVICES_PER_WORKER = 80
SELECT_LIMIT = 1024


def _commit(cat: Catalog, root: Path, mix: str, i: int) -> list[str]:
    """One period's items of the mix: a media capture plus a small record."""
    _period, size, media_type = MIXES[mix]
    now, utc = time.monotonic_ns(), time.time_ns()
    common = {"t_start_mono_ns": now, "t_end_mono_ns": now, "t_start_utc_ns": utc, "seq_first": i, "seq_last": i}
    if not size:
        return [
            cat.add_capture(
                stream=stream, kind="reading", modality="sensor", media=None, media_rel=None, meta={"v": i}, **common
            )
            for stream in ("env", "power")
        ]
    rel = f"media/{mix}/{i:07d}.bin"
    written = write_atomic(root / rel, os.urandom(size))
    ref = BlobRef(written.sha256, written.size, written.path, media_type)
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


def _unsent(cat: Catalog) -> bool:
    """Records in this outbox the broker has not acknowledged yet (a blob needs an ingester's answer
    to its announcement before its chunks go, so media cannot be held in the broker)."""
    row = cat.conn.execute("SELECT EXISTS(SELECT 1 FROM outbox WHERE record_state = 'pending')").fetchone()
    return bool(row[0])


def _highest_descriptor() -> int:
    """The highest open descriptor number of this process (see DEVICES_PER_WORKER)."""
    return max((int(fd.name) for fd in Path("/proc/self/fd").iterdir()), default=0)


def worker(
    devices: list[str],
    workdir: str,
    broker: str,
    public_key: str,
    mix: str,
    period: float,
    seconds: float,
    backlog: int,
    hold: bool,
    out: Any,
    go: Any,
) -> None:
    """Run ``devices`` (catalog + publisher each) for ``seconds`` of production, then drain; report.

    With ``backlog``, each device first commits that many periods of the mix and the clock runs
    from the publishers' start until everything is confirmed: the most the fleet path sustains.
    With ``hold`` as well, the publishers hand the whole backlog to the broker while the ingesters
    are stopped, and the clock runs from the ingesters' resumption: the devices then only apply
    receipts, and the ingesters' own drain rate is what is measured.

    Messages to the parent: ``ready`` (set up; with ``hold``: all published), then after ``go``
    ``drained`` (when everything is confirmed, with this process's CPU seconds since ``go``),
    then the result.
    """
    roots = {d: Path(workdir) / d for d in devices}
    verifier = ReceiptVerifier.load(Path(public_key))
    settings = SyncSettings(broker=broker, receipt_timeout_s=3600.0 if hold else 60.0)
    pubs: list[Publisher] = []
    queued = 0
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
    cats = {d: Catalog(roots[d] / "catalog.sqlite", d, synchronous="normal") for d in devices}
    if hold:
        for pub in pubs:
            pub.start()
        while any(_unsent(c) for c in cats.values()):
            time.sleep(0.25)
    out.put(("ready", None))
    go.wait()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    if not hold:
        for pub in pubs:
            pub.start()
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
    deadline = time.monotonic() + 600
    idle = [p.wait_idle(max(0.0, deadline - time.monotonic())) for p in pubs]
    done = time.monotonic()
    out.put(("drained", (done, time.process_time() - cpu0)))
    highest_fd = _highest_descriptor()
    disconnects = sum(p.stats.disconnects for p in pubs)  # before stop() adds its own
    time.sleep(2 * POLL_S)
    stop_watch.set()
    watcher.join(30)
    for p in pubs:
        p.stop(30)
    for c in cats.values():
        c.close()
    out.put(
        (
            "result",
            {
                "records": sum(produced.values()) * 2,
                "media_bytes": media_bytes + queued * MIXES[mix][1],
                "produced_s": produced_s,
                "drain_s": done - t0,
                "drained": all(idle),
                "latencies": latencies,
                "unconfirmed": sum(len(v) for v in committed.values()),
                "devices_not_idle": idle.count(False),
                "disconnects": disconnects,
                "queries": sum(p.stats.queries for p in pubs),
                "highest_fd": highest_fd,
            },
        )
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


@contextlib.contextmanager
def blob_store(spec: str, work: Path) -> Iterator[tuple[str, list[str], list[int]]]:
    """The ``--blobs`` of the ingesters, their extra arguments and the store's own processes.

    ``local``: a directory of this run; ``moto``: a throwaway S3 server (moto's HTTP server, as
    the tests use) reached through boto3 over HTTP; otherwise a directory or s3://BUCKET/PREFIX.
    """
    if spec == "local":
        yield str(work / "blobs"), [], []
    elif spec == "moto":
        import boto3

        sys.path.insert(0, str(ROOT / "tests"))
        from s3_server import S3Server

        server = S3Server(work / "moto.log")
        env = server.start()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            boto3.client("s3").create_bucket(Bucket="fieldcap-bench")
            pids = [server._proc.pid] if server._proc else []
            yield "s3://fieldcap-bench/fleet", ["--staging", str(work / "staging")], pids
        finally:
            server.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    elif spec.startswith("s3://"):
        yield spec, ["--staging", str(work / "staging")], []
    else:
        yield spec, [], []


def run(n: int, k: int, blobs_spec: str, args: argparse.Namespace, store: str, pg_data: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"fieldcap-fleet-{n}-{k}-"))
    drop_tables(store)
    private, public, _ = generate(work / "keys")
    period = args.period or MIXES[args.mix][0]
    hold = args.hold and args.backlog > 0
    broker_conf = "max_connections -1\nmax_queued_messages 1000000\n"
    with contextlib.ExitStack() as stack:
        blobs, blob_args, s3_pids = stack.enter_context(blob_store(blobs_spec, work))
        broker = stack.enter_context(LocalBroker(work / "broker", extra_config=broker_conf))
        procs = stack.enter_context(
            ingesters(
                broker.url,
                store,
                blobs,
                k,
                work / "ingest",
                "--receipt-key",
                str(private),
                *blob_args,
                sessions=hold,
            )
        )
        pids = {
            "ingesters": [p.pid for p in procs],
            "postgres": _pg_pids(pg_data) if pg_data else [],
            "broker": [broker.proc.pid] if broker.proc else [],
            "s3": s3_pids,
        }
        if hold:
            for p in procs:
                os.kill(p.pid, signal.SIGSTOP)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        go = ctx.Event()
        names = [f"fleet-{i:04d}" for i in range(n)]
        w = max(1, min(n, max(args.workers, -(-n // DEVICES_PER_WORKER))))
        workers = [
            ctx.Process(
                target=worker,
                args=(
                    names[j::w],
                    str(work / "devices"),
                    broker.url,
                    str(public),
                    args.mix,
                    period,
                    args.seconds,
                    args.backlog,
                    hold,
                    queue,
                    go,
                ),
            )
            for j in range(w)
        ]
        for wp in workers:
            wp.start()
        timeout = 3600 + args.seconds
        messages: dict[str, list[Any]] = {"ready": [], "drained": [], "result": []}

        def gather(kind: str) -> list[Any]:
            while len(messages[kind]) < w:
                what, body = queue.get(timeout=timeout)
                messages[what].append(body)
            return messages[kind]

        gather("ready")
        cpu0 = {c: _cpu(p) for c, p in pids.items()}
        t0 = time.monotonic()
        if hold:
            for p in procs:
                os.kill(p.pid, signal.SIGCONT)
        go.set()
        drained = gather("drained")
        wall = time.monotonic() - t0
        cpu = {c: _cpu(p) - cpu0[c] for c, p in pids.items()}
        results = gather("result")
        for wp in workers:
            wp.join(60)
    cpu["devices"] = sum(c for _, c in drained)
    drain = max(done for done, _ in drained) - t0
    records = sum(r["records"] for r in results)
    mb = sum(r["media_bytes"] for r in results) / 1e6
    lat = sorted(x for r in results for x in r["latencies"])
    ingest_cpu = cpu["ingesters"]
    return {
        "devices": n,
        "ingesters": k,
        "blobs": blobs_spec,
        "mix": args.mix,
        "period_s": period,
        "backlog_per_device": args.backlog,
        "hold": hold,
        "offered_records_s": round(records / args.seconds, 1) if not args.backlog else None,
        "sustained_records_s": round(records / drain, 1),
        "offered_mb_s": round(mb / args.seconds, 2) if not args.backlog else None,
        "sustained_mb_s": round(mb / drain, 2),
        "seconds": round(drain, 1),
        "drained": all(r["drained"] for r in results),
        "devices_not_idle": sum(r["devices_not_idle"] for r in results),
        "unconfirmed": sum(r["unconfirmed"] for r in results),
        "disconnects": sum(r["disconnects"] for r in results),
        "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
        "latency_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "ingest_cpu_s_per_1k_records": round(1000 * ingest_cpu / max(1, records), 3),
        "ingest_cpu_s_per_mb": round(ingest_cpu / mb, 3) if mb else None,
        "records_per_ingester_cpu_s": round(records / ingest_cpu, 1) if ingest_cpu else None,
        "cpu_share_of_one_core": {c: round(v / wall, 2) for c, v in cpu.items() if pids.get(c, True)},
        "device_processes": w,
        "highest_fd": max(r["highest_fd"] for r in results),  # ≥ 1024: paho's select() lost connections
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="10,100,1000")
    ap.add_argument("--ingesters", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mix", choices=sorted(MIXES), default="camera")
    ap.add_argument("--period", type=float, help="seconds between a device's items of the mix (default: the mix's)")
    ap.add_argument(
        "--workers", type=int, default=4, help=f"device processes (at least one per {DEVICES_PER_WORKER} devices)"
    )
    ap.add_argument("--backlog", type=int, default=0, help="periods of the mix each device holds before it syncs")
    ap.add_argument(
        "--hold",
        action="store_true",
        help="with --backlog: the devices publish it to the broker while the ingesters are stopped; time the ingesters",
    )
    ap.add_argument(
        "--blobs",
        default="local",
        help="comma-separated blob stores, each run in turn: local, moto (a throwaway S3 server), DIR or s3://B/P",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of each combination (interleaved)")
    ap.add_argument("--store", help="PostgreSQL URL (default: a throwaway cluster)")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        if args.store:
            store, pg_data = args.store, None
        else:
            store = stack.enter_context(throwaway_postgres())
            pg_data = _throwaway_data_dir(store)
        for n in (int(x) for x in args.devices.split(",")):
            for _ in range(args.repeat):
                for k in (int(x) for x in args.ingesters.split(",")):
                    for blobs in args.blobs.split(","):
                        result = run(n, k, blobs, args, store, pg_data)
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
