"""``nmea``: NMEA 0183 GPS receivers through pynmea2, one sample per fix epoch.

A receiver sends several sentences per fix (GGA: position, quality, satellites, HDOP; RMC: date,
validity, speed, course), each with the same UTC time of day. They are merged per epoch and the
sample is emitted as soon as both GGA and RMC for it arrived (or when the next epoch starts, or 0.5 s
after its first sentence). Only
RMC carries the date, so GGA-only epochs take the last RMC date, rolling over at midnight.
Checksums are required: a sentence without a valid one is a bad frame, as is any garbage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from typing import Any

import pynmea2  # type: ignore[import-untyped,unused-ignore]

from drivers.base import RawSample
from drivers.serial_link import SerialDriver
from drivers.settings.serial import NmeaSettings

__all__ = ["NmeaGps"]

_EPOCH_WAIT_S = 0.5  # a fix missing GGA or RMC is emitted this long after its first sentence

FIX_QUALITY = {
    0: "invalid",
    1: "gps",
    2: "dgps",
    3: "pps",
    4: "rtk",
    5: "float-rtk",
    6: "estimated",
    7: "manual",
    8: "simulation",
}


class _Epoch:
    """Fields gathered from the sentences of one UTC time of day."""

    def __init__(self, tod: dt.time, t_mono_ns: int) -> None:
        self.tod = tod
        self.t_mono_ns = t_mono_ns
        self.values: dict[str, float] = {}
        self.date: dt.date | None = None
        self.kinds: list[str] = []
        self.talker = ""


def _num(value: Any) -> float | None:
    """A float from a pynmea2 field; None for empty or malformed."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class NmeaGps(SerialDriver[NmeaSettings]):
    """GPS fixes: lat/lon (decimal degrees), altitude, fix quality, satellites, HDOP, speed, course.

    ``device_time`` is the fix's UTC time as POSIX seconds (None until a date is known);
    ``t_mono_ns`` is when the epoch's first sentence arrived.
    """

    modality = "sensor"

    def __init__(self, settings: NmeaSettings) -> None:
        super().__init__(settings)
        self._max_line = settings.max_line_bytes
        self._epoch: _Epoch | None = None
        self._ready: deque[RawSample] = deque()
        self._last_date: tuple[dt.date, dt.time] | None = None
        self._count_epochs = 0

    def _open(self) -> None:
        super()._open()
        self._epoch = None
        self._ready.clear()

    def _read_raw(self, timeout: float) -> RawSample | None:
        deadline = time.monotonic() + timeout
        while not self._ready:
            until = deadline
            if self._epoch is not None:  # a receiver sending GGA only: do not wait for RMC forever
                until = min(deadline, self._epoch.t_mono_ns / 1e9 + _EPOCH_WAIT_S)
            got = self._next_line(until)
            if got is not None:
                self._handle(*got)
            elif self._epoch is not None and time.monotonic() >= until:
                self._flush()
            elif time.monotonic() >= deadline:
                return None
        return self._ready.popleft()

    def _handle(self, line: bytes, t_mono_ns: int) -> None:
        msg = self._parse(line)
        if msg is None:
            return
        kind = msg.sentence_type
        tod = getattr(msg, "timestamp", None)
        if kind not in ("GGA", "RMC") or not isinstance(tod, dt.time):
            return  # other sentences (GSV, GSA, VTG, TXT ...) are valid but not used
        epoch = self._epoch
        if epoch is not None and epoch.tod != tod:
            self._flush()
            epoch = None
        if epoch is None:
            epoch = self._epoch = _Epoch(tod, t_mono_ns)
        try:
            self._merge(epoch, msg)
        except (ValueError, TypeError, AttributeError) as exc:
            self._count("bad_frames", why=f"{self.name}: malformed {kind} fields: {exc}")
            return
        if {"GGA", "RMC"} <= set(epoch.kinds):
            self._flush()

    def _parse(self, line: bytes) -> pynmea2.NMEASentence | None:
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            self._count("bad_frames", why=f"{self.name}: non-ASCII bytes in NMEA line")
            return None
        if not text:
            return None
        if not text.startswith(("$", "!")):
            self._count("bad_frames", why=f"{self.name}: not an NMEA sentence: {text[:40]!r}")
            return None
        try:
            return pynmea2.parse(text, check=True)
        except Exception as exc:
            self._count("bad_frames", why=f"{self.name}: bad NMEA sentence {text[:40]!r}: {exc}")
            return None

    def _merge(self, epoch: _Epoch, msg: pynmea2.NMEASentence) -> None:
        v = epoch.values
        kind = msg.sentence_type
        new: dict[str, float | None] = {}
        if kind == "GGA":
            quality = int(msg.gps_qual or 0)
            new = {
                "fix_quality": float(quality),
                "num_sats": _num(msg.num_sats),
                "hdop": _num(msg.horizontal_dil),
                "alt_m": _num(msg.altitude),
            }
            if quality > 0:
                new["lat"], new["lon"] = float(msg.latitude), float(msg.longitude)
        else:
            valid = msg.status == "A"
            new = {
                "valid": 1.0 if valid else 0.0,
                "speed_knots": _num(msg.spd_over_grnd),
                "course_deg": _num(msg.true_course),
            }
            if valid:
                new["lat"], new["lon"] = float(msg.latitude), float(msg.longitude)
            if isinstance(msg.datestamp, dt.date):
                epoch.date = msg.datestamp
                self._last_date = (msg.datestamp, epoch.tod)
        v.update({k: x for k, x in new.items() if x is not None})
        epoch.kinds.append(kind)
        epoch.talker = msg.talker

    def _date_for(self, epoch: _Epoch) -> dt.date | None:
        if epoch.date is not None:
            return epoch.date
        if self._last_date is None:
            return None
        date, tod = self._last_date
        if epoch.tod < tod and (tod.hour - epoch.tod.hour) >= 12:
            return date + dt.timedelta(days=1)  # the day rolled over since the last RMC
        return date

    def _flush(self) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        date = self._date_for(epoch)
        meta: dict[str, Any] = {
            "sentences": list(epoch.kinds),
            "talker": epoch.talker,
            "fix": FIX_QUALITY.get(int(epoch.values.get("fix_quality", -1)), "unknown"),
            "units": {"lat": "deg", "lon": "deg", "alt_m": "m", "speed_knots": "kn", "course_deg": "deg"},
        }
        device_time: float | None = None
        if date is not None:
            tod = epoch.tod.replace(tzinfo=epoch.tod.tzinfo or dt.UTC)
            utc = dt.datetime.combine(date, tod)
            device_time = utc.timestamp()
            meta["utc"] = utc.isoformat()
            epoch.values["utc_epoch_s"] = device_time
        self._ready.append(
            RawSample(
                payload=epoch.values,
                t_mono_ns=epoch.t_mono_ns,
                device_time=device_time,
                meta=meta,
            )
        )
        self._count_epochs += 1
