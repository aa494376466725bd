"""Sync throughput end to end, against raw paho-mqtt QoS 1 on the same broker in the same run.

    python bench/bench_sync.py [--records N] [--media-mb M] [--backlog-mb B] [--no-pg] [--repeat R]

The floor is ``bench/baselines/mqtt_raw.py`` itself (imported: its throwaway Mosquitto and its
publish → subscriber loop), run on the same broker process as our measurements, interleaved with
them, so machine load affects both alike. Ours is the real path: a device catalog (SQLite) → the
publisher → Mosquitto → ``fieldcap ingest`` in its own process → the central store → a receipt →
the catalog row marked confirmed. The clock stops when the last item is confirmed on the device.

Targets (issue 6): records ≥ 50 % of the raw QoS 1 rate; media ≥ 50 MB/s with 64 KiB chunks and
sha256 verification; a one-hour booth backlog (2 ch × 48 kHz × 16 bit ≈ 690 MB, as 10 s WAV
segments) drained in ≤ 30 s (``--backlog-mb`` runs a smaller one against the same rate); and two
ingesters on PostgreSQL against one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.catalog.db import Catalog  # noqa: E402
from sync.files import write_atomic  # noqa: E402
from sync.mqtt import Credentials  # noqa: E402
from sync.outbox import BlobRef  # noqa: E402
from sync.publisher import Publisher  # noqa: E402
from sync.settings import SyncSettings  # noqa: E402
from sync.signing import ReceiptVerifier, generate  # noqa: E402

SEGMENT_BYTES = 44 + 10 * 48_000 * 2 * 2  # a 10 s stereo 48 kHz 16-bit WAV segment
HOUR_MB = 3600 * 48_000 * 2 * 2 / 1e6  # ≈ 691 MB
DEVICE = "bench-01"


def load_baseline(path: Path) -> ModuleType:
    if not path.exists():
        sys.exit(f"baseline not found: {path} (pass --baseline PATH to bench/baselines/mqtt_raw.py)")
    spec = importlib.util.spec_from_file_location("mqtt_raw", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- our side


def make_device(root: Path, records: int, blob_sizes: list[int]) -> Path:
    """A device data directory whose catalog holds committed records and media (not timed)."""
    now = time.monotonic_ns()
    with Catalog(root / "catalog.sqlite", DEVICE, synchronous="normal") as cat:
        for i in range(records):
            cat.add_capture(
                stream="env",
                kind="reading",
                modality="sensor",
                t_start_mono_ns=now + i,
                t_end_mono_ns=now + i,
                t_start_utc_ns=time.time_ns(),
                seq_first=i,
                seq_last=i,
                media=None,
                media_rel=None,
                meta={"temperature_c": 21.5 + i % 7, "humidity_pct": 40 + i % 11},
            )
        for i, size in enumerate(blob_sizes):
            rel = f"media/booth/{i:05d}.wav"
            written = write_atomic(root / rel, os.urandom(size))
            ref = BlobRef(written.sha256, written.size, written.path, "audio/wav")
            cat.add_capture(
                stream="booth",
                kind="segment",
                modality="audio",
                t_start_mono_ns=now + i,
                t_end_mono_ns=now + i,
                t_start_utc_ns=time.time_ns(),
                seq_first=i,
                seq_last=i,
                media=ref,
                media_rel=rel,
                meta={"channels": 2, "rate": 48000},
            )
    return root / "catalog.sqlite"


def mean_record_bytes(catalog: Path) -> int:
    with Catalog(catalog, DEVICE) as cat:
        row = cat.conn.execute("SELECT AVG(LENGTH(body_json)) FROM outbox WHERE blob_sha256 IS NULL").fetchone()
    return int(row[0] or 300)


def confirmed(catalog: Path) -> tuple[int, int]:
    with Catalog(catalog, DEVICE) as cat:
        done = cat.conn.execute("SELECT COUNT(*) FROM outbox WHERE confirmed_utc IS NOT NULL").fetchone()[0]
        total = cat.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return int(done), int(total)


@contextlib.contextmanager
def ingesters(
    broker_url: str, store_url: str, blobs: Path | str, n: int, log: Path, *extra: str, sessions: bool = False
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``fieldcap ingest`` processes in one shared-subscription group, ready when subscribed.

    ``blobs``: a directory or ``s3://BUCKET/PREFIX``. ``sessions``: each ingester gets a fixed
    client id and a broker session that outlives its connection (its queue survives a stall).
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(n):
            klog = log.with_suffix(f".{k}.log")
            own = ["--client-id", f"bench-ingest-{k}", "--session-expiry", "3600"] if sessions else []
            with klog.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "agent",
                            "-v",
                            "ingest",
                            "--broker",
                            broker_url,
                            "--store",
                            store_url,
                            "--blobs",
                            str(blobs),
                            "--group",
                            "bench",
                            *own,
                            *extra,
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )
            deadline = time.monotonic() + 60
            while b"ingesting from" not in klog.read_bytes():
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the ingester did not start:\n{klog.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def run_ours(
    port: int,
    workdir: Path,
    records: int,
    blob_sizes: list[int],
    *,
    store_url: str | None = None,
    ingest_count: int = 1,
    max_inflight: int = 64,
    signed: bool = True,
) -> float:
    """Seconds from publisher start until the device has every item confirmed.

    ``signed``: the ingesters sign receipts and the device verifies them (as in production).
    """
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalog = make_device(workdir / "device", records, blob_sizes)
    store = store_url or f"sqlite:///{workdir / 'central.db'}"
    settings = SyncSettings(broker=f"mqtt://127.0.0.1:{port}", receipt_timeout_s=60.0, max_inflight=max_inflight)
    extra: tuple[str, ...] = ()
    verifier = None
    if signed:
        private, public, _ = generate(workdir / "keys")
        extra, verifier = ("--receipt-key", str(private)), ReceiptVerifier.load(public)
    with ingesters(settings.broker, store, workdir / "blobs", ingest_count, workdir / "ingest", *extra):
        pub = Publisher(
            device_id=DEVICE,
            settings=settings,
            credentials=Credentials(),
            open_store=lambda: Catalog(catalog, DEVICE, synchronous="normal").outbox,
            verifier=verifier,
        )
        t0 = time.perf_counter()
        pub.start()
        try:
            if not pub.wait_idle(1800):
                sys.exit(f"the outbox did not drain: {pub.stats}")
            elapsed = time.perf_counter() - t0
        finally:
            pub.stop(30)
    done, total = confirmed(catalog)
    if done != total:
        sys.exit(f"only {done} of {total} items confirmed")
    return elapsed


# ---------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A private PostgreSQL cluster on a free port (Debian's server binaries), removed afterwards."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if not bins:
        raise RuntimeError("PostgreSQL server binaries are missing (apt-get install postgresql)")
    pg = bins[0]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    tmp = Path(tempfile.mkdtemp(prefix="fieldcap-bench-pg-"))
    tmp.chmod(0o777)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    port = _free_port()
    data = tmp / "data"
    subprocess.run(
        [*as_pg, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*as_pg, str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        subprocess.run(
            [*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False
        )
        shutil.rmtree(tmp, ignore_errors=True)


def drop_tables(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # every table, whatever the schema version made
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


# ---------------------------------------------------------------------------- main


def signing_cost(port: int, work: Path, records: int, media_mb: float, repeat: int) -> None:
    """Records/s and MB/s with signed receipts against unsigned ones, interleaved on one broker."""
    n_media = max(1, round(media_mb * 1e6 / 8e6))
    rates: dict[tuple[str, bool], list[float]] = {}
    for i in range(repeat):
        for signed in (False, True) if i % 2 == 0 else (True, False):
            rec = records / run_ours(port, work / "records", records, [], signed=signed)
            mbs = n_media * 8 / run_ours(port, work / "media", 0, [8_000_000] * n_media, signed=signed)
            rates.setdefault(("records", signed), []).append(rec)
            rates.setdefault(("media", signed), []).append(mbs)
            print(f"  round {i + 1} {'signed' if signed else 'unsigned'}: {rec:,.0f} records/s, {mbs:.1f} MB/s")
    for what, unit in (("records", "records/s"), ("media", "MB/s")):
        plain, signed_ = statistics.median(rates[(what, False)]), statistics.median(rates[(what, True)])
        print(
            f"{what}: unsigned {plain:,.1f} {unit}, signed {signed_:,.1f} {unit} (median of {repeat}):"
            f" {signed_ / plain - 1:+.1%}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000, help="records for the record-rate run")
    ap.add_argument("--media-mb", type=float, default=400, help="megabytes of media (8 MB files) for the media run")
    ap.add_argument("--backlog-mb", type=float, default=HOUR_MB, help="booth backlog in MB (10 s WAV segments)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of the record-rate comparison")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL one-vs-two ingesters run")
    ap.add_argument("--baseline", type=Path, default=ROOT / "bench" / "baselines" / "mqtt_raw.py")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--signing-cost",
        action="store_true",
        help="only compare signed with unsigned receipts (records and media, interleaved --repeat times)",
    )
    args = ap.parse_args()

    raw = load_baseline(args.baseline)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fieldcap-bench-sync-"))
    proc, port = raw.broker()  # the baseline's own throwaway Mosquitto, shared by every run below
    try:
        print(f"broker: mosquitto on 127.0.0.1:{port} (the baseline's config); workdir {work}")
        size = mean_record_bytes(make_device(work / "probe", 50, []))
        shutil.rmtree(work / "probe")
        if args.signing_cost:
            signing_cost(port, work, args.records, args.media_mb, args.repeat)
            return

        # Records: raw paho QoS 1 (best of inflight 20 / 1000, delivered to the subscriber) vs ours.
        raw_rates, our_rates = [], []
        for i in range(args.repeat):
            best = 0.0
            for inflight in (20, 1000):
                _t_ack, t_recv = raw.run(port, args.records, size, inflight)
                best = max(best, args.records / t_recv)
            raw_rates.append(best)
            ours = args.records / run_ours(port, work / "records", args.records, [])
            our_rates.append(ours)
            print(
                f"  round {i + 1}: raw paho QoS1 {best:,.0f} msg/s  ours end to end {ours:,.0f} records/s"
                f"  ratio {ours / best:.2f}"
            )
        r_raw, r_ours = statistics.median(raw_rates), statistics.median(our_rates)
        print(
            f"records ({size} B each, median of {args.repeat}): raw {r_raw:,.0f} msg/s, ours {r_ours:,.0f} records/s"
            f" end to end = {r_ours / r_raw:.0%} of raw (target >= 50%)"
        )

        # Media: 64 KiB chunks, sha256 verified centrally, against raw 64 KiB QoS 1 publishes.
        n_media = max(1, round(args.media_mb * 1e6 / 8e6))
        chunks = n_media * 8_000_000 // 65536
        _t_ack, t_recv = raw.run(port, chunks, 65536, 1000)
        raw_mbs = chunks * 65536 / t_recv / 1e6
        t = run_ours(port, work / "media", 0, [8_000_000] * n_media)
        mbs = n_media * 8 / t
        print(
            f"media ({n_media} x 8 MB, 64 KiB chunks, sha256 verified): {mbs:.1f} MB/s (target >= 50);"
            f" raw paho 64 KiB QoS1 {raw_mbs:.1f} MB/s, ratio {mbs / raw_mbs:.2f}"
        )

        # One-hour booth backlog (or a part of it, judged against the same rate).
        n_seg = max(1, round(args.backlog_mb * 1e6 / SEGMENT_BYTES))
        t = run_ours(port, work / "backlog", 0, [SEGMENT_BYTES] * n_seg)
        mb = n_seg * SEGMENT_BYTES / 1e6
        limit = 30.0 * mb / HOUR_MB
        print(
            f"backlog ({n_seg} x 10 s WAV segments, {mb:.0f} MB): drained in {t:.1f} s ({mb / t:.1f} MB/s;"
            f" target <= {limit:.1f} s, i.e. one hour of booth audio in <= 30 s: {t / limit * 30:.1f} s)"
        )

        if not args.no_pg:
            with throwaway_postgres() as url:
                times = {}
                for k in (1, 2):
                    drop_tables(url)
                    times[k] = run_ours(
                        port, work / f"pg{k}", 2000, [8_000_000] * n_media, store_url=url, ingest_count=k
                    )
                    print(
                        f"postgresql, {k} ingester(s): {n_media * 8 / times[k]:.1f} MB/s media"
                        f" + 2000 records in {times[k]:.1f} s"
                    )
                print(f"two ingesters on PostgreSQL vs one: {times[1] / times[2]:.2f}x")
    finally:
        proc.terminate()
        proc.wait()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
