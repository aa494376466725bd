"""QC headroom: can the agent's one QC thread screen what each example configuration captures?

For every configuration in ``examples/`` (and the demo's embedded one), each stream that keeps
media gets its capture rate from its policy and its device's settings, and the time the agent's
own QC worker (``agent.qc.QcWorker.screen``: read the file, screen it, store the verdict, and for
a multi-channel take each microphone too) takes for one of its captures at that size, on real
content: a photo (scikit-image), a 16-bit thermal frame, speech from ``espeak-ng``. Headroom is
capacity over load: 1 / sum(rate x seconds per capture). Target: at least 2x.

Where a policy has no rate of its own, an assumption is printed beside it: a booth take every
8 s (5 s of speech plus its pre/post padding: a brisk operator), one triggered window a minute,
1920x1080 for a network camera whose size only the stream knows.

    python bench/bench_qc_headroom.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf
from skimage import data as photos

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.catalog.db import Catalog  # noqa: E402
from agent.config import Config, load_config  # noqa: E402
from agent.qc import QcWorker  # noqa: E402
from models import Screener  # noqa: E402
from sync.outbox import BlobRef  # noqa: E402

TAKE_EVERY_S = 8.0
TAKE_SPEECH_S = 5.0
TRIGGER_EVERY_S = 60.0
NETWORK_CAMERA = (1920, 1080)


def stream_plan(config: Config) -> list[dict[str, Any]]:
    """Per stream that keeps media: modality, capture rate, what one capture is, and assumptions."""
    plan = []
    for dev in config.devices:
        cap = config.capture_for(dev.name)
        s = dev.model_dump()
        modality = {"microphone": "audio", "sim-microphone": "audio"}.get(dev.type) or (
            "thermal" if "thermal" in dev.type or dev.type == "lepton" else "visible"
        )
        if cap.policy == "readings":
            continue
        note = ""
        fps = float(s.get("fps") or 0) or 30.0
        if cap.policy == "every":
            rate = fps
        elif cap.policy == "interval":
            rate = 1.0 / cap.interval_s
        elif cap.policy == "segment":
            rate = 1.0 / cap.segment_s
        elif cap.policy == "take":
            rate, note = 1.0 / TAKE_EVERY_S, f"assumed: a take every {TAKE_EVERY_S:g} s"
        else:
            rate, note = 1.0 / TRIGGER_EVERY_S, f"assumed: a window every {TRIGGER_EVERY_S:g} s"
        item: dict[str, Any] = {"stream": dev.name, "modality": modality, "policy": cap.policy, "rate": rate}
        if modality == "audio":
            seconds = cap.segment_s if cap.policy == "segment" else TAKE_SPEECH_S + cap.pre_s + cap.post_s
            item |= {"seconds": seconds, "channels": int(s.get("channels") or 1), "rate_hz": 48000}
            item["kind"] = "take" if cap.policy == "take" else "segment"
        else:
            w, h = s.get("width"), s.get("height")
            if not (w and h):
                w, h = (160, 120) if modality == "thermal" else NETWORK_CAMERA
                note = (note + "; " if note else "") + f"assumed: {w}x{h}"
            item |= {"size": (int(w), int(h)), "kind": "frame"}
        item["profile"] = cap.qc_profile
        item["note"] = note
        plan.append(item)
    return plan


def speech(seconds: float, channels: int, tmp: Path) -> np.ndarray[Any, Any]:
    """48 kHz int16 speech (espeak-ng), looped to ``seconds``; the second channel quieter and noisier."""
    wav = tmp / "speech.wav"
    if not wav.exists():
        text = "The quick brown fox jumps over the lazy dog while the booth records every word."
        subprocess.run(["espeak-ng", "-w", str(tmp / "raw.wav"), text], check=True, capture_output=True)
        subprocess.run(["sox", str(tmp / "raw.wav"), "-r", "48000", "-b", "16", str(wav)], check=True)
    mono, _ = sf.read(str(wav), dtype="int16")
    n = int(seconds * 48000)
    mono = np.resize(mono, n).astype(np.float64)
    noise = np.random.default_rng(1).standard_normal(n) * 300
    cols = [mono] + [mono / 2 + noise for _ in range(channels - 1)]
    return np.clip(np.stack(cols, 1), -32768, 32767).astype(np.int16)


def media_for(item: dict[str, Any], data: Path, tmp: Path) -> tuple[str, str, dict[str, Any]]:
    """Write one capture's media the way the recorder does; return (relative path, media type, meta)."""
    name = f"media/{item['stream']}"
    if item["modality"] == "audio":
        rel = f"{name}.wav"
        sf.write(str(data / rel), speech(item["seconds"], item["channels"], tmp), 48000, subtype="PCM_16")
        return rel, "audio/wav", {"channels": item["channels"], "sample_rate": 48000}
    w, h = item["size"]
    if item["modality"] == "thermal":
        rel = f"{name}.png"
        yy, xx = np.mgrid[0:h, 0:w]
        frame = (29315 + 200 * np.sin(xx / 9.0) + 150 * np.cos(yy / 7.0)).astype(np.uint16)  # ~20 °C, centi-K
        cv2.imwrite(str(data / rel), frame)
        return rel, "image/png", {"width": w, "height": h, "units": "centikelvin"}
    rel = f"{name}.jpg"
    photo = cv2.resize(cv2.cvtColor(photos.astronaut(), cv2.COLOR_RGB2BGR), (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(data / rel), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return rel, "image/jpeg", {"width": w, "height": h}


def seconds_per_capture(config: Config, item: dict[str, Any], repeat: int, tmp: Path) -> float:
    """Median wall time of ``QcWorker.screen`` over ``repeat`` captures of this stream (one warm-up)."""
    data = tmp / f"data-{item['stream']}"
    shutil.rmtree(data, ignore_errors=True)
    (data / "media").mkdir(parents=True)
    rel, media_type, meta = media_for(item, data, tmp)
    blob = (data / rel).read_bytes()
    media = BlobRef(hashlib.sha256(blob).hexdigest(), len(blob), data / rel, media_type)
    screener = Screener(config.qc)
    profile = item["profile"]
    worker = QcWorker(data, lambda: screener, lambda _stream: profile)
    times = []
    with Catalog(data / "catalog.sqlite", "bench") as cat:
        for i in range(repeat + 1):
            rid = cat.add_capture(
                stream=item["stream"],
                kind=item["kind"],
                modality=item["modality"],
                t_start_mono_ns=i,
                t_end_mono_ns=i,
                t_start_utc_ns=time.time_ns(),
                seq_first=i,
                seq_last=i,
                media=media,
                media_rel=rel,
                meta=meta,
            )
            row = next(r for r in cat.unscreened(100) if r["record_id"] == rid)
            t0 = time.perf_counter()
            worker.screen(cat, row)
            if i:  # the first loads the models
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        print("needs espeak-ng and sox (./dev setup-test installs them)", file=sys.stderr)
        return 1
    from central.demo import demo_config

    model_dir = os.environ.get("FIELDCAP_MODEL_DIR")
    configs: list[tuple[str, Config]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for path in sorted((ROOT / "examples").glob("*.toml")):
            config = load_config(path)
            if model_dir:
                config = config.model_copy(update={"qc": config.qc.model_copy(update={"model_dir": Path(model_dir)})})
            configs.append((path.name, config))
        configs.append(("demo (embedded)", demo_config(tmp, "mqtt://127.0.0.1:1", model_dir)))
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"{'config':<22} {'stream':<12} {'policy':<9} {'capture/s':>9} {'s/capture':>9} {'load':>6}  note")
        for name, config in configs:
            plan = stream_plan(config)
            if not plan:
                print(f"{name:<22} (no media: readings only, nothing to screen)")
                continue
            total = 0.0
            for item in plan:
                spc = seconds_per_capture(config, item, args.repeat, tmp)
                load = item["rate"] * spc
                total += load
                print(
                    f"{name:<22} {item['stream']:<12} {item['policy']:<9} {item['rate']:>9.3f} {spc:>9.3f}"
                    f" {load:>6.1%}  {item['note']}"
                )
            headroom = 1.0 / total if total else float("inf")
            verdict = "ok" if headroom >= 2.0 else "BELOW TARGET"
            print(f"{name:<22} {'= QC thread':<22} {'':>9} {'':>9} {total:>6.1%}  headroom {headroom:.1f}x ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
