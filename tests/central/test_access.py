"""Access control on a real PostgreSQL store: roles by kind, rows by project, and the audit trail.

The demo's records are copied into a throwaway PostgreSQL cluster; ``fieldcap central grant`` makes
real login roles there, and each check connects with that role's own credentials (the cluster
trusts local connections, so the role name is what PostgreSQL checks, as it would after a password).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from central.cli import central_group

from .conftest import own_database, run, sql

OTHER = "other-02"
PSEUDONYM = "0a1b2c3d4e5f6071"


@pytest.fixture
def postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of its own on the session's cluster: the rows, policies and grants made here stay
    out of the other tests' database (roles are cluster-wide, and named for these tests)."""
    with own_database(postgres_url, "access") as url:
        yield url


def cli(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(central_group, list(args), input=stdin, catch_exceptions=False)


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))


def copy_into(pg_url: str, demo: Path) -> None:
    """The demo's records, blobs and owners, plus a second device holding a copy of the same data."""
    from central.store import open_store

    store = open_store(pg_url)
    try:
        with store._tx() as cur:
            for table, cols, copies in (
                ("records", "device, record_id, kind, created_utc, received_utc, blob_sha256, blob_size, body", True),
                ("blobs", "sha256, size, media_type, device, received_utc", False),
                ("blob_owners", "device, sha256, received_utc", True),
            ):
                marks = ",".join("?" * len(cols.split(",")))
                for row in sql(demo, f"SELECT {cols} FROM {table}"):
                    store._exec(cur, f"INSERT INTO {table} ({cols}) VALUES ({marks})", row)
                    if copies:
                        copy = [OTHER, *row[1:]]
                        if table == "records" and row[2] == "session":  # the other device's participant
                            body = json.loads(row[7])
                            body["body"]["subject_pseudonym"] = PSEUDONYM
                            copy[7] = json.dumps(body)
                        store._exec(cur, f"INSERT INTO {table} ({cols}) VALUES ({marks})", copy)
    finally:
        store.close()


def samples(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_roles_see_and_do_only_what_they_were_granted(demo: Path, tmp_path: Path, postgres_url: str) -> None:
    copy_into(postgres_url, demo)
    everything = tmp_path / "all"
    result = run(
        "export",
        "--store",
        postgres_url,
        "--blobs",
        str(demo / "blobs"),
        "--out",
        str(everything),
        "--format",
        "jsonl",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    by_device: dict[str, int] = {}
    for s in samples(everything):
        by_device[s["device"]] = by_device.get(s["device"], 0) + 1
    assert len(by_device) >= 2, by_device
    dev_a, *others = sorted(by_device)

    # The owner (the cluster's superuser) puts devices in projects and makes the roles.
    assert cli("grant", "device", "alpha", dev_a, "--store", postgres_url).exit_code == 0
    assert cli("grant", "device", "beta", *others, "--store", postgres_url).exit_code == 0
    for role, kind, extra in (
        ("exp_a", "exporter", ("--project", "alpha")),
        ("cur", "curator", ()),
        ("ing", "ingester", ()),
        ("aud", "auditor", ()),
    ):
        made = cli(
            "grant",
            "role",
            role,
            "--kind",
            kind,
            "--password-file",
            "-",
            *extra,
            "--store",
            postgres_url,
            "--json",
            stdin=f"pw-{role}\n",
        )
        assert made.exit_code == 0, made.output
        assert json.loads(made.output)["created"] is True
    exp_a = as_role(postgres_url, "exp_a", "pw-exp_a")

    # An exporter of project alpha exports and reports only alpha's devices.
    mine = tmp_path / "mine"
    result = run(
        "export",
        "--store",
        exp_a,
        "--blobs",
        str(demo / "blobs"),
        "--out",
        str(mine),
        "--format",
        "jsonl",
        "--quiet",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert {s["device"] for s in samples(mine)} == {dev_a}
    assert len(samples(mine)) == by_device[dev_a]
    card = run("report", "--store", exp_a, "--blobs", str(demo / "blobs"), "--out", str(tmp_path / "card"), "--json")
    assert card.exit_code == 0, card.output
    assert json.loads(card.output)["samples"] == by_device[dev_a]
    # ... may neither read the audit log nor write records.
    denied = cli("audit", "--store", exp_a)
    assert denied.exit_code == 1 and "permission denied" in denied.output and "Traceback" not in denied.output

    # An ingester inserts; a curator imports a review.
    from central.commands import open_commands
    from central.store import open_store

    ing = open_store(as_role(postgres_url, "ing", "pw-ing"))
    try:
        first = sql(demo, "SELECT kind, created_utc, body FROM records LIMIT 1")[0]
        assert ing.put_record(dev_a, "access-test-1", first[0], first[1], None, None, first[2]) == "stored"
        sha = "ab" * 32  # an upload from start to finish, a dead letter, the sweeps
        assert ing.start_staging(dev_a, sha, 10, "application/octet-stream")
        ing.add_chunk(dev_a, sha, 0, 10)
        assert ing.finish_blob(dev_a, sha, 10, "application/octet-stream") == "stored"
        ing.dead_letter("fieldcap/v1/x/up/record", dev_a, "test", b"{}")
        ing.expire_dead_letters("1970-01-01T00:00:00+00:00", 100)
        assert ing.stale_staging("1970-01-01T00:00:00+00:00") == []
        assert isinstance(open_commands(ing), list)
    finally:
        ing.close()
    exp = open_store(exp_a)
    try:
        with pytest.raises(Exception, match="permission denied"):
            exp.put_record(dev_a, "access-test-2", first[0], first[1], None, None, first[2])
    finally:
        exp.close()
    task = samples(mine)[0]
    review = tmp_path / "review.json"
    review.write_text(
        json.dumps(
            [
                {
                    "data": {"fieldcap_device": task["device"], "fieldcap_record_id": task["record_id"]},
                    "annotations": [
                        {
                            "id": 1,
                            "result": [
                                {
                                    "id": "x",
                                    "type": "choices",
                                    "from_name": "class",
                                    "to_name": "image",
                                    "value": {"choices": ["ok"]},
                                }
                            ],
                        }
                    ],
                }
            ]
        )
    )
    refused = run("review-import", "--store", exp_a, str(review))
    assert refused.exit_code == 1 and "may not do that" in refused.output, refused.output
    cur = as_role(postgres_url, "cur", "pw-cur")
    imported = run("review-import", "--store", cur, str(review))
    assert imported.exit_code == 0 and "1 new annotation set(s)" in imported.output, imported.output

    # A curator withdraws a participant (reading earlier withdrawals in the audit log); an exporter may not.
    blobs = str(demo / "blobs")  # every blob is also the demo device's: none is deleted
    refused = cli("withdraw", PSEUDONYM, "--store", exp_a, "--blobs", blobs)
    assert refused.exit_code == 1 and "may not do that" in refused.output, refused.output
    gone = cli("withdraw", PSEUDONYM, "--store", cur, "--blobs", blobs, "--json")
    assert gone.exit_code == 0, gone.output
    withdrawn = json.loads(gone.output)
    assert withdrawn["blobs"] == 0 and sum(withdrawn["records"].values()) > 0

    # The auditor reads every row, with both users and the counts.
    listed = cli("audit", "--store", as_role(postgres_url, "aud", "pw-aud"), "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    by_action: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_action.setdefault(row["action"], []).append(row)
        assert row["who"]  # the OS user
    export_rows = [r for r in by_action["export"] if r["db_user"] == "exp_a"]
    assert len(export_rows) == 1 and export_rows[0]["detail"]["samples"] == by_device[dev_a]
    assert export_rows[0]["detail"]["version_id"] == json.loads(result.output)["version_id"]
    (report_row,) = by_action["report"]
    assert report_row["db_user"] == "exp_a" and report_row["detail"]["samples"] == by_device[dev_a]
    (review_row,) = by_action["review_import"]
    assert review_row["db_user"] == "cur" and review_row["detail"]["added"] == 1
    (withdraw_row,) = by_action["withdraw"]
    assert withdraw_row["db_user"] == "cur" and withdraw_row["detail"]["records"] == withdrawn["records"]
    assert {r["subject"] for r in by_action["grant_role"]} == {"exp_a", "cur", "ing", "aud"}
    assert {r["subject"] for r in by_action["assign_devices"]} == {"alpha", "beta"}
    assert all(r["db_user"] == "postgres" for r in by_action["grant_role"])
    only = cli("audit", "--store", as_role(postgres_url, "aud", "pw-aud"), "--action", "report", "--json")
    assert [json.loads(line)["action"] for line in only.output.splitlines()] == ["report"]

    # Revoking the project leaves the exporter nothing to see.
    assert cli("grant", "project", "exp_a", "alpha", "--revoke", "--store", postgres_url).exit_code == 0
    none = run(
        "export",
        "--store",
        exp_a,
        "--blobs",
        str(demo / "blobs"),
        "--out",
        str(tmp_path / "none"),
        "--format",
        "jsonl",
        "--quiet",
    )
    assert none.exit_code == 1 and "0 in the store" in none.output, none.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("role", "Bad-Name", "--kind", "exporter"), "lower-case letters"),
        (("role", "fieldcap_exporter", "--kind", "exporter"), "group roles"),
        (("project", "nobody", "alpha"), "no role nobody"),
        (("device", "alpha", "dev", "--remove"), None),
        (("role", "exp", "--kind", "wizard"), "wizard"),
    ],
)
def test_bad_grants_get_clear_errors(postgres_url: str, args: tuple[str, ...], message: str | None) -> None:
    from central.store import open_store

    open_store(postgres_url).close()
    result = cli("grant", *args, "--store", postgres_url, stdin="pw\n")
    if message is None:  # removing a device that is in no project: fine, nothing changed
        assert result.exit_code == 0 and "0 changed" in result.output, result.output
        return
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_sqlite_is_single_user_but_keeps_an_audit_log(central: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{central / 'central.db'}"
    refused = cli("grant", "device", "alpha", "dev", "--store", url)
    assert refused.exit_code == 1 and "single-user" in refused.output, refused.output
    out = tmp_path / "x"
    assert run("export", "--store", url, "--out", str(out), "--format", "jsonl", "--quiet").exit_code == 0
    listed = cli("audit", "--store", url, "--json", "--since", "2000-01-01")
    rows = [json.loads(line) for line in listed.output.splitlines()]
    mine = [r for r in rows if r["subject"] == str(out.resolve())]  # the demo store was exported before
    assert [r["action"] for r in mine] == ["export"] and mine[0]["db_user"] is None and mine[0]["who"]
    assert mine[0]["detail"]["samples"] == len(samples(out))
    later = cli("audit", "--store", url, "--since", "2999-01-01")
    assert later.exit_code == 0 and later.output == ""
    bad = cli("audit", "--store", url, "--since", "yesterday")
    assert bad.exit_code != 0 and "--since" in bad.output
