"""``serial-lines``: text sensors printing one reading per line, as JSON objects or ``k=v`` pairs.

Every line is checked against the configured schema (required fields present, numeric, within
bounds); a line that fails is a bad frame with the reason in ``last_error``, and reading goes on.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from drivers.base import RawSample
from drivers.serial_link import SerialDriver
from drivers.settings.serial import LineProtocolSettings

__all__ = ["LineProtocolSensor", "SchemaError", "parse_kv", "parse_line"]


class SchemaError(ValueError):
    """A line that does not meet the configured schema."""


def parse_kv(text: str, separator: str) -> dict[str, Any]:
    """``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}``; SchemaError on a malformed pair."""
    out: dict[str, Any] = {}
    for part in text.split(separator):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SchemaError(f"malformed pair {part.strip()[:32]!r} (expected key=value)")
        if key in out:
            raise SchemaError(f"key {key!r} repeated")
        out[key] = value.strip()
    return out


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise SchemaError(f"{key}: boolean where a number is expected")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SchemaError(f"{key}: {str(value)[:32]!r} is not a number") from None
    if not math.isfinite(number):
        raise SchemaError(f"{key}: {value!r} is not finite")
    return number


def parse_line(settings: LineProtocolSettings, text: str) -> dict[str, float]:
    """Decode and schema-check one line; raises ``SchemaError`` saying what is wrong."""
    if settings.format == "jsonl":
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise SchemaError(f"JSON {type(raw).__name__} where an object is expected")
    else:
        raw = parse_kv(text, settings.separator)
    values: dict[str, float] = {}
    for spec in settings.fields:
        if spec.name not in raw:
            if spec.required:
                raise SchemaError(f"required field {spec.name!r} missing")
            continue
        number = _number(spec.name, raw[spec.name])
        if spec.min is not None and number < spec.min:
            raise SchemaError(f"{spec.name}={number:g} below minimum {spec.min:g}")
        if spec.max is not None and number > spec.max:
            raise SchemaError(f"{spec.name}={number:g} above maximum {spec.max:g}")
        values[spec.name] = number
    known = {f.name for f in settings.fields} | {settings.seq_field}
    extra = [k for k in raw if k not in known]
    if extra and settings.extra_fields == "reject":
        raise SchemaError(f"unexpected field(s): {', '.join(sorted(extra))[:64]}")
    if extra and settings.extra_fields == "keep":
        for key in extra:
            values[key] = _number(key, raw[key])
    if settings.seq_field is not None:
        if settings.seq_field not in raw:
            raise SchemaError(f"sequence field {settings.seq_field!r} missing")
        seq = _number(settings.seq_field, raw[settings.seq_field])
        if seq != int(seq) or seq < 0:
            raise SchemaError(f"sequence {seq:g} is not a non-negative integer")
        values[settings.seq_field] = seq
    return values


class LineProtocolSensor(SerialDriver[LineProtocolSettings]):
    """One sample per valid line; ``device_time`` is the line's sequence field or a line counter.

    With ``seq_field`` set, repeated sequence numbers count as duplicates and jumps as gaps.
    """

    modality = "sensor"

    def __init__(self, settings: LineProtocolSettings) -> None:
        super().__init__(settings)
        self._max_line = settings.max_line_bytes
        self._lines = 0
        self._units = {f.name: f.unit for f in settings.fields}

    def _read_raw(self, timeout: float) -> RawSample | None:
        deadline = time.monotonic() + timeout
        while True:
            got = self._next_line(deadline)
            if got is None:
                return None
            line, t_mono = got
            try:
                text = line.decode("utf-8").strip()
                if not text:
                    continue
                values = parse_line(self.settings, text)
            except (UnicodeDecodeError, SchemaError) as exc:
                self._count("bad_frames", why=f"{self.name}: bad line: {exc}")
                continue
            seq_field = self.settings.seq_field
            seq = int(values.pop(seq_field)) if seq_field is not None else None
            device_time = seq if seq is not None else self._lines
            self._lines += 1
            return RawSample(
                payload=values,
                t_mono_ns=t_mono,
                device_time=device_time,
                device_seq=seq,
                meta={"units": self._units},
            )

    def _settings_in_force(self) -> dict[str, Any]:
        return {**super()._settings_in_force(), "units": dict(self._units)}
