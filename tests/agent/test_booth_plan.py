"""The booth under a pushed collection plan, driven through a pseudo-terminal (simulated microphones).

The assignment is the one ``fieldcap central plan push`` builds, applied by the catalog as the
publisher applies a received command (delivery itself is covered in tests/sync/test_plans.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest
from test_booth_ui import Screen

from agent.catalog.command_rows import apply_command
from agent.catalog.db import Catalog
from agent.catalog.plan_rows import participants
from agent.sessions.takes import pseudonym
from central.commands import new_command
from central.plans.planfile import load_plan
from central.plans.push import assignment_for

pytestmark = [pytest.mark.timeout(600)]

PLAN = """\
name = "speech-2025"
[attributes]
sex = ["female", "male"]
age_band = ["18-29", "30-49"]
[consent]
scope = "speech-corpus"
max_age_days = 365
[scripts.words]
items = [{id = "w1", text = "hello there", type = "phrase"}, {id = "w2", text = "good night", type = "phrase"}]
[rounds]
r1 = ["words"]
[sites.lab]
booths = ["sim-booth"]
speakers = 2
quotas.sex = {female = 1, male = 1}
"""


def _spawn(args: list[str]) -> Screen:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140", "LINES": "44", "PYTHONUNBUFFERED": "1"}
    child = pexpect.spawn(
        sys.executable, ["-m", "agent", *args], env=env, dimensions=(44, 140), encoding="utf-8", timeout=60
    )
    return Screen(child)


@pytest.fixture
def booth(tmp_path: Path, model_dir: Path) -> dict[str, Path]:
    key = tmp_path / "subject.key"
    key.write_bytes(os.urandom(32))
    config = tmp_path / "sim.toml"
    config.write_text(
        f'[agent]\ndevice_id = "sim-booth"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[devices]]\nname = "mics"\ntype = "sim-microphone"\nchannels = 2\nspeech_like = true\n'
        f'[session]\nsubject_key_file = "{key}"\n[qc]\nmodel_dir = "{model_dir}"\n[sync]\nenabled = false\n'
    )
    (tmp_path / "plan.toml").write_text(PLAN)
    plan = load_plan(tmp_path / "plan.toml")
    cmd = new_command("sim-booth", assignment=assignment_for(plan, "lab"))
    (tmp_path / "data").mkdir()
    with Catalog(tmp_path / "data" / "catalog.sqlite", "sim-booth") as cat:
        assert apply_command(cat, cmd, verified=True)
    return {"config": config, "key": key, "data": tmp_path / "data"}


PLAN_ARGS = ["--round", "r1", "--attr", "sex=female", "--attr", "age_band=30-49", "--countdown", "0"]


def test_enrol_record_and_resume_with_fewer_items_left(booth: dict[str, Path]) -> None:
    common = ["--config", str(booth["config"])]
    consent = ["--consent-scope", "speech-corpus", "--consent-ref", "DOC-17", "--consent-expires", "2999-01-01"]
    screen = _spawn(["booth", "--subject", "P-RAW-1", *PLAN_ARGS, *consent, *common])
    screen.wait(r"participant enrolled")
    screen.wait(r"plan speech-2025 \(version [0-9a-f]{12}\), site lab, round r1: 2 of 2 item\(s\) left")
    screen.wait(r"quota sex=female at site lab: 0 other participant\(s\) known here of 1 - open")
    screen.wait(r"MIC TEST")
    screen.idle(1.0)
    screen.send("\r")
    screen.wait(r"hello there")
    screen.send(" ")
    screen.wait(r"● REC")
    screen.idle(1.0)
    screen.send(" ")
    screen.wait(r"QC (instant|full)")
    screen.send("a")
    screen.idle(0.5)
    if "press [a] again" in screen.text:
        screen.send("a")  # an override of a failed verdict
    screen.wait(r"good night")
    screen.send("q")
    assert screen.finish(120) == 0, screen.tail()

    screen = _spawn(["booth", "--subject", "P-RAW-1", "--round", "r1", "--countdown", "0", "--yes", *common])
    screen.wait(r"participant resumed")
    screen.wait(r"round r1: 1 of 2 item\(s\) left")
    screen.wait(r"MIC TEST")
    screen.idle(0.5)
    screen.send("\r")
    screen.wait(r"good night")
    screen.send("q")
    assert screen.finish(120) == 0, screen.tail()
    pseudo = pseudonym("P-RAW-1", booth["key"].read_bytes())
    with Catalog(booth["data"] / "catalog.sqlite", "sim-booth") as cat:
        (p,) = participants(cat).values()
        assert p.subject_pseudonym == pseudo and p.attributes == {"sex": "female", "age_band": "30-49"}
        bodies = [r[0] for r in cat.conn.execute("SELECT body_json FROM outbox")]
        meta = cat.conn.execute("SELECT meta_json FROM sessions WHERE kind = 'booth'").fetchone()[0]
    assert '"plan_round": "r1"' in meta and '"plan": "speech-2025"' in meta
    assert any('"kind": "participant"' in b or '"participant"' in b for b in bodies)
    assert not [b for b in bodies if "P-RAW-1" in b]  # the raw subject id never reaches the outbox


@pytest.mark.parametrize(
    ("consent", "why"),
    [
        (["--consent-scope", "other", "--consent-ref", "D1"], r"does not cover 'speech-corpus'"),
        (
            ["--consent-scope", "speech-corpus", "--consent-ref", "D1", "--consent-expires", "2001-01-01"],
            r"expired on 2001-01-01",
        ),
        (
            ["--consent-scope", "speech-corpus", "--consent-ref", "D1", "--consent-date", "2001-01-01"],
            r"more than 365 days ago",
        ),
    ],
)
def test_the_booth_refuses_without_valid_consent(booth: dict[str, Path], consent: list[str], why: str) -> None:
    screen = _spawn(["booth", "--subject", "P-RAW-2", *PLAN_ARGS, *consent, "--config", str(booth["config"])])
    assert screen.finish(60) == 1, screen.tail()
    screen.wait(r"not recording: .*" + why)
    assert "Traceback" not in screen.text and "MIC TEST" not in screen.text
    with Catalog(booth["data"] / "catalog.sqlite", "sim-booth") as cat:
        assert participants(cat) == {}


def test_a_bad_attribute_is_one_line(booth: dict[str, Path]) -> None:
    args = ["booth", "--subject", "P-3", "--attr", "sexx=female", "--config", str(booth["config"])]
    screen = _spawn(args)
    assert screen.finish(60) == 1, screen.tail()
    screen.wait(r"--attr 'sexx=female': plan speech-2025 has no attribute 'sexx'; did you mean 'sex'\?")
