"""Modbus RTU against pymodbus's serial server on the far end of a socat pty pair, and against
a raw responder that answers with garbage (hypothesis)."""

from __future__ import annotations

import os
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import DriverTimeout, open_driver, parse_device_settings
from drivers.modbus import decode_register, plan_reads
from drivers.settings.serial import ModbusRegister

from .conftest import Pty

REGISTERS = [
    {"name": "temp_c", "address": 0, "kind": "int16", "scale": 0.1, "unit": "degC"},
    {"name": "offset", "address": 1, "kind": "int16"},
    {"name": "energy_wh", "address": 2, "kind": "uint32", "unit": "Wh"},
    {"name": "flow", "address": 4, "kind": "float32", "unit": "m3/h"},
    {"name": "mains_v", "address": 0, "table": "input", "scale": 0.1, "unit": "V"},
]


def meter(port: str, **kw: object):  # type: ignore[no-untyped-def]
    # ptys refuse parity bits on this kernel (EINVAL), so the line runs 8N1 here.
    spec = {
        "name": "meter",
        "type": "modbus-rtu",
        "port": port,
        "baudrate": 19200,
        "parity": "N",
        "poll_hz": 10,
        "registers": REGISTERS,
        "exclusive": False,
        **kw,
    }
    return open_driver(parse_device_settings(spec))


def test_register_map_against_pymodbus_server(modbus_slave: str) -> None:
    with meter(modbus_slave) as drv:
        samples = [drv.read(2) for _ in range(3)]
        force = drv.settings_in_force()
    assert samples[0].payload == pytest.approx(
        {"temp_c": 21.5, "offset": -5.0, "energy_wh": 123456.0, "flow": 3.5, "mains_v": 401.1}
    )
    assert [s.device_time for s in samples] == [0, 1, 2]
    assert samples[0].meta["units"]["energy_wh"] == "Wh"
    assert force["requests"] == [
        {"table": "holding", "address": 0, "count": 6},
        {"table": "input", "address": 0, "count": 1},
    ]


def test_silent_unit_times_out_and_is_counted(modbus_slave: str) -> None:
    with meter(modbus_slave, unit_id=9, retries=1, response_timeout_s=0.1, poll_hz=5) as drv:
        with pytest.raises(DriverTimeout):
            drv.read(0.6)
        assert drv.stats.errors >= 1
        assert "did not answer" in (drv.stats.last_error or "")
        assert drv.stats.reconnects == 0  # a silent unit is not a broken port


def test_refused_address_is_a_bad_frame(modbus_slave: str) -> None:
    regs = [{"name": "far", "address": 900}]
    with meter(modbus_slave, registers=regs) as drv:
        with pytest.raises(DriverTimeout):
            drv.read(0.5)
        assert drv.stats.bad_frames >= 1


def test_plan_and_decode() -> None:
    regs = [
        ModbusRegister(name=f"r{i}", address=a, kind=k)
        for i, (a, k) in enumerate([(10, "uint16"), (11, "float32"), (200, "int32"), (13, "uint16")])
    ]
    blocks = plan_reads(regs)
    assert [(b.address, b.count) for b in blocks] == [(10, 4), (200, 2)]
    little = ModbusRegister(name="x", address=0, kind="float32", word_order="little", scale=2)
    words = list(struct.unpack(">HH", struct.pack(">f", 1.25)))
    assert decode_register(little, words[::-1]) == 2.5


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


class Responder(threading.Thread):
    """A raw RTU unit on the pty master: answers the first request with ``garbage``, later ones
    with the well-formed answer to a 1-register holding read (value 777)."""

    def __init__(self, pty: Pty, garbage: bytes) -> None:
        super().__init__(daemon=True)
        self.pty, self.garbage = pty, garbage
        self.stop = threading.Event()

    def run(self) -> None:
        first = True
        while not self.stop.is_set():
            request = self.pty.read(256, timeout=0.05)
            if not request:
                continue
            reply = request[:2] + b"\x02" + struct.pack(">H", 777)
            reply = self.garbage if first else reply + crc16(reply)
            first = False
            try:
                os.write(self.pty.master, reply)
            except OSError:
                return


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=1, max_size=40))
def test_garbage_replies_are_counted_never_a_crash(pty: Pty, garbage: bytes) -> None:
    regs = [{"name": "v", "address": 0}]
    responder = Responder(pty, garbage)
    responder.start()
    try:
        with meter(pty.path, registers=regs, retries=0, response_timeout_s=0.1, poll_hz=20) as drv:
            sample = drv.read(3)
            assert sample.payload == {"v": 777.0}
            assert drv.stats.errors + drv.stats.bad_frames >= 1
    finally:
        responder.stop.set()
        responder.join(1)
