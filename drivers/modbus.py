"""``modbus-rtu``: Modbus RTU sensors polled through pymodbus, decoded by a register map.

Registers are grouped into as few requests as possible (contiguous runs of the same table, at
most 125 registers each). A unit that does not answer after the configured retries is counted as
an error and the poll is skipped (``read()`` then times out): on a shared RS-485 bus a silent unit
is a fact to record, not a reason to reopen the port. A port that vanishes (USB adapter unplugged)
is an I/O failure and goes through the base class's reconnect.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException

from drivers.base import Driver, RawSample
from drivers.errors import DriverIOError, DriverOpenError
from drivers.pacing import Pacer
from drivers.serial_link import open_serial_port
from drivers.settings.serial import ModbusRegister, ModbusRtuSettings

__all__ = ["ModbusRtuSensor", "decode_register", "plan_reads"]

_MAX_REGS = 125  # Modbus limit for one read request
_WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}
_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: ``count`` registers of ``table`` from ``address``, and what they hold."""

    table: str
    address: int
    count: int
    registers: tuple[ModbusRegister, ...]


def plan_reads(registers: list[ModbusRegister]) -> list[ReadBlock]:
    """Group a register map into contiguous requests (gaps are not bridged)."""
    blocks: list[ReadBlock] = []
    for table in ("holding", "input"):
        regs = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        run: list[ModbusRegister] = []
        start = end = 0
        for reg in regs:
            width = _WIDTH[reg.kind]
            if run and reg.address <= end and reg.address + width - start <= _MAX_REGS:
                run.append(reg)
                end = max(end, reg.address + width)
                continue
            if run:
                blocks.append(ReadBlock(table, start, end - start, tuple(run)))
            run, start, end = [reg], reg.address, reg.address + width
        if run:
            blocks.append(ReadBlock(table, start, end - start, tuple(run)))
    return blocks


def decode_register(reg: ModbusRegister, words: list[int]) -> float:
    """Decode one value from its 16-bit words, then apply scale and offset."""
    if reg.word_order == "little" and len(words) == 2:
        words = [words[1], words[0]]
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    value = struct.unpack(_STRUCT[reg.kind], raw)[0]
    return float(value) * reg.scale + reg.offset


class ModbusRtuSensor(Driver[ModbusRtuSettings]):
    """Polls the register map at ``poll_hz``; ``device_time`` is the poll number."""

    modality = "sensor"

    def __init__(self, settings: ModbusRtuSettings) -> None:
        super().__init__(settings)
        self._client: ModbusSerialClient | None = None
        self._blocks = plan_reads(settings.registers)
        self._pacer: Pacer | None = None
        self._poll = 0
        self._units = {r.name: r.unit for r in settings.registers}
        # pymodbus logs every missed answer at ERROR; we count them in stats instead.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def describe(self) -> str:
        s = self.settings
        return f"Modbus RTU unit {s.unit_id} on {s.port}"

    def _open(self) -> None:
        s = self.settings
        # pymodbus only says "connect failed": open the port once ourselves for the real reason.
        open_serial_port(s).close()
        client = ModbusSerialClient(
            s.port,
            baudrate=s.baudrate,
            bytesize=s.bytesize,
            parity=s.parity,
            stopbits=int(s.stopbits),
            timeout=s.response_timeout_s,
            retries=s.retries,
            reconnect_delay=0,
        )
        if not client.connect():
            client.close()  # type: ignore[no-untyped-call]
            raise DriverOpenError(
                f"{s.name}: cannot open serial port {s.port!r} for Modbus RTU "
                "(is the adapter plugged in, is the user in 'dialout'?)"
            )
        self._client = client
        if self._pacer is None:
            self._pacer = Pacer(s.poll_hz)

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]

    def _read_block(self, client: ModbusSerialClient, block: ReadBlock) -> list[int] | None:
        unit = self.settings.unit_id
        try:
            if block.table == "holding":
                rsp = client.read_holding_registers(block.address, count=block.count, device_id=unit)
            else:
                rsp = client.read_input_registers(block.address, count=block.count, device_id=unit)
        except ConnectionException as exc:
            raise DriverIOError(f"Modbus port lost: {exc}") from exc
        except ModbusException as exc:
            self._count("errors", why=f"{self.name}: unit {unit} did not answer: {exc}")
            return None
        if rsp.isError():
            self._count(
                "bad_frames",
                why=f"{self.name}: unit {unit} refused {block.table} {block.address}+{block.count}: {rsp}",
            )
            return None
        regs = list(rsp.registers)
        if len(regs) < block.count:
            self._count("bad_frames", why=f"{self.name}: short answer ({len(regs)} registers)")
            return None
        return regs

    def _read_raw(self, timeout: float) -> RawSample | None:
        client, pacer = self._client, self._pacer
        if client is None or pacer is None:
            raise DriverIOError("Modbus client is not open")
        index, skipped = pacer.next_index(self._poll)
        if not pacer.wait(index, timeout):
            return None
        self._poll = index + 1
        t_mono = time.monotonic_ns()
        values: dict[str, float] = {}
        for block in self._blocks:
            words = self._read_block(client, block)
            if words is None:
                if not client.connected:
                    raise DriverIOError("Modbus serial port closed")
                return None
            for reg in block.registers:
                off = reg.address - block.address
                values[reg.name] = decode_register(reg, words[off : off + _WIDTH[reg.kind]])
        return RawSample(
            payload=values,
            t_mono_ns=t_mono,
            device_time=index,
            skipped=skipped,
            meta={"units": self._units, "poll": index},
        )

    def _settings_in_force(self) -> dict[str, Any]:
        s = self.settings
        return {
            "units": dict(self._units),
            "requests": [{"table": b.table, "address": b.address, "count": b.count} for b in self._blocks],
            "line": f"{s.baudrate} {s.bytesize}{s.parity}{s.stopbits:g}",
        }
