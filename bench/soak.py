"""Soak and chaos: the whole product under a seeded schedule of faults, every promise checked at the end.

    python bench/soak.py --minutes 30 --faults 50 [--seed 1] [--pg] [--workdir DIR]

It runs the real daemon (`fieldcap run`) with simulated visible + IR cameras, a two-microphone
booth (Silero VAD and DNSMOS loaded), a simulated sensor, a serial line-protocol sensor on a pty and
an RTSP camera (gst-rtsp-server), a Mosquitto with persistence, and one SQLite ingester (or, with
`--pg`, two ingesters sharing a subscription on PostgreSQL). The agent reaches the broker through a
TCP proxy so the network can fail. The fault schedule (seeded, reproducible) injects: agent
`kill -9`, broker SIGKILL and SIGTERM restarts, network blackhole / reset / throttle, ingester
`kill -9`, disk pressure (a filler file on the agent's own small tmpfs), the RTSP camera dying and
returning, and garbage on the serial line.

At the end it lets the backlog drain and checks: every capture the agent committed is stored
centrally exactly once with a matching sha256 (blob files re-hashed); every local event (drops,
evictions, refused captures, losses) is present centrally; the device deleted no media that was
not confirmed; agent RSS stayed ≤ 250 MB; an idle agent uses ≤ 2 % CPU. It prints a report and exits
1 if any promise is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soak_procs import Proc, SerialFeeder, cpu_seconds, log, memory_breakdown, rss_mb  # noqa: E402  (bench/ is on sys.path)

from central.broker import LocalBroker, free_port, wait_port  # noqa: E402
from sync.signing import PRIVATE_NAME, PUBLIC_NAME, generate  # noqa: E402


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


Proxy = _load(ROOT / "tests" / "sync" / "mqtt_proxy.py", "fieldcap_soak_proxy").Proxy
PgCluster = _load(ROOT / "tests" / "pg_cluster.py", "fieldcap_soak_pg").PgCluster
PY = sys.executable
SYSTEM_PYTHON = "/usr/bin/python3"
FAULT_KINDS = (
    "agent_kill9",
    "broker_kill9",
    "broker_term",
    "net_blackhole",
    "net_reset",
    "net_throttle",
    "ingester_kill9",
    "disk_pressure",
    "camera_outage",
    "serial_noise",
)
RSS_BUDGET_MB = 250.0
IDLE_CPU_BUDGET = 0.02


# ---------------------------------------------------------------------------- the harness


@dataclass
class Soak:
    workdir: Path
    minutes: float
    faults: int
    seed: int
    pg: bool
    rng: random.Random = field(init=False)
    injected: Counter[str] = field(default_factory=Counter)
    max_rss: float = 0.0
    max_sampled: float = 0.0  # the highest VmRSS a sample saw, and where that memory was
    at_max: str = ""
    last_fault: str = ""
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.data = self.workdir / "agent"
        self.central = self.workdir / "central"
        self.blobs = self.central / "blobs"
        self.keys = self.workdir / "keys"

    # -- setup ---------------------------------------------------------------------------

    def mount_data(self) -> bool:
        """The agent's data on its own small tmpfs, so disk pressure is real and contained."""
        self.data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return False
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384m", "tmpfs", str(self.data)], check=False)
        return res.returncode == 0

    def config(self, broker_port: int, rtsp_url: str, tty: str, devices: bool = True) -> Path:
        model_dir = os.environ.get("FIELDCAP_MODEL_DIR", str(ROOT / ".cache" / "models"))
        devs = f"""
[[devices]]
name = "cam-visible"
type = "sim-camera"
width = 1280
height = 720
fps = 5

[[devices]]
name = "cam-ir"
type = "sim-thermal"
fps = 9

[[devices]]
name = "booth-mics"
type = "sim-microphone"
channels = 2
speech_like = true

[[devices]]
name = "env"
type = "sim-serial"
rate_hz = 2

[[devices]]
name = "air"
type = "serial-lines"
port = "{tty}"
format = "jsonl"
read_timeout_s = 10
fields = [{{ name = "pm25", min = 0, max = 1000 }}, {{ name = "co2", min = 0, max = 10000 }}]

[[devices]]
name = "cam-rtsp"
type = "rtsp"
url = "{rtsp_url}"
read_timeout_s = 5

[capture.cam-visible]
policy = "interval"
interval_s = 2

[capture.cam-ir]
policy = "interval"
interval_s = 2

[capture.booth-mics]
policy = "segment"
segment_s = 10

[capture.env]
policy = "readings"
batch_s = 10

[capture.air]
policy = "readings"
batch_s = 10

[capture.cam-rtsp]
policy = "interval"
interval_s = 5
"""
        # Disk pressure needs a quick disk check; the idle agent keeps the production default.
        storage = "[storage]\nhigh_watermark_pct = 90\nlow_watermark_pct = 75\ncheck_interval_s = 2\n"
        storage = storage if devices else ""
        text = f"""
[agent]
device_id = "soak-01"
site = "soak"
data_dir = "{self.data}"
{devs if devices else ""}
{storage}
[daemon]
max_restarts = 1000

[metrics]
enabled = false

[qc]
model_dir = "{model_dir}"

[qc.profiles.booth-speech]
use_dnsmos = true

[sync]
broker = "mqtt://127.0.0.1:{broker_port}"
receipt_timeout_s = 10
receipt_public_key = "{self.keys / PUBLIC_NAME}"
"""
        path = self.workdir / ("agent.toml" if devices else "idle.toml")
        path.write_text(text)
        return path

    # -- run -----------------------------------------------------------------------------

    def run(self) -> int:
        mounted = self.mount_data()
        self.central.mkdir(parents=True, exist_ok=True)
        pg = PgCluster() if self.pg else None
        store = pg.start() if pg else f"sqlite:///{self.central / 'central.db'}"
        broker = LocalBroker(self.workdir / "broker", persistence=True).start()
        proxy = Proxy(broker.port).__enter__()
        feeder = SerialFeeder()
        feeder.start()
        rtsp_port = free_port()
        rtsp = Proc(
            "rtsp",
            [SYSTEM_PYTHON, str(ROOT / "tests/drivers/peers/rtsp_server.py"), str(rtsp_port), "320", "240", "5"],
            self.workdir / "rtsp.log",
        )
        rtsp.start()
        wait_port(rtsp_port, 20)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        generate(self.keys)  # signed receipts, as in production: only they let the device evict media
        n_ingesters = 2 if self.pg else 1
        ingesters = [
            Proc(
                f"ingester{i}",
                [
                    PY,
                    "-m",
                    "agent",
                    "ingest",
                    "--broker",
                    broker.url,
                    "--store",
                    store,
                    "--blobs",
                    str(self.blobs),
                    "--group",
                    "soak",
                    "--receipt-key",
                    str(self.keys / PRIVATE_NAME),
                ],
                self.workdir / f"ingest{i}.log",
                env,
            )
            for i in range(n_ingesters)
        ]
        for ing in ingesters:
            ing.start()
        cfg = self.config(proxy.port, f"rtsp://127.0.0.1:{rtsp_port}/test", feeder.path)
        agent = Proc("agent", [PY, "-m", "agent", "run", "--config", str(cfg)], self.workdir / "agent.log", env)
        agent.start()
        log(
            f"soak: {self.minutes:g} min, {self.faults} faults, seed {self.seed}, store {store.split('@')[-1]}, "
            f"data on {'tmpfs' if mounted else 'the work disk (no disk-pressure faults without root)'}"
        )
        stop_sampling = threading.Event()
        sampler = threading.Thread(target=self._sample_rss, args=(agent, stop_sampling), daemon=True)
        sampler.start()
        try:
            self._chaos(agent, broker, proxy, ingesters, rtsp, feeder, mounted)
            log("faults over; restoring the peers, stopping capture, draining the backlog")
            for proc in (rtsp, *ingesters):
                if not proc.alive():
                    proc.start()
            if agent.alive():
                agent.signal(signal.SIGTERM, 60)
                if agent.p is not None and agent.p.returncode != 0:
                    self.problems.append(f"agent exited with {agent.p.returncode} on SIGTERM")
            stop_sampling.set()
            # The same data directory under a daemon with no devices: it only screens and syncs
            # what is left, and once that is done it is the idle agent whose CPU is measured.
            idle_cfg = self.config(proxy.port, "", "", devices=False)
            idle = Proc(
                "idle-agent", [PY, "-m", "agent", "run", "--config", str(idle_cfg)], self.workdir / "idle.log", env
            )
            idle.start()
            try:
                if not self._wait_drained(600.0):
                    self.problems.append("the outbox did not drain within 600 s after the faults")
                self._idle_cpu(idle)
            finally:
                idle.signal(signal.SIGTERM, 60)
            self._check(store)
        finally:
            stop_sampling.set()
            agent.signal(signal.SIGKILL)
            for ing in ingesters:
                ing.signal(signal.SIGTERM)
            rtsp.signal(signal.SIGKILL)
            feeder.stop()
            proxy.__exit__(None, None, None)
            broker.stop()
            if pg:
                pg.stop()
            if mounted:
                subprocess.run(["umount", "-l", str(self.data)], check=False)
        return self._report()

    def _sample_rss(self, agent: Proc, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            pid = agent.pid
            if pid:
                now, peak = rss_mb(pid)
                self.max_rss = max(self.max_rss, peak)
                if now > self.max_sampled:
                    self.max_sampled = now
                    self.at_max = f"{memory_breakdown(pid)}; last fault: {self.last_fault or 'none yet'}"

    # -- faults --------------------------------------------------------------------------

    def _schedule(self, mounted: bool) -> list[tuple[float, str]]:
        kinds = [k for k in FAULT_KINDS if mounted or k != "disk_pressure"]
        plan = [kinds[i % len(kinds)] for i in range(max(self.faults, len(kinds)))]
        self.rng.shuffle(plan)
        span = self.minutes * 60.0
        step = span / (len(plan) + 1)
        return [(step * (i + 1) + self.rng.uniform(-step / 4, step / 4), kind) for i, kind in enumerate(plan)]

    def _chaos(
        self,
        agent: Proc,
        broker: LocalBroker,
        proxy: Any,
        ingesters: list[Proc],
        rtsp: Proc,
        feeder: SerialFeeder,
        mounted: bool,
    ) -> None:
        start = time.monotonic()
        for at, kind in self._schedule(mounted):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not agent.alive():
                agent.start()  # the daemon died by itself: that is a finding, but keep going
                self.problems.append(
                    f"agent exited by itself (rc {agent.p.returncode if agent.p else '?'}) before {kind}"
                )
            hold = self.rng.uniform(2.0, 12.0)
            log(f"fault {sum(self.injected.values()) + 1}: {kind} ({hold:.1f} s)")
            self.injected[kind] += 1
            self.last_fault = f"{kind} at {at:.0f} s"
            if kind == "agent_kill9":
                agent.signal(signal.SIGKILL)
                time.sleep(min(hold, 3.0))
                agent.start()
            elif kind in ("broker_kill9", "broker_term"):
                broker.stop(signal.SIGKILL if kind == "broker_kill9" else signal.SIGTERM)
                time.sleep(min(hold, 8.0))
                broker.start()
            elif kind == "net_blackhole":
                proxy.blackhole = True
                time.sleep(hold)
                proxy.blackhole = False
            elif kind == "net_reset":
                proxy.reset()
            elif kind == "net_throttle":
                proxy.bandwidth_bps = 64 * 1024
                time.sleep(hold * 2)
                proxy.bandwidth_bps = None
            elif kind == "ingester_kill9":
                victim = self.rng.choice(ingesters)
                victim.signal(signal.SIGKILL)
                time.sleep(min(hold, 8.0))
                victim.start()
            elif kind == "disk_pressure":
                self._fill_disk(hold * 2)
            elif kind == "camera_outage":
                rtsp.signal(signal.SIGKILL)
                time.sleep(hold)
                rtsp.start()
            elif kind == "serial_noise":
                feeder.noise(self.rng)

    def _fill_disk(self, seconds: float) -> None:
        """Push the agent's tmpfs above its high watermark for a while, then free it."""
        st = os.statvfs(self.data)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        want = max(0, free - int(total * 0.05))  # leave 5 %: above the 90 % watermark
        filler = self.data / "filler.bin"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            block = b"\0" * (1 << 20)
            for _ in range(want >> 20):
                fh.write(block)
        time.sleep(seconds)
        filler.unlink(missing_ok=True)

    # -- end checks ----------------------------------------------------------------------

    def _catalog(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.data / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def _wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with contextlib.closing(self._catalog()) as cat:
                    left = cat.execute(
                        "SELECT COUNT(*) FROM outbox WHERE record_state NOT IN ('confirmed', 'rejected')"
                        " OR COALESCE(blob_state, 'confirmed') NOT IN ('confirmed', 'rejected')"
                    ).fetchone()[0]
                    unscreened = cat.execute(
                        "SELECT COUNT(*) FROM captures c LEFT JOIN verdicts v ON v.capture_id = c.record_id"
                        " WHERE v.record_id IS NULL AND c.path IS NOT NULL AND c.media_deleted_utc IS NULL"
                    ).fetchone()[0]
                if left == 0 and unscreened == 0:
                    return True
                log(f"draining: {left} outbox rows unconfirmed, {unscreened} captures unscreened")
            except sqlite3.Error as exc:
                log(f"catalog busy: {exc}")
            time.sleep(10)
        return False

    def _check(self, store_url: str) -> None:
        from central.store import open_store

        store = open_store(store_url)
        try:
            central = {r["record_id"]: r for r in store.list_records(device="soak-01")}
            central_blobs = {r["sha256"] for r in store.list_records(device="soak-01") if r["blob_stored"]}
        finally:
            store.close()
        with contextlib.closing(self._catalog()) as cat:
            captures = cat.execute("SELECT * FROM captures").fetchall()
            events = cat.execute("SELECT record_id, kind, count FROM events").fetchall()
            rejected = cat.execute(
                "SELECT COUNT(*) FROM outbox WHERE record_state = 'rejected' OR blob_state = 'rejected'"
            ).fetchone()[0]
        self.captures = len(captures)
        self.events = Counter()
        for e in events:
            self.events[e["kind"]] += e["count"]
        if rejected:
            self.problems.append(f"{rejected} outbox rows were rejected by the central side")
        hashed: dict[str, str] = {}
        for cap in captures:
            rid = cap["record_id"]
            row = central.get(rid)
            if row is None:
                self.problems.append(f"capture {rid} ({cap['stream']}) is not in the central store")
                continue
            if row["kind"] != "capture" or row["sha256"] != cap["sha256"]:
                self.problems.append(f"capture {rid}: central sha256 {row['sha256']} != local {cap['sha256']}")
            if cap["sha256"]:
                if cap["sha256"] not in central_blobs:
                    self.problems.append(f"capture {rid}: blob {cap['sha256']} not stored centrally")
                    continue
                path = self.blobs / "sha256" / cap["sha256"][:2] / cap["sha256"][2:4] / cap["sha256"]
                if cap["sha256"] not in hashed:
                    hashed[cap["sha256"]] = (
                        hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
                    )
                if hashed[cap["sha256"]] != cap["sha256"]:
                    self.problems.append(f"capture {rid}: central blob file is {hashed[cap['sha256']]}")
            if cap["media_deleted_utc"] and cap["media_deleted_utc"] != "missing" and cap["state"] != "confirmed":
                self.problems.append(f"capture {rid}: media deleted locally but the capture was {cap['state']}")
            if cap["path"] and not cap["media_deleted_utc"] and not (self.data / cap["path"]).exists():
                self.problems.append(f"capture {rid}: media file {cap['path']} missing locally without an eviction")
            if cap["state"] != "confirmed":
                self.problems.append(f"capture {rid}: locally {cap['state']} after the drain")
        for e in events:
            if e["record_id"] not in central:
                self.problems.append(f"event {e['record_id']} ({e['kind']}) is not in the central store")
        self.hashed = len(hashed)

    def _idle_cpu(self, idle: Proc) -> None:
        """CPU share of a drained agent over 30 s: its loops must sleep, not spin."""
        time.sleep(5)
        pid = idle.pid
        if pid is None:
            self.problems.append("the idle agent exited")
            return
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(30)
        self.idle_cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        if self.idle_cpu > IDLE_CPU_BUDGET:
            self.problems.append(f"idle agent CPU {self.idle_cpu:.1%} > {IDLE_CPU_BUDGET:.0%}")

    def _report(self) -> int:
        if self.max_rss > RSS_BUDGET_MB:
            self.problems.append(f"agent RSS peaked at {self.max_rss:.0f} MB > {RSS_BUDGET_MB:.0f} MB")
        print("\n=== fieldcap soak report ===")
        store = "PostgreSQL, 2 ingesters" if self.pg else "SQLite, 1 ingester"
        print(f"duration: {self.minutes:g} min   seed: {self.seed}   store: {store}")
        print(
            f"faults injected: {sum(self.injected.values())}  "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items()))
        )
        captures, hashed = getattr(self, "captures", 0), getattr(self, "hashed", 0)
        print(f"captures committed: {captures}   central blobs re-hashed: {hashed}")
        print("events: " + ", ".join(f"{k}={v}" for k, v in sorted(getattr(self, "events", Counter()).items())))
        print(
            f"agent peak RSS: {self.max_rss:.0f} MB (budget {RSS_BUDGET_MB:.0f})   idle CPU: "
            f"{getattr(self, 'idle_cpu', float('nan')):.2%} (budget {IDLE_CPU_BUDGET:.0%})"
        )
        print(f"highest sampled RSS: {self.max_sampled:.0f} MB: {self.at_max}")
        if self.problems:
            print(f"BROKEN PROMISES ({len(self.problems)}):")
            for p in self.problems[:50]:
                print(f"  - {p}")
            return 1
        print("all promises kept")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--faults", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL store with two ingesters")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fieldcap-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Soak(workdir, args.minutes, args.faults, args.seed, args.pg).run()


if __name__ == "__main__":
    sys.exit(main())
