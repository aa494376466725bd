"""Settings of the serial sensor drivers: NMEA 0183, Modbus RTU, line protocols."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.settings.common import SerialPortSettings, StrictModel

__all__ = [
    "LineField",
    "LineProtocolSettings",
    "ModbusRegister",
    "ModbusRtuSettings",
    "NmeaSettings",
]

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class NmeaSettings(SerialPortSettings):
    """An NMEA 0183 GPS receiver; one sample per fix epoch (GGA + RMC of the same UTC time)."""

    type: Literal["nmea"] = Field(description="Driver name.")
    baudrate: int = Field(default=9600, ge=50, le=4_000_000, description="Line speed (NMEA 0183: 4800; most: 9600).")
    max_line_bytes: int = Field(
        default=256, ge=82, le=4096, description="Longer lines are garbage (NMEA's limit is 82)."
    )


class ModbusRegister(StrictModel):
    """One value in a Modbus register map."""

    name: str = Field(pattern=_IDENT, max_length=64, description="Field name in the payload.")
    address: int = Field(ge=0, le=65535, description="Register address (0-based, as on the wire).")
    table: Literal["holding", "input"] = Field(
        default="holding", description="Holding (function 3) or input (function 4) registers."
    )
    kind: Literal["uint16", "int16", "uint32", "int32", "float32"] = Field(
        default="uint16", description="How the register(s) are decoded."
    )
    word_order: Literal["big", "little"] = Field(
        default="big", description="Word order of 32-bit values (big: high word first)."
    )
    scale: float = Field(default=1.0, description="Multiplier applied to the decoded value.")
    offset: float = Field(default=0.0, description="Added after scaling.")
    unit: str = Field(default="", max_length=32, description="Unit of the scaled value.")


class ModbusRtuSettings(SerialPortSettings):
    """A Modbus RTU slave polled at a fixed rate; contiguous registers are read in one request."""

    type: Literal["modbus-rtu"] = Field(description="Driver name.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(default="E", description="Parity (the Modbus default is even).")
    unit_id: int = Field(default=1, ge=1, le=247, description="Slave address of the device.")
    poll_hz: float = Field(default=1.0, gt=0, le=100, description="Polls per second.")
    response_timeout_s: float = Field(default=0.5, gt=0, le=30, description="Longest wait for one response.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries per request on no answer.")
    registers: list[ModbusRegister] = Field(min_length=1, description="The register map.")

    @model_validator(mode="after")
    def _unique_names(self) -> ModbusRtuSettings:
        names = [r.name for r in self.registers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"register names must be unique; repeated: {', '.join(dupes)}")
        return self


class LineField(StrictModel):
    """One expected field of a line protocol, with its schema check."""

    name: str = Field(pattern=_IDENT, max_length=64, description="Key in the line.")
    unit: str = Field(default="", max_length=32, description="Unit of the value.")
    required: bool = Field(default=True, description="A line without it is a bad frame.")
    min: float | None = Field(default=None, description="Values below are a bad frame.")
    max: float | None = Field(default=None, description="Values above are a bad frame.")


class LineProtocolSettings(SerialPortSettings):
    """Text sensors that print one reading per line: JSON objects or key=value pairs."""

    type: Literal["serial-lines"] = Field(description="Driver name.")
    format: Literal["jsonl", "kv"] = Field(
        description="jsonl: one JSON object per line; kv: 'k=v' pairs joined by the separator."
    )
    separator: str = Field(default=",", min_length=1, max_length=1, description="Pair separator of the kv format.")
    fields: list[LineField] = Field(min_length=1, description="The schema every line must meet.")
    extra_fields: Literal["ignore", "keep", "reject"] = Field(
        default="ignore",
        description="Numeric fields not in the schema: dropped, kept, or a bad frame.",
    )
    seq_field: str | None = Field(
        default=None,
        pattern=_IDENT,
        description="Field holding the sensor's own sequence number (device time, gap counting).",
    )
    max_line_bytes: int = Field(default=1024, ge=16, le=65536, description="Longer lines are discarded as garbage.")
