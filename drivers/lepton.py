"""FLIR Lepton telemetry lines in Y16 frames (PureThermal boards, or replays of their frames).

With telemetry enabled a Lepton sends three extra 80-word video lines (rows A, B, C) with every
frame. A PureThermal board in Y16 mode packs them after the image: a Lepton 3.x frame becomes
160x122 (row 120 = lines A|B, row 121 = line C and padding), a Lepton 2.x frame 80x63. Left in
place those rows look like pixels (a bright stripe at the bottom) and the camera's state is lost,
so the drivers strip them and put the useful fields into each frame's metadata.

Layout of line A (FLIR Lepton Engineering Datasheet, "Telemetry Data Content", 16-bit words;
32-bit values are two words, least significant word first), the fields kept here:

====== =====================================================================================
word   field
====== =====================================================================================
0      telemetry revision
1-2    time counter: ms since the camera booted
3-4    status bits: 3 FFC desired, 4-5 FFC state (00 never commanded, 01 imminent, 10 in
       progress, 11 complete), 12 AGC enabled, 15 shutter lockout, 20 over-temperature
       shutdown imminent
20-21  frame counter
22     frame mean
24     FPA (sensor die) temperature, kelvin x 100
26     housing temperature, kelvin x 100
29     FPA temperature at the last FFC, kelvin x 100
30-31  time counter at the last FFC, ms
====== =====================================================================================

No Lepton was available while writing this: the layout was taken from the datasheet and checked
against independent open-source parsers (leptonic, Cacophony's Lepton 3 reader); the tests use
16-bit PNG frames with telemetry rows crafted from the datasheet offsets. Where the board puts
the lines (footer or header) is the camera's ``SYS telemetry location`` setting; PureThermal
firmware uses the footer, which is what ``auto`` assumes for the 160x122 and 80x63 shapes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = [
    "FFC_STATES",
    "TelemetryLocation",
    "parse_line_a",
    "split_telemetry",
    "telemetry_location",
    "telemetry_rows",
]

TelemetryLocation = Literal["footer", "header"]
FFC_STATES = ("never", "imminent", "in_progress", "complete")
_TELEMETRY_ROWS = {160: 2, 80: 3}  # three lines (A, B, C) -> rows
_AUTO_SHAPES = {(122, 160), (63, 80)}  # (height, width) of a Lepton 3.x / 2.x frame with telemetry
_FPA_RANGE_CK = (23315, 37315)  # -40..100 degC: beyond the Lepton's rating, so not telemetry


def telemetry_rows(width: int) -> int:
    """How many image rows the three telemetry lines take in a frame of this width."""
    return _TELEMETRY_ROWS[width]


def telemetry_location(setting: str, width: int, height: int) -> TelemetryLocation | None:
    """Where the telemetry rows are in frames of this size under ``setting``; None: no telemetry.

    Raises ``ValueError`` when ``setting`` asks for telemetry in a frame no Lepton produces.
    """
    if setting == "off":
        return None
    if setting == "auto":
        return "footer" if (height, width) in _AUTO_SHAPES else None
    rows = _TELEMETRY_ROWS.get(width)
    if rows is None or height <= rows:
        raise ValueError(
            f"lepton_telemetry={setting!r} but frames are {width}x{height}; Lepton frames with "
            "telemetry are 160x122 (Lepton 3.x) or 80x63 (Lepton 2.x)"
        )
    if setting not in ("footer", "header"):
        raise ValueError(f"lepton_telemetry must be auto, footer, header or off, not {setting!r}")
    return "footer" if setting == "footer" else "header"


def split_telemetry(
    frame: np.ndarray[Any, np.dtype[np.uint16]], location: TelemetryLocation
) -> tuple[np.ndarray[Any, np.dtype[np.uint16]], np.ndarray[Any, np.dtype[np.uint16]]]:
    """(image without the telemetry rows, line A as 80 words)."""
    height, width = frame.shape
    rows = _TELEMETRY_ROWS[width]
    if location == "footer":
        image, telemetry = frame[: height - rows], frame[height - rows :]
    else:
        image, telemetry = frame[rows:], frame[:rows]
    line_a = telemetry.reshape(-1)[:80]
    return np.ascontiguousarray(image), line_a


def _u32(words: np.ndarray[Any, np.dtype[np.uint16]], at: int) -> int:
    return int(words[at]) | int(words[at + 1]) << 16


def _celsius(centikelvin: int) -> float:
    return round((centikelvin - 27315) / 100, 2)


def parse_line_a(words: np.ndarray[Any, np.dtype[np.uint16]]) -> dict[str, Any]:
    """The kept fields of telemetry line A as flat, scalar frame metadata (see the module doc)."""
    status = _u32(words, 3)
    uptime = _u32(words, 1)
    last_ffc = _u32(words, 30)
    ffc_state = FFC_STATES[status >> 4 & 0b11]
    fpa = int(words[24])
    return {
        "telemetry_revision": int(words[0]),
        "lepton_uptime_ms": uptime,
        "lepton_frame_counter": _u32(words, 20),
        "lepton_frame_mean": int(words[22]),
        "ffc_state": ffc_state,
        "ffc_desired": bool(status >> 3 & 1),
        # the time counter is 32-bit ms: it wraps after 49.7 days
        "time_since_ffc_ms": None if ffc_state == "never" else (uptime - last_ffc) % (1 << 32),
        "fpa_temp_c": _celsius(fpa),
        "fpa_temp_at_ffc_c": _celsius(int(words[29])),
        "housing_temp_c": _celsius(int(words[26])),
        "agc_enabled": bool(status >> 12 & 1),
        "shutter_lockout": bool(status >> 15 & 1),
        "overtemp_shutdown_imminent": bool(status >> 20 & 1),
        "telemetry_plausible": _FPA_RANGE_CK[0] <= fpa <= _FPA_RANGE_CK[1],
    }
