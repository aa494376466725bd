"""Where central commands find the store URL (so a database password stays out of argv), and key options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from central.store import SqliteStore

REPO = Path(__file__).resolve().parents[2]


def fieldcap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("FIELDCAP_STORE", "CREDENTIALS_DIRECTORY")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, **(env or {})},
        check=False,
    )


def test_the_store_url_comes_from_env_file_or_credential(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    SqliteStore(db).close()
    url = f"sqlite:///{db}"
    assert fieldcap("central", "ls", "--json", env={"FIELDCAP_STORE": url}).returncode == 0
    url_file = tmp_path / "store-url"
    url_file.write_text(url + "\n")
    assert fieldcap("central", "ls", "--json", "--store-file", str(url_file)).returncode == 0
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "store-url").write_text(url + "\n")
    assert fieldcap("central", "ls", "--json", env={"CREDENTIALS_DIRECTORY": str(creds)}).returncode == 0
    missing = fieldcap("central", "ls", "--json")
    assert missing.returncode == 2
    assert "no central store given" in missing.stderr and "--store-file" in missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = fieldcap("central", "ls", "--store-file", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "the file is empty" in empty.stderr and "Traceback" not in empty.stderr


def test_keygen_and_ingest_receipt_key_errors_are_clear(tmp_path: Path) -> None:
    made = fieldcap("central", "keygen", "--out", str(tmp_path / "keys"))
    assert made.returncode == 0, made.stderr
    again = fieldcap("central", "keygen", "--out", str(tmp_path / "keys"))
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = fieldcap(
        "ingest",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--store",
        f"sqlite:///{tmp_path / 'c.db'}",
        "--blobs",
        str(tmp_path / "blobs"),
        "--receipt-key",
        str(tmp_path / "keys" / "receipt-key.pub"),  # the public key where the private one belongs
    )
    assert bad.returncode == 1
    assert "not an unencrypted PEM private key" in bad.stderr and "Traceback" not in bad.stderr


def test_a_mistyped_sqlite_store_is_reported_not_created(tmp_path: Path) -> None:
    """Only `fieldcap ingest` makes a store: every other command names the missing file and creates none."""
    missing = tmp_path / "typo" / "central.db"
    for argv in (["central", "status"], ["central", "ls"], ["central", "participants"], ["version", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "agent", *argv, "--store", f"sqlite:///{missing}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        assert "no central store there" in done.stderr + done.stdout and "Traceback" not in done.stderr
        assert not missing.exists() and not missing.parent.exists()
