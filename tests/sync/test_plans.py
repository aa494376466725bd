"""Collection plans end to end: validation, push to booths online and offline, participants, plan status.

Real Mosquitto, real ingester (publishing open commands until acknowledged), real publishers on
real catalogs. Booth sessions and takes are written through the catalog's own rows, as the booth
does; the participant is enrolled through the same catalog call the booth uses.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from sync_harness import Central, Device, running_ingester, running_publisher, settings, wait_for

from agent.catalog.plan_rows import Participant, current_assignment, save_participant
from agent.catalog.records import new_record_id
from agent.sessions.takes import pseudonym
from central.broker import LocalBroker
from central.cli import central_group
from central.commands import list_commands
from central.participants import registry
from central.plans.planfile import load_plan
from central.plans.status import plan_status
from sync.files import write_atomic
from sync.outbox import BlobRef
from sync.signing import ReceiptSigner, ReceiptVerifier, generate
from sync.wire import utc_now

CLI = click.Group(commands={"central": central_group})
KEY = b"k" * 32
PLAN = """\
name = "speech-2025"

[attributes]
sex = ["female", "male"]
age_band = ["18-29", "30-49", "50+"]

[consent]
scope = "speech-corpus"
max_age_days = 365

[scripts.words]
items = [{id = "w1", text = "seven", type = "word"}, {id = "w2", text = "eight", type = "word"}]

[scripts.sentences]
file = "sentences.tsv"

[rounds]
r1 = ["words"]
r2 = ["words", "sentences"]

[sites.lab]
booths = ["dev-1", "dev-2"]
speakers = 4
quotas.sex = {female = 2, male = 2}
"""


def cli(*args: str) -> Any:
    return CliRunner().invoke(CLI, list(args), catch_exceptions=False)


def write_plan(tmp: Path, text: str = PLAN) -> Path:
    (tmp / "sentences.tsv").write_text("id\ttext\ttype\ns1\tgood morning\tsentence\ns2\tgood night\tsentence\n")
    path = tmp / "plan.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReceiptSigner, ReceiptVerifier]:
    private, public, _ = generate(tmp_path_factory.mktemp("keys"))
    return ReceiptSigner.load(private), ReceiptVerifier.load(public)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "max_age_days",
            "max_age_dayz",
            r"plan.toml:9: consent.max_age_dayz: unknown key; did you mean 'max_age_days'",
        ),
        ("female = 2", "femal = 2", r"plan.toml:24: sites.lab.quotas.sex.femal: 'femal' is not a value of sex; did"),
        ('r1 = ["words"]', 'r1 = ["wordz"]', r"plan.toml:18: rounds.r1: unknown script 'wordz'; did you mean 'words'"),
        (
            'file = "sentences.tsv"',
            'file = "nope.tsv"',
            r"plan.toml:15: scripts.sentences.file: .*nope.tsv: script not",
        ),
        ("speakers = 4", "speakers = 3", r"plan.toml:24: sites.lab.quotas.sex: the quotas add up to 4, more than"),
        ('name = "speech-2025"', 'name = "speech 2025"', r"plan.toml:1: name: String should match pattern"),
        ("max_age_days = 365", 'max_age_days = "365"', r"plan.toml:9: consent.max_age_days: Input should be"),
    ],
)
def test_plan_mistakes_name_file_line_and_key(tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in PLAN
    path = write_plan(tmp_path, PLAN.replace(old, new))
    result = cli("central", "plan", "validate", str(path))
    assert result.exit_code == 1, result.output
    import re

    assert re.search(where, result.output), result.output
    assert "Traceback" not in result.output


def test_a_valid_plan_has_a_content_version(tmp_path: Path) -> None:
    path = write_plan(tmp_path)
    result = cli("central", "plan", "validate", str(path))
    assert result.exit_code == 0, result.output
    version = load_plan(path).version
    assert f"version {version}: 2 round(s), 6 item(s), 1 site(s), 2 booth(s)" in result.output
    (tmp_path / "sentences.tsv").write_text("id\ttext\ns1\tgood morning\ns2\tgood evening\n")
    assert load_plan(path).version != version  # an edited prompt file is a new version


def take(device: Device, session_id: str, item_id: str, verdict: str) -> str:
    """One finished booth take with one audio capture and its verdict; its take_id."""
    take_id = f"{session_id}-{item_id}"
    rel = f"media/{take_id}.wav"
    written = write_atomic(device.root / rel, f"voice of {take_id}".encode() * 50)
    ref = BlobRef(written.sha256, written.size, written.path, "audio/wav")
    now = time.monotonic_ns()
    with device.catalog() as cat:
        cat.sessions.add_take(
            {
                "take_id": take_id,
                "session_id": session_id,
                "item_id": item_id,
                "take_no": 1,
                "t_start_mono_ns": now,
                "t_start_utc_ns": time.time_ns(),
                "created_utc": utc_now(),
            }
        )
        capture = cat.add_capture(
            stream="mic",
            kind="take",
            modality="audio",
            t_start_mono_ns=now,
            t_end_mono_ns=now + 1,
            t_start_utc_ns=time.time_ns(),
            seq_first=0,
            seq_last=0,
            media=ref,
            media_rel=rel,
            meta={},
            session_id=session_id,
            item_id=item_id,
            take=1,
        )
        cat.add_verdict(
            capture,
            profile="speech",
            profile_version="1",
            verdict=verdict,
            reasons=[],
            metrics={},
            analyzers=[],
            annotations=[],
        )
        cat.sessions.finish_take(
            take_id, {"status": "done", "captures_json": json.dumps({"mic": capture}), "ended_utc": utc_now()}
        )
    return take_id


def enrol(device: Device, subject_id: str, sex: str) -> str:
    pseudo = pseudonym(subject_id, KEY)
    p = Participant(
        pseudo,
        "kid",
        "speech-2025",
        "lab",
        {"sex": sex, "age_band": "30-49"},
        "speech-corpus",
        "2025-01-02",
        None,
        "DOC-17",
    )
    assert save_participant(device.catalog(), p)
    return pseudo


def plan_session(device: Device, pseudo: str, rnd: str) -> str:
    session_id = new_record_id()[:12]
    with device.catalog() as cat:
        cat.sessions.add_session(
            {
                "session_id": session_id,
                "kind": "booth",
                "site": "lab",
                "station": device.device_id,
                "operator": "op",
                "subject_pseudonym": pseudo,
                "started_utc": utc_now(),
                "meta_json": json.dumps({"plan": "speech-2025", "plan_round": rnd, "plan_site": "lab"}),
            }
        )
    return session_id


def test_push_reaches_online_and_offline_booths_then_status_and_participants(
    mosquitto: LocalBroker, central: Central, keys: tuple[ReceiptSigner, ReceiptVerifier], tmp_path: Path
) -> None:
    signer, verifier = keys
    online, offline = Device(tmp_path / "d1", "dev-1"), Device(tmp_path / "d2", "dev-2")
    online.catalog().close()
    offline.catalog().close()
    path = write_plan(tmp_path)
    plan = load_plan(path)
    with running_ingester(mosquitto.url, central, signer=signer, command_every_s=0.3):
        with running_publisher(online, settings(mosquitto.url), verifier=verifier) as pub:
            assert pub.wait_idle(60)
            result = cli("central", "plan", "push", str(path), "--store", central.url)
            assert result.exit_code == 0, result.output
            assert result.output.count("queued assignment") == 2
            wait_for(lambda: current_assignment(online.catalog()) is not None, 30, "the assignment at dev-1")
            got = current_assignment(online.catalog())
            assert got is not None and got.body.version == plan.version and got.body.site == "lab"
            assert [r.name for r in got.body.rounds] == ["r1", "r2"]
            assert [i.item_id for i in got.body.rounds[1].items] == ["w1", "w2", "s1", "s2"]
            assert got.body.quotas == {"sex": {"female": 2, "male": 2}}
            assert current_assignment(offline.catalog()) is None  # dev-2 is not connected
            # A new version supersedes the old one on the device.
            write_plan(tmp_path, PLAN.replace("speakers = 4", "speakers = 6"))
            assert cli("central", "plan", "push", str(path), "--store", central.url).exit_code == 0
            v2 = load_plan(path).version
            wait_for(lambda: current_assignment(online.catalog()).body.version == v2, 30, "v2 at dev-1")  # type: ignore[union-attr]
            with online._ro() as conn:
                rows = conn.execute("SELECT version, superseded_by FROM assignments ORDER BY created_utc").fetchall()
            assert [(v, s is None) for v, s in rows] == [(plan.version, False), (v2, True)]
        status = cli("central", "plan", "status", str(path), "--store", central.url, "--json")
        assert len(json.loads(status.output)["deliveries"]) == 4  # two versions for two booths
        with running_publisher(offline, settings(mosquitto.url), verifier=verifier):
            wait_for(lambda: current_assignment(offline.catalog()) is not None, 60, "the assignment at dev-2")
            wait_for(lambda: all(r.acked_utc for r in list_commands(central.store, "assignment")), 60, "every ack")
        got2 = current_assignment(offline.catalog())
        assert got2 is not None and got2.body.version == v2

        # Participants and takes on both booths, synced; then the status against an independent count.
        ann, bea, cid = enrol(online, "RAW-SUBJ-ANN", "female"), enrol(online, "RAW-SUBJ-BEA", "male"), None
        cid = enrol(offline, "RAW-SUBJ-CID", "female")
        s1 = plan_session(online, ann, "r1")
        take(online, s1, "w1", "pass")
        take(online, s1, "w2", "fail")
        s2 = plan_session(online, bea, "r1")
        take(online, s2, "w1", "pass")
        s3 = plan_session(offline, cid, "r2")
        take(offline, s3, "s1", "pass")
        take(offline, s3, "w1", "review")
        with (
            running_publisher(online, settings(mosquitto.url), verifier=verifier) as p1,
            running_publisher(offline, settings(mosquitto.url), verifier=verifier) as p2,
        ):
            assert p1.wait_idle(60) and p2.wait_idle(60)
    people = registry(central.store)
    assert set(people) == {ann, bea, cid}
    assert people[cid].device == "dev-2" and people[ann].record.attributes["sex"] == "female"
    listed = [
        json.loads(x) for x in cli("central", "participants", "--store", central.url, "--json").output.splitlines()
    ]
    assert sorted(p["subject_pseudonym"] for p in listed) == sorted([ann, bea, cid])

    # No synced record body anywhere carries a raw subject id.
    with sqlite3.connect(central.url.removeprefix("sqlite:///")) as conn:
        bodies = [b for (b,) in conn.execute("SELECT body FROM records")]
    assert bodies and not [b for b in bodies if "RAW-SUBJ" in b]

    rows = {(r.level, r.round, r.booth, r.attribute, r.value): r for r in plan_status(central.store, load_plan(path))}
    # Independent count: r1 at lab: ann w1 (pass), ann w2 (fail), bea w1 (pass); r2: cid s1 (pass), cid w1 (review).
    site_r1, site_r2 = rows[("site", "r1", None, None, None)], rows[("site", "r2", None, None, None)]
    assert (site_r1.planned, site_r1.recorded, site_r1.qc, site_r1.review, site_r1.missing) == (12, 3, 2, 0, 10)
    assert (site_r2.planned, site_r2.recorded, site_r2.qc, site_r2.missing) == (24, 2, 1, 23)
    assert (
        rows[("booth", "r1", "dev-1", None, None)].recorded,
        rows[("booth", "r1", "dev-2", None, None)].recorded,
    ) == (3, 0)
    fem_r1 = rows[("quota", "r1", None, "sex", "female")]
    assert (fem_r1.planned, fem_r1.recorded, fem_r1.qc, fem_r1.missing) == (4, 2, 1, 3)
    male_r1 = rows[("quota", "r1", None, "sex", "male")]
    assert (male_r1.planned, male_r1.recorded, male_r1.qc) == (4, 1, 1)
    fem_r2 = rows[("quota", "r2", None, "sex", "female")]
    assert (fem_r2.recorded, fem_r2.qc) == (2, 1)
    text = cli("central", "plan", "status", str(path), "--store", central.url)
    assert text.exit_code == 0 and "2 of 2 booth(s) have it" in text.output
