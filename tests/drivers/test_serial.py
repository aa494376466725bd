"""NMEA 0183 and line-protocol sensors through real ptys (and socat for reconnects)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import DriverIOError, DriverOpenError, DriverTimeout, open_driver, parse_device_settings

from .conftest import Pty, nmea

GGA = "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
RMC = "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"


def gps(port: str, **kw: object):  # type: ignore[no-untyped-def]
    return open_driver(parse_device_settings({"name": "gps", "type": "nmea", "port": port, "exclusive": False, **kw}))


def lines(port: str, fmt: str = "jsonl", **kw: object):  # type: ignore[no-untyped-def]
    spec = {
        "name": "env",
        "type": "serial-lines",
        "port": port,
        "format": fmt,
        "exclusive": False,
        "fields": [
            {"name": "temperature_c", "unit": "degC", "min": -40, "max": 85},
            {"name": "humidity_pct", "unit": "%", "required": False},
        ],
        **kw,
    }
    return open_driver(parse_device_settings(spec))


def test_nmea_fix_through_a_pty(pty: Pty) -> None:
    with gps(pty.path) as drv:
        t0 = time.monotonic_ns()
        pty.write(nmea(GGA) + nmea("GPGSV,1,1,01,03,03,111,00") + nmea(RMC))
        fix = drv.read(2)
        force = drv.settings_in_force()
    p = fix.payload
    assert isinstance(p, dict)
    assert p["lat"] == pytest.approx(48.1173) and p["lon"] == pytest.approx(11.516667)
    assert (p["fix_quality"], p["num_sats"], p["hdop"], p["alt_m"]) == (1, 8, 0.9, 545.4)
    assert p["speed_knots"] == 22.4 and p["valid"] == 1.0
    assert fix.meta["utc"] == "1994-03-23T12:35:19+00:00"
    assert fix.device_time == p["utc_epoch_s"] == 764426119.0
    assert fix.t_mono_ns >= t0
    assert force["baudrate"] == 9600


def test_nmea_bad_checksum_garbage_and_truncation_are_counted(pty: Pty) -> None:
    good = nmea(GGA) + nmea(RMC)
    bad_sum = nmea(GGA)[:-4] + b"00\r\n"
    no_sum = f"${GGA}\r\n".encode()
    truncated = nmea(GGA)[:30] + b"\r\n"
    with gps(pty.path) as drv:
        pty.write(b"\x00\xff garbage\r\n" + bad_sum + no_sum + truncated + b"x" * 600 + b"\n" + good)
        fix = drv.read(2)
        assert fix.payload["num_sats"] == 8  # type: ignore[index]
        assert drv.stats.bad_frames == 5


def test_gga_only_receiver_is_flushed(pty: Pty) -> None:
    with gps(pty.path) as drv:
        pty.write(nmea(GGA))
        t0 = time.monotonic()
        fix = drv.read(2)
    assert 0.4 < time.monotonic() - t0 < 1.5
    assert fix.meta["sentences"] == ["GGA"] and fix.device_time is None  # no RMC: no date


def test_nmea_port_missing_is_a_clear_open_error(tmp_path: Path) -> None:
    with pytest.raises(DriverOpenError, match=r"cannot open serial port .*plugged in"):
        gps(str(tmp_path / "ttyUSB9"))


def test_jsonl_schema_checks(pty: Pty) -> None:
    with lines(pty.path, extra_fields="keep") as drv:
        pty.write(
            b'{"temperature_c": 21.5, "humidity_pct": 40, "fw": 3}\n'
            b'{"temperature_c": 99}\n'  # above max
            b'{"humidity_pct": 40}\n'  # required missing
            b'{"temperature_c": "warm"}\n'  # not a number
            b"[1, 2]\n"  # not an object
            b'{"temperature_c": NaN}\n'  # not finite
            b'{"temperature_c": 20.0}\r\n'
        )
        first, second = drv.read(2), drv.read(2)
    assert first.payload == {"temperature_c": 21.5, "humidity_pct": 40.0, "fw": 3.0}
    assert second.payload == {"temperature_c": 20.0}
    assert first.meta["units"]["temperature_c"] == "degC"
    assert drv.stats.bad_frames == 5
    assert "not finite" in (drv.stats.last_error or "")


def test_kv_lines_with_sequence_numbers_count_gaps_and_duplicates(pty: Pty) -> None:
    with lines(pty.path, fmt="kv", seq_field="n") as drv:
        pty.write(
            b"n=1,temperature_c=20.5\nn=2,temperature_c=20.6\nn=2,temperature_c=20.6\n"
            b"n=5,temperature_c=20.9,humidity_pct=41\nbroken line\nn=6,temperature_c==1\n"
        )
        got = [drv.read(1) for _ in range(3)]
        with pytest.raises(DriverTimeout):
            drv.read(0.2)
    assert [s.device_time for s in got] == [1, 2, 5]
    assert got[2].payload == {"temperature_c": 20.9, "humidity_pct": 41.0}
    assert (drv.stats.duplicates, drv.stats.gaps, drv.stats.bad_frames) == (1, 2, 2)


def test_reject_extra_fields(pty: Pty) -> None:
    with lines(pty.path, extra_fields="reject") as drv:
        pty.write(b'{"temperature_c": 1, "x": 2}\n{"temperature_c": 2}\n')
        assert drv.read(1).payload == {"temperature_c": 2.0}
        assert drv.stats.bad_frames == 1


def test_vanished_port_reconnects_when_it_returns(tmp_path: Path) -> None:
    link, peer = tmp_path / "ttyS", tmp_path / "peer"

    def start_socat() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={link}", f"pty,raw,echo=0,link={peer}"],
            stderr=subprocess.DEVNULL,
        )
        for _ in range(250):
            if link.exists() and peer.exists():
                return proc
            time.sleep(0.02)
        raise RuntimeError("socat did not start")

    proc = start_socat()
    drv = lines(str(link), backoff_max_s=0.2, max_reconnects=50)
    with open(peer, "wb", buffering=0) as out:
        out.write(b'{"temperature_c": 1}\n')
        assert drv.read(2).payload == {"temperature_c": 1.0}
    proc.terminate()
    proc.wait()
    with pytest.raises(DriverTimeout):
        drv.read(0.5)  # port gone: reopen attempts fail, read still returns on time
    assert drv.stats.errors >= 1
    proc = start_socat()
    try:
        deadline = time.monotonic() + 5
        with open(peer, "wb", buffering=0) as out:
            while time.monotonic() < deadline:
                out.write(b'{"temperature_c": 2}\n')
                try:
                    assert drv.read(0.3).payload == {"temperature_c": 2.0}
                    break
                except DriverTimeout:
                    continue
        assert drv.stats.reconnects == 1
    finally:
        drv.close()
        proc.terminate()
        proc.wait()


def test_gives_up_after_max_reconnects(pty: Pty, tmp_path: Path) -> None:
    import os

    drv = lines(pty.path, max_reconnects=1, backoff_max_s=0.05)
    os.close(pty.master)
    os.close(pty.slave)
    pty.master = pty.slave = -1
    with pytest.raises(DriverIOError, match="gave up after 1"):
        for _ in range(20):
            try:
                drv.read(0.5)
            except DriverTimeout:
                continue
    drv.close()


# -- property tests: garbage of every kind is counted and skipped, never a crash -------------

GARBAGE = st.binary(min_size=0, max_size=300)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@PROPS
@given(GARBAGE)
def test_nmea_survives_garbage(garbage: bytes) -> None:
    with gps("loop://", baudrate=115200) as drv:
        drv._port.write(garbage + b"\r\n" + nmea(GGA) + nmea(RMC))  # type: ignore[union-attr]
        fix = drv.read(1)
    assert fix.payload["num_sats"] == 8  # type: ignore[index]


@PROPS
@given(GARBAGE, st.sampled_from(["jsonl", "kv"]))
def test_line_protocols_survive_garbage(garbage: bytes, fmt: str) -> None:
    good = b'{"temperature_c": 12.5}' if fmt == "jsonl" else b"temperature_c=12.5"
    with lines("loop://", fmt=fmt, baudrate=115200) as drv:
        drv._port.write(garbage + b"\n" + good + b"\n")  # type: ignore[union-attr]
        sample = drv.read(1)
        while sample.payload != {"temperature_c": 12.5}:  # garbage may itself be a valid line
            sample = drv.read(1)


@PROPS
@given(
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=8)), max_size=4
    )
)
def test_jsonl_hostile_objects_never_crash(obj: dict[str, object]) -> None:
    with lines("loop://", baudrate=115200) as drv:
        drv._port.write(json.dumps(obj).encode() + b'\n{"temperature_c": 1}\n')  # type: ignore[union-attr]
        sample = drv.read(1)
        while sample.payload != {"temperature_c": 1.0}:
            sample = drv.read(1)
