"""Fuzzing the ingester with malformed and hostile messages (hypothesis).

Every generated message is wrong by construction (a topic outside the tree, a body that breaks
the schema, a record that names another device, a chunk for a blob nobody announced, ...). Each
must be dead-lettered exactly once with a reason, and nothing may crash the ingester. 10,000 go
through ``Ingester.handle`` directly; a smaller batch goes through a real Mosquitto.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from sync_harness import Central, running_ingester, wait_for

from central.blobs import BlobTree
from central.broker import LocalBroker
from central.ingester import Ingester
from central.limits import IntakeLimits
from central.store import SqliteStore
from sync import topics

SHA = "ab" * 32
RID = "0123456789ab-0123456789abcdef0123"

# ---------------------------------------------------------------------------- strategies

# Kept small: at 10,000 examples, drawing the data costs more than handling it.
junk_text = st.text(max_size=24)
junk_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | junk_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_text, inner, max_size=3),
    max_leaves=5,
)


def envelope(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "schema_version": 1,
        "record_id": RID,
        "device": "dev-1",
        "kind": "capture",
        "created_utc": "2026-01-01T00:00:00.000000+00:00",
        "body": {"x": 1},
    }
    env.update(changes)
    return env


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {k: v for k, v in d.items() if k != key}


bad_record_id = st.one_of(
    st.just(""),
    st.just("XYZ"),
    st.just("0" * 65),
    st.just("../../etc/passwd"),
    st.just("0123456\n"),
    st.text(max_size=70).filter(lambda s: not (8 <= len(s) <= 64 and set(s) <= set("0123456789abcdef-"))),
)
bad_time = st.one_of(
    st.just("yesterday"),
    st.just("2026-01-01T00:00:00"),
    st.just("２０２６-01-01T00:00:00Z"),
    st.just("2026-01-01T00:00:00Z\n"),
    st.just("2026-01-01T00:00:00+00:00" + "0" * 40),
    st.integers(),
)
record_mutation = st.one_of(
    st.builds(
        lambda k: _drop(k)(envelope()),
        st.sampled_from(["schema_version", "record_id", "device", "kind", "created_utc", "body"]),
    ),
    st.builds(lambda v: envelope(schema_version=v), st.one_of(st.integers().filter(lambda i: i != 1), junk_text)),
    st.builds(lambda v: envelope(record_id=v), bad_record_id),
    st.builds(lambda v: envelope(created_utc=v), bad_time),
    st.builds(lambda v: envelope(body=v), junk_json.filter(lambda v: not isinstance(v, dict))),
    st.builds(
        lambda k, v: envelope(**{k: v}), junk_text.filter(lambda k: k not in envelope() and k != "blob"), junk_json
    ),
    st.builds(lambda dev: envelope(device=dev), st.sampled_from(["dev-2", "DEV-1", "dev-1 ", "", "x" * 65])),
    st.builds(lambda kind: envelope(kind=kind), st.sampled_from(["verdict", "Capture", "", "a" * 40])),
    st.builds(
        lambda b: envelope(blob=b),
        st.one_of(
            junk_json.filter(lambda v: v is not None),
            st.fixed_dictionaries(
                {
                    "sha256": st.sampled_from([SHA.upper(), "ab", SHA + "0"]),
                    "size": st.integers(),
                    "media_type": junk_text,
                }
            ),
        ),
    ),
)


@st.composite
def record_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    topic = topics.record("dev-1", "capture")
    kind = draw(st.sampled_from(["mutated", "bytes", "not-object", "nested", "nan", "huge", "utf16"]))
    if kind == "mutated":
        return topic, json.dumps(draw(record_mutation)).encode()
    if kind == "bytes":
        raw = draw(st.binary(max_size=300))
        try:
            json.loads(raw)
        except ValueError:
            return topic, raw
        return topic, b"\xff" + raw
    if kind == "not-object":
        return topic, json.dumps(draw(junk_json.filter(lambda v: not isinstance(v, dict)))).encode()
    if kind == "nested":
        depth = draw(st.integers(2000, 50_000))
        return topic, b"[" * depth + b"]" * depth
    if kind == "nan":
        return topic, json.dumps(envelope(body={"v": float("nan")})).encode()
    if kind == "huge":
        return topic, json.dumps(envelope(body={"pad": "x" * (1 << 20)})).encode()
    return topic, json.dumps(envelope()).encode("utf-16")


bad_device = st.one_of(
    st.sampled_from(["", "-dev", "dev/1", "dev+", "dév", "dev\n", "a" * 65, "..", ".", "dev 1", "dev#"]),
    st.text(min_size=1, max_size=70).filter(lambda d: not topics.DEVICE_RE.fullmatch(d)),
)
bad_offset = st.one_of(
    st.sampled_from(["-1", "01", "1.0", "1e3", "", " 1", "１", "²", "99999999999999", "0x10"]),
    st.integers(min_value=topics.MAX_OFFSET, max_value=10**13 - 1).map(str),
)


@st.composite
def topic_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    payload = draw(st.binary(max_size=64))
    kind = draw(st.sampled_from(["random", "device", "sha", "offset", "tail", "direction"]))
    if kind == "random":
        return draw(junk_text.filter(lambda t: not t.startswith("fieldcap/v1/"))), payload
    if kind == "device":
        return f"fieldcap/v1/{draw(bad_device)}/up/rec/capture", payload
    if kind == "sha":
        sha = draw(st.sampled_from([SHA.upper(), SHA[:63], SHA + "a", "../" + SHA[3:], "zz" * 32]))
        return f"fieldcap/v1/dev-1/up/blob/{sha}/{draw(st.sampled_from(['init', 'fin', 'c/0']))}", payload
    if kind == "offset":
        return f"fieldcap/v1/dev-1/up/blob/{SHA}/c/{draw(bad_offset)}", payload
    if kind == "tail":
        tail = draw(
            st.sampled_from(
                [
                    "rec",
                    "rec/capture/x",
                    "rec/Capture",
                    "sync",
                    "sync/query/x",
                    "blob",
                    f"blob/{SHA}",
                    f"blob/{SHA}/c",
                    f"blob/{SHA}/x",
                    "other",
                    "",
                ]
            )
        )
        return f"fieldcap/v1/dev-1/up/{tail}", payload
    return f"fieldcap/v1/dev-1/{draw(st.sampled_from(['down', 'status', 'UP', 'up ']))}/rec/capture", payload


def _json_with(base: dict[str, Any], mutate: dict[str, Any]) -> bytes:
    return json.dumps({**base, **mutate}).encode()


@st.composite
def blob_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    sha = draw(st.sampled_from([SHA, "cd" * 32, "0" * 64]))
    init = {"sha256": sha, "size": 1000, "chunk_size": 65536, "media_type": "audio/wav"}
    kind = draw(st.sampled_from(["init", "chunk", "fin", "query"]))
    if kind == "init":
        bad = draw(
            st.one_of(
                st.fixed_dictionaries({"sha256": st.just("ef" * 32)}),
                st.fixed_dictionaries({"size": st.one_of(st.integers(max_value=-1), st.integers(min_value=1 << 37))}),
                st.fixed_dictionaries(
                    {"chunk_size": st.one_of(st.integers(max_value=0), st.integers(min_value=1 << 27))}
                ),
                st.fixed_dictionaries({"media_type": st.sampled_from(["", "wav", "audio/", "AUDIO/WAV", "a/b/c"])}),
                st.fixed_dictionaries({"surprise": junk_json}),
            )
        )
        return topics.blob_init("dev-1", sha), _json_with(init, bad)
    if kind == "chunk":  # for a blob that nobody announced, or larger than any chunk may be
        data = draw(st.sampled_from([b"", b"x", os.urandom(100)]))
        return topics.blob_chunk("dev-1", sha, draw(st.integers(0, 1 << 30))), data
    if kind == "fin":
        bad = draw(
            st.one_of(
                st.fixed_dictionaries({"sha256": st.just("ef" * 32)}),
                st.fixed_dictionaries({"size": st.one_of(st.integers(max_value=-1), junk_text)}),
                st.fixed_dictionaries({"extra": junk_json}),
            )
        )
        return topics.blob_fin("dev-1", sha), _json_with({"sha256": sha, "size": 1000}, bad)
    bad = draw(
        st.one_of(
            st.fixed_dictionaries({"record_ids": st.lists(bad_record_id, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"blobs": st.lists(st.sampled_from([SHA.upper(), "x"]), min_size=1, max_size=3)}),
            st.fixed_dictionaries({"record_ids": st.just([RID] * 1001)}),
            st.fixed_dictionaries({"extra": junk_json}),
        )
    )
    return topics.query("dev-1"), json.dumps(bad).encode()


hostile = st.one_of(record_messages(), topic_messages(), blob_messages())

# ---------------------------------------------------------------------------- direct


@pytest.fixture(scope="module")
def fuzz_ingester() -> Iterator[Ingester]:
    # tmpfs: the same SQLite, without paying a disk flush for each of 10,000 transactions
    root = Path(tempfile.mkdtemp(prefix="fieldcap-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    store = SqliteStore(root / "central.db")
    yield Ingester(broker="mqtt://127.0.0.1:1", store=store, blobs=BlobTree(root / "blobs"), limits=KEEP_ALL)
    store.close()


# Every rejected message is kept here, to check each one's reason (the dead-letter rate limit is
# tested in tests/central/test_hostile_devices.py).
KEEP_ALL = IntakeLimits(dead_letter_burst=10**9, dead_letters_per_device=10**9)
FUZZ_MESSAGES = int(os.environ.get("FIELDCAP_FUZZ_MESSAGES", "10000"))
PER_EXAMPLE = 8  # messages per hypothesis example: the per-example overhead is then paid 8 times less


def test_ten_thousand_hostile_messages_are_each_dead_lettered(fuzz_ingester: Ingester) -> None:
    ing = fuzz_ingester
    reasons: Counter[str] = Counter()

    @settings(
        max_examples=FUZZ_MESSAGES // PER_EXAMPLE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(hostile, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            before = ing.stats.rejected
            ing.handle(topic, payload)  # must not raise
            assert ing.stats.rejected == before + 1, (topic, payload[:200])
            (last,) = ing.store.dead_letters(1)
            assert last["reason"] and not last["reason"].startswith("internal error"), last
            reasons[last["reason"].split(":")[0][:40]] += 1

    check()
    total = sum(reasons.values())
    assert total >= FUZZ_MESSAGES, total
    assert ing.store.count("dead_letters") == total
    assert ing.store.count("records") == 0 and ing.store.count("blobs") == 0
    assert len(reasons) > 20, reasons  # many different ways to be wrong were tried
    print(f"\n{total} hostile messages dead-lettered; reasons: {reasons.most_common(12)}")


def test_hostile_messages_on_postgresql(pg_central: Central) -> None:
    """The same messages against PostgreSQL, which refuses some values SQLite takes (NUL in text)."""
    ing = Ingester(broker="mqtt://127.0.0.1:1", store=pg_central.store, blobs=pg_central.tree, limits=KEEP_ALL)

    @settings(max_examples=1000 // PER_EXAMPLE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(hostile, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            before = ing.stats.rejected
            ing.handle(topic, payload)
            assert ing.stats.rejected == before + 1, (topic, payload[:200])

    check()
    assert pg_central.store.count("dead_letters") == ing.stats.rejected >= 1000
    reasons = [d["reason"] for d in pg_central.store.dead_letters(1000)]
    assert not [r for r in reasons if r.startswith("internal error")]


# ---------------------------------------------------------------------------- through a broker


def test_hostile_messages_through_a_real_broker(mosquitto: LocalBroker, central: Central) -> None:
    sent: list[tuple[str, bytes]] = []

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(hostile)
    def collect(message: tuple[str, bytes]) -> None:
        topic, _payload = message
        # Only what the broker will route to the ingester: a publishable topic under the subscription.
        levels = topic.split("/")
        if (
            len(levels) >= 4
            and levels[:2] == ["fieldcap", "v1"]
            and levels[3] == "up"
            and levels[2]
            and topic.isprintable()
            and not set("+#") & set(topic)
            and len(topic.encode()) < 60000
        ):  # Mosquitto disconnects a client that publishes control characters (MQTT 5, 1.5.4)
            sent.append(message)

    collect()
    assert len(sent) >= 100
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    with running_ingester(mosquitto.url, central, limits=KEEP_ALL) as ing:
        infos = [client.publish(t, p, qos=1) for t, p in sent]
        wait_for(lambda: all(i.is_published() for i in infos), 60, "the broker to take every message")
        wait_for(lambda: central.store.count("dead_letters") >= len(sent), 60, "every message to be dead-lettered")
        assert ing.stats.connected
    client.loop_stop()
    client.disconnect()
    assert central.store.count("dead_letters") == len(sent)
    assert central.store.count("records") == 0
    reasons = [d["reason"] for d in central.store.dead_letters(len(sent))]
    assert all(r and not r.startswith("internal error") for r in reasons)
