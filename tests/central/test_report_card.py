"""The dataset card people read: safe against hostile device strings, rendered by a real browser,
and agreeing with ``fieldcap coverage`` on what a booth session covered.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.booth.commands import coverage_command
from agent.booth.records import Mic, record_decision
from agent.catalog.db import Catalog, new_record_id
from central.store import open_store
from sync.outbox import BlobRef
from sync.wire import utc_now

from .conftest import run, sql, store_url

SCRIPT_TAG = "<script>alert('card')</script>"
ATTR_BREAK = '"><img src=x onerror=alert(1)>'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _poison(central: Path) -> None:
    """Every string a device chooses, in the records as the ingester stored them, made hostile."""
    with sqlite3.connect(central / "central.db") as conn:
        for kind, paths in (
            ("capture", ("$.body.modality", "$.body.stream", "$.body.meta.site")),
            ("verdict", ("$.body.profile", "$.body.verdict")),
            ("annotation", ("$.body.label", "$.body.model")),
            ("session", ("$.body.site", "$.body.subject_pseudonym", "$.body.script", "$.body.station")),
        ):
            for i, path in enumerate(paths):
                value = SCRIPT_TAG if i % 2 == 0 else ATTR_BREAK
                conn.execute(f"UPDATE records SET body = json_set(body, '{path}', ?) WHERE kind = ?", (value, kind))
        conn.execute(
            "UPDATE records SET body = json_set(body, '$.body.reasons', json_array(?, ?)) WHERE kind = 'verdict'",
            (SCRIPT_TAG, ATTR_BREAK),
        )
        device = conn.execute("SELECT device FROM records LIMIT 1").fetchone()[0]
        conn.execute("UPDATE records SET device = ? WHERE device = ?", (ATTR_BREAK + SCRIPT_TAG, device))


def test_device_strings_are_text_in_the_card_never_markup(central: Path, tmp_path: Path) -> None:
    _poison(central)
    out = tmp_path / "card"
    result = run("report", "--store", store_url(central), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    tags = {t for t, _ in parser.tags}
    assert "script" not in tags
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
    assert all(str(attrs.get("src", "")).startswith("plots/") for t, attrs in parser.tags if t == "img")
    assert "&lt;script&gt;alert(&#39;card&#39;)&lt;/script&gt;" in page  # shown, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    report = json.loads((out / "report.json").read_text())
    assert SCRIPT_TAG in report["modalities"]  # the JSON keeps the values as they are
    for name in report["plots"]:  # hostile profile names became safe file names inside plots/
        assert (out / "plots" / name).is_file() and "/" not in name and "<" not in name


def test_headline_and_plots_say_what_they_show(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "card"
    assert run("report", "--store", store_url(demo), "--out", str(out)).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    h = report["headline"]
    captures = [json.loads(b)["body"] for (b,) in sql(demo, "SELECT body FROM records WHERE kind = 'capture'")]
    audio_s = sum((c["t_end_mono_ns"] - c["t_start_mono_ns"]) / 1e9 for c in captures if c["modality"] == "audio")
    assert h["audio_hours"] == pytest.approx(audio_s / 3600) and h["audio_seconds"] > 0
    assert h["frames"] == sum(1 for c in captures if c["modality"] in ("visible", "thermal"))
    assert h["sessions"] == len({c["session_id"] for c in captures if c.get("session_id")})
    assert h["media_bytes"] == sql(demo, "SELECT SUM(blob_size) FROM records WHERE kind = 'capture'")[0][0]
    assert h["first_utc"] <= h["last_utc"] and h["fieldcap_version"] and h["generated_utc"]
    page = (out / "report.html").read_text()
    assert f"{h['frames']}</b>frames" in page and "h</b>of audio" in page
    # single-group dimensions are not plotted; the card says so instead
    for dim, data in report["balance"].items():
        drawn = f"balance_{dim}.png" in report["plots"]
        assert drawn == (data["groups"] > 1), dim
        if data["groups"] == 1:
            assert any(dim in n for n in report["plot_notes"]["balance"])


def _browser() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("chromium is not installed (scripts/setup.sh test installs the Debian package chromium)")


CHECK = """<script>
window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken', JSON.stringify(bad));
});
</script>"""


def test_the_card_renders_in_a_browser_with_every_plot(demo: Path, tmp_path: Path) -> None:
    browser = _browser()
    out = tmp_path / "card"
    assert run("report", "--store", store_url(demo), "--out", str(out)).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["plots"]) >= 4
    probe = out / "probe.html"  # the card as written, plus a check that runs after every image loaded
    probe.write_text((out / "report.html").read_text().replace("</body>", CHECK + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars"]
    home = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        env=home,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Tags()
    parser.feed(dom.stdout)
    body = next(attrs for tag, attrs in parser.tags if tag == "body")
    assert body.get("data-images") == str(len(report["plots"])), dom.stdout[-500:]
    assert json.loads(str(body.get("data-broken"))) == []

    shot = tmp_path / "card.png"
    proc = subprocess.run(
        [browser, *flags, "--window-size=1200,2400", f"--screenshot={shot}", (out / "report.html").as_uri()],
        capture_output=True,
        timeout=180,
        env=home,
        check=False,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        gray = img.convert("L")
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
        lo, hi = gray.getextrema()
        dark = sum(gray.histogram()[:128])
    assert hi - lo > 100 and len(colours) > 50  # text, plots and colours, not a blank page
    assert dark > 0.001 * gray.width * gray.height


# ---------------------------------------------------------------------------- coverage, as on the device

DEVICE = "booth-cov"
NEAR, MID = Mic("mics:near", "mics", 0), Mic("mics:mid", "mics", 1)


def _take(cat: Catalog, session_id: str, item: str, wav: Path) -> str:
    blob = wav.read_bytes()
    media = BlobRef(hashlib.sha256(blob).hexdigest(), len(blob), wav, "audio/wav")
    now = time.monotonic_ns()
    capture_id = cat.add_capture(
        stream="mics",
        kind="take",
        modality="audio",
        t_start_mono_ns=now,
        t_end_mono_ns=now + 1_000_000_000,
        t_start_utc_ns=time.time_ns(),
        seq_first=0,
        seq_last=0,
        media=media,
        media_rel=wav.name,
        meta={"channels": 2, "sample_rate": 48000},
        session_id=session_id,
        item_id=item,
        take=1,
    )
    take_id = f"take-{item}"
    cat.sessions.add_take(
        {
            "take_id": take_id,
            "session_id": session_id,
            "item_id": item,
            "prompt": item,
            "round": 1,
            "take_no": 1,
            "status": "recording",
            "streams_json": '["mics"]',
            "captures_json": json.dumps({"mics": [capture_id]}),
            "t_start_mono_ns": now,
            "t_start_utc_ns": time.time_ns(),
            "created_utc": utc_now(),
        }
    )
    cat.sessions.finish_take(take_id, {"status": "done"})
    return capture_id


def _verdict(cat: Catalog, capture_id: str, verdict: str) -> None:
    cat.add_verdict(
        capture_id,
        profile="booth-speech",
        profile_version="1+test",
        verdict=verdict,
        reasons=[] if verdict == "pass" else ["snr 9 dB < 20 dB: noisy"],
        metrics={"snr_db": 30.0 if verdict == "pass" else 9.0},
        analyzers=[],
        annotations=[],
    )


def _booth_device(tmp_path: Path) -> tuple[Path, str]:
    """A booth session: p1 accepted (near passes, mid fails), p2 accepted (passes, not yet screened
    per microphone), p3 skipped, p4 never recorded."""
    data = tmp_path / "device"
    data.mkdir()
    wav = data / "take.wav"
    wav.write_bytes(b"RIFF....WAVE")
    session_id = new_record_id()
    items = [{"item_id": f"p{i}", "text": f"prompt {i}"} for i in range(1, 5)]
    with Catalog(data / "catalog.sqlite", DEVICE) as cat:
        cat.sessions.add_session(
            {
                "session_id": session_id,
                "kind": "booth",
                "site": "lab",
                "station": "b1",
                "subject_pseudonym": "p" * 64,
                "script": "s.tsv",
                "round": 1,
                "started_utc": utc_now(),
                "meta_json": json.dumps(
                    {
                        "items": items,
                        "mics": [{"mic": m.mic, "stream": m.stream, "channel": m.channel} for m in (NEAR, MID)],
                    }
                ),
            }
        )
        p1 = _take(cat, session_id, "p1", wav)
        _verdict(cat, p1, "fail")
        cat.add_channel_verdicts(
            p1,
            [
                {
                    "channel": 0,
                    "mic": NEAR.mic,
                    "profile": "booth-speech",
                    "profile_version": "1+test",
                    "verdict": "pass",
                    "reasons": [],
                    "metrics": {"snr_db": 31.0},
                },
                {
                    "channel": 1,
                    "mic": MID.mic,
                    "profile": "booth-speech",
                    "profile_version": "1+test",
                    "verdict": "fail",
                    "reasons": ["snr 9 dB < 20 dB: noisy"],
                    "metrics": {"snr_db": 9.0},
                },
            ],
        )
        p2 = _take(cat, session_id, "p2", wav)
        _verdict(cat, p2, "pass")
        for item in ("p1", "p2"):
            record_decision(
                cat,
                session_id=session_id,
                item_id=item,
                round_no=1,
                decision="accept",
                take_id=f"take-{item}",
                take_no=1,
            )
        record_decision(cat, session_id=session_id, item_id="p3", round_no=1, decision="skip")
    return data, session_id


def _sync_to_central(data: Path, central: Path) -> None:
    """Every record the device queued, stored centrally the way the ingester stores it."""
    (central / "blobs" / "sha256").mkdir(parents=True)
    with sqlite3.connect(data / "catalog.sqlite") as conn:
        rows = conn.execute(
            "SELECT record_id, kind, body_json, blob_sha256, blob_size FROM outbox ORDER BY seq"
        ).fetchall()
    store = open_store(f"sqlite:///{central / 'central.db'}")
    try:
        for record_id, kind, body, sha, size in rows:
            env = json.loads(body)
            store.put_record(DEVICE, record_id, kind, env["created_utc"], sha, size, body)
    finally:
        store.close()


def test_the_card_counts_coverage_as_fieldcap_coverage_does(tmp_path: Path) -> None:
    data, _session = _booth_device(tmp_path)
    device = CliRunner().invoke(coverage_command, ["--data-dir", str(data), "--json"])
    assert device.output, device.output
    on_device = json.loads(device.output)["sessions"][0]
    central = tmp_path / "central"
    central.mkdir()
    _sync_to_central(data, central)
    out = tmp_path / "card"
    result = run("report", "--store", store_url(central), "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (card,) = report["completeness"]["coverage"]
    assert (card["cells"], card["covered"]) == (on_device["cells"], on_device["covered"]) == (8, 3)
    assert card["missing"] == on_device["missing"]
    assert {(m["item_id"], m["mic"], m["status"]) for m in card["missing"]} >= {
        ("p1", "mics:mid", "accepted, but QC failed"),
        ("p3", "mics:near", "skipped"),
        ("p4", "mics:mid", "not recorded"),
    }
    assert card["items_done"] == 1 and card["coverage"] == pytest.approx(3 / 8)
    # the per-microphone verdicts reach the card and the export
    assert report["microphones"][f"{DEVICE}/mics:mid"]["verdicts"] == {"fail": 1}
    assert report["microphones"][f"{DEVICE}/mics:near"]["verdicts"] == {"pass": 1}
    page = (out / "report.html").read_text()
    assert "3 / 8" in page and "accepted, but QC failed" in page and "mics:mid" in page
    row = next(r for r in _rows(central) if r["record_id"] == _p1(central))
    assert [(c["mic"], c["verdict"]) for c in row["qc"]["channels"]] == [("mics:near", "pass"), ("mics:mid", "fail")]


def _p1(central: Path) -> str:
    return str(
        sql(
            central,
            "SELECT json_extract(body, '$.body.capture_id') FROM records WHERE kind = 'channel_verdict'",
        )[0][0]
    )


def _rows(central: Path) -> list[dict[str, Any]]:
    """The metadata row every export format carries per sample (the media never reached this store,
    so an export would skip these samples; the row is what it would write)."""
    from central.datasets.plan import sample_row
    from central.datasets.samples import load_samples

    store = open_store(store_url(central))
    try:
        return [sample_row(s, None) for s in load_samples(store)]
    finally:
        store.close()
