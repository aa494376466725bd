"""The signed central → device command channel: re-record requests and withdrawal, end to end.

Real Mosquitto, real ingester (which publishes open commands until acknowledged), real publisher
on a real catalog, real Ed25519 keys. Booth sessions are written through the catalog's own session
and take rows, as the booth does.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion
from sync_harness import Central, Device, running_ingester, running_publisher, settings, wait_for

from agent.catalog.command_rows import pending_rerecords
from agent.catalog.records import new_record_id
from central.broker import LocalBroker
from central.cli import central_group
from central.commands import audit_rows, list_commands
from central.datasets.commands import export_command
from central.datasets.version_commands import version_group
from central.rerecord import states
from sync import topics
from sync.files import write_atomic
from sync.outbox import BlobRef
from sync.signing import ReceiptSigner, ReceiptVerifier, generate
from sync.wire import utc_now

ALICE, BOB = "a1" * 32, "b2" * 32
CLI = click.Group(commands={"central": central_group, "export": export_command, "version": version_group})


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReceiptSigner, ReceiptVerifier]:
    private, public, _ = generate(tmp_path_factory.mktemp("keys"))
    return ReceiptSigner.load(private), ReceiptVerifier.load(public)


def cli(*args: str) -> Any:
    return CliRunner().invoke(CLI, list(args), catch_exceptions=False)


def take(device: Device, session_id: str, item_id: str, take_no: int, supersedes: str | None = None) -> tuple[str, str]:
    """One finished booth take with one audio capture (real bytes on disk); (take_id, capture_id)."""
    take_id = f"{session_id}-{item_id}-{take_no}"
    rel = f"media/{take_id}.wav"
    written = write_atomic(device.root / rel, f"voice of {take_id}".encode() * 100)
    ref = BlobRef(written.sha256, written.size, written.path, "audio/wav")
    now = time.monotonic_ns()
    with device.catalog() as cat:
        cat.sessions.add_take(
            {
                "take_id": take_id,
                "session_id": session_id,
                "item_id": item_id,
                "take_no": take_no,
                "supersedes": supersedes,
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
            take=take_no,
        )
        cat.add_verdict(
            capture,
            profile="speech",
            profile_version="1",
            verdict="pass",
            reasons=[],
            metrics={},
            analyzers=[],
            annotations=[],
        )
        cat.sessions.finish_take(
            take_id,
            {"status": "done", "captures_json": json.dumps({"mic": capture}), "ended_utc": utc_now()},
        )
    return take_id, capture


def session(device: Device, pseudonym: str) -> tuple[str, str, str]:
    """A booth session of one subject with one take; (session_id, take_id, capture_id)."""
    session_id = new_record_id()[:12]
    with device.catalog() as cat:
        cat.sessions.add_session(
            {
                "session_id": session_id,
                "kind": "booth",
                "site": "lab",
                "station": "booth-1",
                "operator": "op",
                "subject_pseudonym": pseudonym,
                "started_utc": utc_now(),
            }
        )
    return (session_id, *take(device, session_id, "item-1", 1))


def catalog_rows(device: Device, sql: str, *args: Any) -> list[sqlite3.Row]:
    with device._ro() as conn:
        return list(conn.execute(sql, args))


def central_rows(central: Central, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(central.url.removeprefix("sqlite://")) as conn:
        return conn.execute(sql, args).fetchall()


@contextmanager
def synced(
    mosquitto: LocalBroker, device: Device, central: Central, signer: ReceiptSigner | None, verifier: Any
) -> Iterator[None]:
    with (
        running_ingester(mosquitto.url, central, signer=signer, command_every_s=0.3),
        running_publisher(device, settings(mosquitto.url), verifier=verifier) as pub,
    ):
        assert pub.wait_idle(60), "the device did not sync"
        yield


def test_a_rerecord_request_reaches_the_booth_once_and_the_retake_closes_it(
    mosquitto: LocalBroker, device: Device, any_central: Central, keys: tuple[ReceiptSigner, ReceiptVerifier]
) -> None:
    """On SQLite and PostgreSQL: the commands table, the acknowledgement and the closing retake."""
    central = any_central
    signer, verifier = keys
    session_id, take_id, capture_id = session(device, ALICE)
    with synced(mosquitto, device, central, signer, verifier):
        result = cli("central", "rerecord", "--store", central.url, "--capture", capture_id, "--reason", "door slam")
        assert result.exit_code == 0, result.output
        assert "queued" in result.output
        wait_for(lambda: bool(pending_rerecords(device.catalog())), 30, "the request at the device")
        (req,) = pending_rerecords(device.catalog())
        assert (req.take_id, req.session_id, req.item_id, req.reason) == (take_id, session_id, "item-1", "door slam")
        wait_for(lambda: all(r.acked_utc for r in list_commands(central.store)), 30, "the device's acknowledgement")
        assert [s.state for s in states(central.store)] == ["delivered"]
        time.sleep(1.0)  # the ingester publishes the command again every 0.3 s until acked: replays
        assert len(device.events("command_rerecord")) == 1

        retake_id, _ = take(device, session_id, "item-1", 2, supersedes=take_id)
        assert pending_rerecords(device.catalog()) == []
        wait_for(lambda: states(central.store)[0].state == "closed", 30, "the retake's record centrally")
    listed = [
        json.loads(line)
        for line in cli("central", "rerecord", "--store", central.url, "--list", "--json").output.splitlines()
    ]
    assert [(r["take_id"], r["state"], r["retake"]) for r in listed] == [(take_id, "closed", retake_id)]


def test_user_mistakes_in_central_rerecord_are_one_line_errors(central: Central) -> None:
    assert cli("central", "rerecord", "--store", central.url, "--reason", "x").exit_code == 2
    assert cli("central", "rerecord", "--store", central.url, "--take", "t").exit_code == 2
    result = cli("central", "rerecord", "--store", central.url, "--take", "nope", "--reason", "x")
    assert result.exit_code == 1 and "no take 'nope'" in result.output
    result = cli("central", "withdraw", "0" * 64, "--store", central.url, "--blobs", str(central.tree.root))
    assert result.exit_code == 1 and "no session" in result.output
    result = cli("central", "withdraw", "Alice Smith", "--store", central.url, "--blobs", str(central.tree.root))
    assert result.exit_code == 1 and "is not a pseudonym" in result.output and "Traceback" not in result.output


def test_withdrawal_deletes_the_participant_centrally_and_on_the_device(
    mosquitto: LocalBroker,
    device: Device,
    central: Central,
    keys: tuple[ReceiptSigner, ReceiptVerifier],
    tmp_path: Path,
) -> None:
    signer, verifier = keys
    alice_session, _, alice_capture = session(device, ALICE)
    bob_session, _, bob_capture = session(device, BOB)
    with device.catalog() as cat:
        cat.add_event("booth_decision", "accepted", detail={"session_id": alice_session})
    (alice_media,) = [
        r["path"] for r in catalog_rows(device, "SELECT path FROM captures WHERE record_id = ?", alice_capture)
    ]
    alice_sha = catalog_rows(device, "SELECT sha256 FROM captures WHERE record_id = ?", alice_capture)[0][0]
    with synced(mosquitto, device, central, signer, verifier):
        before = cli("export", "--store", central.url, "--out", str(tmp_path / "v1"), "--format", "jsonl", "--quiet")
        assert before.exit_code == 0, before.output
        assert central.tree.path_for(alice_sha).exists()
        made = cli("version", "create", "before-withdrawal", "--store", central.url, "--note", "all of it")
        assert made.exit_code == 0, made.output

        result = cli("central", "withdraw", ALICE, "--store", central.url, "--blobs", str(central.tree.root))
        assert result.exit_code == 0, result.output
        shown = cli("version", "show", "before-withdrawal", "--store", central.url, "--json")
        (note,) = json.loads(shown.output)["withdrawals"]  # the immutable version says what left the store
        assert note["note"] == f"participant {ALICE} withdrew" and note["samples"] == 1

        # Centrally at once: no record of hers, her blob gone, Bob untouched.
        everything = "\n".join(str(r) for r in central_rows(central, "SELECT body FROM records"))
        assert alice_session not in everything and alice_capture not in everything and ALICE not in everything
        assert bob_session in everything and bob_capture in everything
        assert not central.tree.path_for(alice_sha).exists()
        assert central_rows(central, "SELECT COUNT(*) FROM blobs WHERE sha256 = ?", alice_sha) == [(0,)]
        (row,) = audit_rows(central.store, ["withdraw"])
        assert row["action"] == "withdraw" and row["subject"] == ALICE and row["who"]
        assert row["detail"]["records"]["capture"] == 1 and row["detail"]["blobs"] == 1
        assert row["detail"]["records"]["event"] == 1

        # The device purges its copies and says so; the answer flows back as ordinary records.
        wait_for(lambda: bool(device.events("command_purge")), 30, "the purge on the device")
        wait_for(lambda: all(r.acked_utc for r in list_commands(central.store)), 30, "the purge's acknowledgement")
        (purge,) = list_commands(central.store)
        assert purge.ack_status == "applied"
        assert purge.ack_counts["sessions"] == 1 and purge.ack_counts["media_files"] == 1
        wait_for(
            lambda: any(
                "command_purge" in str(r)
                for r in central_rows(central, "SELECT body FROM records WHERE kind = 'event'")
            ),
            30,
            "the purge event centrally",
        )
    assert catalog_rows(device, "SELECT * FROM sessions WHERE subject_pseudonym = ?", ALICE) == []
    assert catalog_rows(device, "SELECT * FROM captures WHERE record_id = ?", alice_capture) == []
    assert catalog_rows(device, "SELECT * FROM events WHERE detail_json LIKE ?", f"%{alice_session}%") == []
    assert not (device.root / alice_media).exists()
    assert catalog_rows(device, "SELECT * FROM sessions WHERE subject_pseudonym = ?", BOB)
    assert (
        device.root / catalog_rows(device, "SELECT path FROM captures WHERE record_id = ?", bob_capture)[0][0]
    ).exists()

    after = cli("export", "--store", central.url, "--out", str(tmp_path / "v2"), "--format", "jsonl", "--quiet")
    assert after.exit_code == 0, after.output
    exported = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "v2").rglob("*") if p.is_file())
    assert alice_capture not in exported and alice_session not in exported and ALICE not in exported
    assert bob_capture in exported


def test_a_device_without_the_public_key_refuses_a_purge_and_says_so(
    mosquitto: LocalBroker, device: Device, central: Central, keys: tuple[ReceiptSigner, ReceiptVerifier]
) -> None:
    signer, _ = keys
    alice_session, _, _ = session(device, ALICE)
    with synced(mosquitto, device, central, signer, None):
        assert (
            cli("central", "withdraw", ALICE, "--store", central.url, "--blobs", str(central.tree.root)).exit_code == 0
        )
        wait_for(lambda: all(r.acked_utc for r in list_commands(central.store)), 30, "the refusal")
    (purge,) = list_commands(central.store)
    assert purge.ack_status == "refused" and "receipt_public_key" in (purge.ack_message or "")
    assert device.events("command_refused")
    assert catalog_rows(device, "SELECT * FROM sessions WHERE session_id = ?", alice_session)


def test_forged_and_misaddressed_commands_are_refused(
    mosquitto: LocalBroker, device: Device, central: Central, keys: tuple[ReceiptSigner, ReceiptVerifier]
) -> None:
    from central.commands import new_command
    from sync.commands import PurgeBody, encode_command

    _, verifier = keys
    alice_session, _, _ = session(device, ALICE)
    cmd = new_command(device.device_id, purge=PurgeBody(subject_pseudonym=ALICE))
    forger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv5)
    forger.connect("127.0.0.1", mosquitto.port)
    forger.loop_start()
    try:
        with running_publisher(device, settings(mosquitto.url), verifier=verifier) as pub:
            wait_for(lambda: pub.stats.connected, 30, "the device to connect")
            time.sleep(0.5)  # its subscription is in place
            forger.publish(topics.command(device.device_id, "purge"), encode_command(cmd), qos=1).wait_for_publish()
            wait_for(lambda: pub.stats.commands_refused >= 1, 30, "the forged command's refusal")
    finally:
        forger.loop_stop()
        forger.disconnect()
    assert catalog_rows(device, "SELECT * FROM sessions WHERE session_id = ?", alice_session)
    assert catalog_rows(device, "SELECT * FROM commands") == []
    assert device.events("command_refused")


def test_withdrawing_again_removes_records_that_arrived_late(device: Device, central: Central) -> None:
    """A verdict the device sent before it applied the purge, stored after the withdrawal."""
    alice_session, _, alice_capture = session(device, ALICE)
    with device._ro() as conn:
        rows = [(r["record_id"], r["kind"], r["body_json"]) for r in conn.execute("SELECT * FROM outbox")]
    late = [r for r in rows if r[1] == "verdict"]
    for record_id, kind, body in rows:
        if kind != "verdict":
            central.store.put_record(device.device_id, record_id, kind, utc_now(), None, None, body)
    blobs = str(central.tree.root)
    assert cli("central", "withdraw", ALICE, "--store", central.url, "--blobs", blobs).exit_code == 0
    for record_id, kind, body in late:
        central.store.put_record(device.device_id, record_id, kind, utc_now(), None, None, body)
    assert central_rows(central, "SELECT COUNT(*) FROM records WHERE kind = 'verdict'") == [(1,)]
    again = cli("central", "withdraw", ALICE, "--store", central.url, "--blobs", blobs, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["records"] == {"verdict": 1}
    assert central_rows(central, "SELECT COUNT(*) FROM records") == [(0,)]
    assert alice_capture and alice_session
