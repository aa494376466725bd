"""The environment a sample was captured in: sensor values near the capture time, time of day, weather.

Devices sync their sensors as ``capture`` records of ``readings`` batches (rows
``[seq, t_mono_ns, t_utc_ns, name, value]``). A sample's environment value for a field is the
reading of that field on the *same device* nearest to the capture's start, if one lies within
``NEAR_S``; failing that, the value in the session's environment snapshot (taken at session start
and end from the live readings). Values are plain numbers keyed by the sensor's field name
(``temperature_c``, ``humidity_pct``, ``light_lux``, ...), so any sensor works without a mapping.

Time of day is the capture's local clock hour — local by the session's ``meta.utc_offset_min``
(minutes east of UTC, given by the operator) or else UTC, which is recorded — bucketed as night
(22–06), morning (06–12), afternoon (12–18) and evening (18–22). A weather tag is what the
operator wrote in the session's (or capture's) ``meta.weather``. Everything here came from a
device, so values that are not finite numbers or short strings are ignored, never trusted.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from central.datasets.errors import DatasetError

NEAR_S = 300.0  # a reading further than this from the capture does not describe its environment
TIMES_OF_DAY = ("night", "morning", "afternoon", "evening")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
}
CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|>|<|==|=)\s*(\S+)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _tag(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and TAG.match(value.strip()) else None


def time_of_day(hour: int) -> str:
    if hour < 6 or hour >= 22:
        return "night"
    return "morning" if hour < 12 else "afternoon" if hour < 18 else "evening"


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``--where FIELD OP NUMBER`` test on an environment value."""

    field: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = CONDITION.match(text)
        number = None
        if m:
            try:
                number = float(m.group(3))
            except ValueError:
                number = None
        if m is None or number is None or not math.isfinite(number):
            raise DatasetError(
                f"--where {text!r}: write FIELD OP NUMBER with OP one of > >= < <= = !=, e.g. temperature_c>30"
            )
        op = "=" if m.group(2) == "==" else m.group(2)
        return cls(m.group(1), op, number)

    def holds(self, env: dict[str, Any]) -> bool:
        """True when the sample has this value and it passes; a sample without it never matches."""
        value = _number(env.get(self.field))
        return value is not None and bool(OPS[self.op](value, self.value))

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value:g}"


class ReadingIndex:
    """Every sensor reading of the store, per device and field, sorted by UTC time."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str], list[int]] = {}
        self._values: dict[tuple[str, str], list[float]] = {}

    @classmethod
    def build(cls, captures: Sequence[tuple[str, dict[str, Any]]]) -> ReadingIndex:
        """From (device, capture body) pairs; bodies without readings are passed over."""
        rows: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for device, body in captures:
            readings = body.get("readings")
            if not isinstance(readings, list):
                continue
            for row in readings:
                if not isinstance(row, list) or len(row) != 5:
                    continue
                t, name, value = row[2], row[3], _number(row[4])
                if isinstance(t, int) and isinstance(name, str) and FIELD.match(name) and value is not None:
                    rows[(device, name)].append((t, value))
        index = cls()
        for key, items in rows.items():
            items.sort()
            index._times[key] = [t for t, _ in items]
            index._values[key] = [v for _, v in items]
        return index

    def fields(self, device: str) -> list[str]:
        return sorted(name for d, name in self._times if d == device)

    def nearest(self, device: str, name: str, t_ns: int) -> float | None:
        times = self._times.get((device, name))
        if not times:
            return None
        i = bisect.bisect_left(times, t_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t_ns))
        if abs(times[best] - t_ns) > NEAR_S * 1e9:
            return None
        return self._values[(device, name)][best]


def _session_values(session: dict[str, Any] | None) -> dict[str, float]:
    """Field values in the session's environment snapshots (start first, end where start lacks one)."""
    out: dict[str, float] = {}
    for part in ("environment", "environment_end"):
        snap = (session or {}).get(part)
        if not isinstance(snap, dict):
            continue
        for fields in snap.values():
            if not isinstance(fields, dict):
                continue
            for name, entry in fields.items():
                value = _number(entry.get("value")) if isinstance(entry, dict) else None
                if isinstance(name, str) and FIELD.match(name) and value is not None and not entry.get("stale"):
                    out.setdefault(name, value)
    return out


def _utc_offset(session: dict[str, Any] | None) -> int | None:
    meta = (session or {}).get("meta")
    offset = meta.get("utc_offset_min") if isinstance(meta, dict) else None
    if isinstance(offset, int) and not isinstance(offset, bool) and -14 * 60 <= offset <= 14 * 60:
        return offset
    return None


def describe(
    index: ReadingIndex,
    device: str,
    t_utc_ns: int | None,
    session: dict[str, Any] | None,
    capture_meta: dict[str, Any],
) -> dict[str, Any]:
    """A sample's environment: sensor fields, ``time_of_day`` (+ ``clock``: local or UTC), ``weather``."""
    env: dict[str, Any] = {}
    if t_utc_ns is not None:
        for name in index.fields(device):
            value = index.nearest(device, name, t_utc_ns)
            if value is not None:
                env[name] = round(value, 4)
    for name, value in _session_values(session).items():
        env.setdefault(name, round(value, 4))
    if t_utc_ns is not None:
        offset = _utc_offset(session)
        try:
            moment = datetime.fromtimestamp(t_utc_ns / 1e9, UTC) + timedelta(minutes=offset or 0)
        except (OverflowError, OSError, ValueError):
            moment = None
        if moment is not None:
            env["time_of_day"] = time_of_day(moment.hour)
            env["clock"] = "UTC" if offset is None else f"UTC{offset / 60:+g}h"
    meta = (session or {}).get("meta")
    weather = _tag(meta.get("weather")) if isinstance(meta, dict) else None
    weather = weather or _tag(capture_meta.get("weather"))
    if weather:
        env["weather"] = weather
    return env


def _span(value: float, width: float, unit: str) -> str:
    low = math.floor(value / width) * width
    return f"{low:g}–{low + width:g} {unit}"


def _decade(value: float, unit: str) -> str:
    if value < 1:
        return f"<1 {unit}"
    low = 10 ** math.floor(math.log10(value))
    return f"{low:g}–{low * 10:g} {unit}"


def facets(env: dict[str, Any]) -> dict[str, str]:
    """The environment as balance groups for the dataset card: time of day, weather, and the
    temperature (5 °C), humidity (10 %) and light (decades of lux) a sample was captured in."""
    out: dict[str, str] = {}
    for name in ("time_of_day", "weather"):
        if isinstance(env.get(name), str):
            out[name] = env[name]
    temperature, humidity = _number(env.get("temperature_c")), _number(env.get("humidity_pct"))
    light = _number(env.get("light_lux"))
    if light is None:
        light = _number(env.get("illuminance_lux"))
    if temperature is not None:
        out["temperature"] = _span(temperature, 5.0, "°C")
    if humidity is not None:
        out["humidity"] = _span(humidity, 10.0, "%")
    if light is not None:
        out["light"] = _decade(light, "lx")
    return out
