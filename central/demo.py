"""``fieldcap demo``: the whole path on simulated devices, with a throwaway broker, checked at the end.

It starts a private Mosquitto, an ingester process (``fieldcap ingest`` — the same command a
central server runs), and the same ``Agent`` that ``fieldcap run`` uses, with simulated visible
and IR cameras, a two-microphone booth and a serial sensor. After N seconds it stops capture,
waits for QC and for every receipt, and then checks every local capture against the central store
(row present, blob present, file on disk hashing to the catalog's sha256). The ingester signs its
receipts with a key pair made for the run, and the device checks them, as in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.catalog.db import Catalog
from agent.catalog.reports import event_totals
from agent.config import Config, parse_config
from agent.daemon import Agent
from central.blobs import BlobTree
from central.broker import LocalBroker
from central.store import open_store
from sync.files import sha256_file
from sync.signing import PRIVATE_NAME, PUBLIC_NAME, generate


def demo_config(
    workdir: Path, broker_url: str, model_dir: str | None, receipt_public_key: Path | None = None
) -> Config:
    """The embedded default: one device with every simulated driver."""
    qc: dict[str, Any] = {}
    if model_dir:
        qc["model_dir"] = model_dir
    return parse_config(
        {
            "agent": {
                "device_id": "demo-01",
                "site": "demo-site",
                "station": "booth-1",
                "data_dir": str(workdir / "agent"),
            },
            "devices": [
                {"name": "cam-visible", "type": "sim-camera", "width": 640, "height": 480, "fps": 5},
                {"name": "cam-ir", "type": "sim-thermal", "fps": 9},
                {"name": "booth-mics", "type": "sim-microphone", "channels": 2, "speech_like": True},
                {"name": "env", "type": "sim-serial", "rate_hz": 2},
            ],
            "capture": {
                "cam-visible": {"policy": "interval", "interval_s": 1.0},
                "cam-ir": {"policy": "interval", "interval_s": 1.0},
                "booth-mics": {"policy": "segment", "segment_s": 2.0},
                "env": {"policy": "readings", "batch_s": 2.0},
            },
            "qc": qc,
            "sync": {
                "broker": broker_url,
                "receipt_timeout_s": 5.0,
                **({"receipt_public_key": str(receipt_public_key)} if receipt_public_key else {}),
            },
        },
        "<embedded demo config>",
    )


@dataclass
class StreamCheck:
    stream: str
    captured: int = 0
    qc_pass: int = 0
    qc_fail: int = 0
    qc_review: int = 0
    synced: int = 0
    confirmed: int = 0
    missing: int = 0


def verify(cat: Catalog, central_url: str, blobs: BlobTree, device: str) -> tuple[dict[str, StreamCheck], list[str]]:
    """Compare every local capture with the central store; return per-stream counts and problems."""
    checks = {row["stream"]: StreamCheck(**row) for row in cat.stream_summary()}
    for c in checks.values():
        c.missing = 0
    problems: list[str] = []
    store = open_store(central_url)
    try:
        central = {r["record_id"]: r for r in store.list_records(device=device, kind="capture")}
        for cap in cat.captures():
            row = central.get(cap.record_id)
            why = None
            if row is None:
                why = "no central record"
            elif cap.sha256 is not None:
                if row["sha256"] != cap.sha256 or not row["blob_stored"]:
                    why = "central blob missing or different"
                elif (
                    not blobs.exists(cap.sha256, cap.size or 0)
                    or sha256_file(blobs.path_for(cap.sha256))[0] != cap.sha256
                ):
                    why = "central blob file missing or corrupt"
                elif cap.path and sha256_file(cat.data_dir / cap.path)[0] != cap.sha256:
                    why = "local file does not match its catalog sha256"
            if why is None and cap.state != "confirmed":
                why = f"stored centrally but locally {cap.state}"
            if why is not None:
                checks[cap.stream].missing += 1
                problems.append(f"{cap.stream} {cap.record_id}: {why}")
    finally:
        store.close()
    return checks, problems


def run_demo(seconds: float, workdir: Path | None, echo: Any) -> int:
    """Run the demo; return the exit code (0 only if nothing is missing)."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fieldcap-demo-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    central_url = f"sqlite:///{root / 'central' / 'central.db'}"
    blob_dir = root / "central" / "blobs"
    echo(f"workdir: {root}")
    keys = root / "keys"
    if (keys / PRIVATE_NAME).exists() and (keys / PUBLIC_NAME).exists():
        private, public = keys / PRIVATE_NAME, keys / PUBLIC_NAME  # a --workdir used before
    else:
        private, public, _ = generate(keys)
    echo(f"keys:    receipts signed with {private}, checked with {public}")
    with LocalBroker(root / "broker") as broker:
        echo(f"broker:  mosquitto on {broker.url}")
        ingest_log = (root / "ingest.log").open("wb")
        ingester = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "ingest",
                "--broker",
                broker.url,
                "--store",
                central_url,
                "--blobs",
                str(blob_dir),
                "--receipt-key",
                str(private),
            ],
            stdout=ingest_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        config = demo_config(root, broker.url, os.environ.get("FIELDCAP_MODEL_DIR"), public)
        agent = Agent(config, config_file="<embedded demo config>")
        try:
            agent.start()
            echo(f"agent:   capturing from {len(config.devices)} simulated devices for {seconds:g} s ...")
            time.sleep(seconds)
            agent.stop_capture()
            echo("agent:   capture stopped; screening and syncing the backlog ...")
            agent.wait_screened(120.0)
            assert agent.publisher is not None
            drained = agent.publisher.wait_idle(120.0)
            if not drained:
                echo("agent:   the outbox did not drain within 120 s")
        finally:
            agent.stop()
            ingester.terminate()
            try:
                ingester.wait(15)
            except subprocess.TimeoutExpired:
                ingester.kill()
            ingest_log.close()
        with agent.catalog() as cat:
            checks, problems = verify(cat, central_url, BlobTree(blob_dir), config.agent.device_id)
            events = event_totals(cat.conn)
    _print_summary(echo, checks, events)
    silent = [d.name for d in config.devices if d.name not in checks]
    for p in problems[:20]:
        echo(f"  missing: {p}")
    for name in silent:
        echo(f"  {name}: captured nothing (see the driver errors in the events)")
    missing = sum(c.missing for c in checks.values())
    if missing or silent:
        echo(f"FAILED: {missing} capture(s) not safely stored centrally (logs in {root})")
        return 1
    echo(
        f"OK: all {sum(c.captured for c in checks.values())} captures stored centrally"
        " with matching sha256 and confirmed locally"
    )
    if own:
        echo(f"(files kept in {root})")
    return 0


def _print_summary(echo: Any, checks: dict[str, StreamCheck], events: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fieldcap demo: per stream")
    for col in ("stream", "captured", "QC pass", "QC fail", "QC review", "synced", "confirmed", "missing"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    for c in checks.values():
        table.add_row(
            c.stream,
            *(str(v) for v in (c.captured, c.qc_pass, c.qc_fail, c.qc_review, c.synced, c.confirmed, c.missing)),
        )
    Console(width=110).print(table)
    if events:
        echo("events: " + ", ".join(f"{k}={n}" for k, n in events.items()))
