"""The review round trip through a real Label Studio: the ``--format labelstudio`` export imported
over its REST API, media served from local files, two users annotating, the project exported and
brought back with ``fieldcap review-import``.

Label Studio pins many packages (Django, an older numpy), so it lives in its own virtualenv:
``scripts/setup.sh test`` makes ``.cache/label-studio``; ``FIELDCAP_LABEL_STUDIO`` may name another
``label-studio`` executable. Without one the test is skipped and says so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import export, run, store_url

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"alice@example.org": "a1" * 16, "bob@example.org": "b2" * 16}
START_TIMEOUT_S = 300


def _executable() -> Path | None:
    named = os.environ.get("FIELDCAP_LABEL_STUDIO")
    for candidate in (named, ROOT / ".cache" / "label-studio" / "bin" / "label-studio"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudio:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, user: str, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Token {TOKENS[user]}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return raw if not raw or resp.headers.get_content_type() != "application/json" else json.loads(raw)


pytestmark = pytest.mark.skipif(
    _executable() is None,
    reason="label-studio is not installed: scripts/setup.sh test puts it in .cache/label-studio"
    " (or set FIELDCAP_LABEL_STUDIO to a label-studio executable)",
)


@pytest.fixture(scope="module")
def exported(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ls-export")
    export(demo, out, "labelstudio", "--overlap", "1")
    return out


@pytest.fixture(scope="module")
def label_studio(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    exe = _executable()
    assert exe is not None
    data = tmp_path_factory.mktemp("ls-data")
    env = {
        **os.environ,
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(exported),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
    }
    log = (data / "label-studio.log").open("wb")
    for user, token in TOKENS.items():  # each user with a known API token, in one organization
        subprocess.run(
            [
                str(exe),
                "init",
                "--data-dir",
                str(data),
                "--username",
                user,
                "--password",
                "fieldcap-test-pw",
                "--user-token",
                token,
                "--enable-legacy-api-token",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=START_TIMEOUT_S,
        )
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ls = LabelStudio(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(ls.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not start; see {data / 'label-studio.log'}")
            time.sleep(1)
        yield ls
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _choice(project: str, label: str) -> list[dict[str, Any]]:
    return [{"from_name": "class", "to_name": project, "type": "choices", "value": {"choices": [label]}}]


def test_two_annotators_in_label_studio_come_back_as_annotation_sets(
    label_studio: LabelStudio, exported: Path, central: Path, tmp_path: Path
) -> None:
    readme = (exported / "README.md").read_text()
    assert "LOCAL_FILES_SERVING_ENABLED=true" in readme and "LOCAL_FILES_DOCUMENT_ROOT=" in readme
    alice, bob = TOKENS
    reviewed: dict[str, tuple[str, str]] = {}
    files = []
    for project in ("image", "audio"):
        folder = exported / "labelstudio" / project
        made = label_studio.call(
            alice,
            "POST",
            "/api/projects/",
            {
                "title": f"fieldcap {project}",
                "label_config": (folder / "label_config.xml").read_text(),
                "maximum_annotations": 2,
            },
        )
        pid = made["id"]
        label_studio.call(
            alice,
            "POST",
            "/api/storages/localfiles/",
            {"project": pid, "title": "fieldcap media", "path": str(exported / "media"), "use_blob_urls": False},
        )
        tasks = json.loads((folder / "tasks.json").read_text())
        label_studio.call(alice, "POST", f"/api/projects/{pid}/import", tasks)
        listed = label_studio.call(alice, "GET", f"/api/tasks/?project={pid}&page_size=1000")
        stored = listed["tasks"] if isinstance(listed, dict) else listed
        assert len(stored) == len(tasks)
        for i, t in enumerate(sorted(stored, key=lambda t: t["data"]["fieldcap_key"])):
            link = t["data"][project]
            media = label_studio.call(bob, "GET", link)  # served from local files, to a project member
            assert media == (exported / link.split("?d=", 1)[1]).read_bytes()
            labels = ("speech", "speech") if project == "audio" else ("face", "face" if i % 2 else "background")
            for user, label in zip((alice, bob), labels, strict=True):
                label_studio.call(
                    user, "POST", f"/api/tasks/{t['id']}/annotations/", {"result": _choice(project, label)}
                )
            reviewed[t["data"]["fieldcap_key"]] = labels
        raw = label_studio.call(alice, "GET", f"/api/projects/{pid}/export?exportType=JSON")
        dump = json.loads(raw) if isinstance(raw, bytes) else raw  # sent as a file download
        assert {len(t["annotations"]) for t in dump} == {2}
        files.append(tmp_path / f"{project}.json")
        files[-1].write_bytes(json.dumps(dump).encode())

    url = store_url(central)
    added = 0
    for file in files:
        result = run("review-import", "--store", url, str(file), "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["annotators"] == 2 and summary["unchanged"] == 0
        added += summary["added"]
    assert added == 2 * len(reviewed)

    agreement = json.loads(run("agreement", "--store", url, "--json").output)
    assert agreement["multi_annotated"] == len(reviewed)
    disputed = {k for k, (a, b) in reviewed.items() if a != b}
    assert {d["key"] for d in agreement["disagreements"]} == disputed
    manifest = export(central, tmp_path / "after", "jsonl")
    rows = {r["key"]: r for r in map(json.loads, (tmp_path / "after" / "samples.jsonl").read_text().splitlines())}
    assert manifest["annotation_sources"]["human"] == len(reviewed)
    for key in reviewed:
        assert len(rows[key]["lineage"]["annotations"]["human_sets"]) == 2
