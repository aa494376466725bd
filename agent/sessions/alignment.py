"""The alignment index of a session: which items of different streams belong together in time.

Every sample is stamped on one host clock (CLOCK_MONOTONIC), so aligning streams is matching
stamps — but only if each stamp is trustworthy, which is why the index also *measures* the
device clocks: for each stream with its own time base (audio sample index, frame counter) the
device-time→monotonic relation is fitted by least squares and its rate error reported in ppm,
with an uncertainty; an estimate whose interval includes zero is stored as not significant.

- frame↔frame (visible↔IR): for each frame of the slower stream, the nearest frame of the other
  within a tolerance (default half the slower stream's period); the signed offset is kept;
- paired frames (``pair_with``, see ``agent.capture.pairing``): the pair the recorder kept is one
  sample: a ``frame_pair`` row per leader frame names its partner by the recorded pair id, with
  the offset of the two matching times and the skew measured at capture; no nearest-frame search;
- frame↔audio: the audio file and sample index that were being captured at each frame's
  instant, from the fitted index→monotonic relation of that audio stream;
- frame↔sensor: each sensor field linearly interpolated at the frame's instant between the two
  readings around it (nearest within the tolerance when they are too far apart).

Host stamps are taken when a capture thread wakes, so they carry scheduling jitter (milliseconds
on a loaded 2-core box). Device clocks do not: a camera's frame counter or an audio sample index
advances at the device's own steady rate. Each such relation is fitted along its *lower edge*
(stamps are only ever late, never early): a camera's through the earliest frame of each second
(``envelope_points``, from ten seconds of frames on; a shorter run through the earlier half of its
stamps, ``lower_fit``), audio through the recorder's per-second earliest block arrivals minus the
input latency the driver reports (``lower_fit``). Where the fit is tight the fitted time replaces
the raw stamp for matching. Each drift comes with an uncertainty (``drift_estimate``).

Nothing is dropped silently: an item without a partner is a row with ``matched = 0`` and the
reason, and each stream pair gets a summary (counts, skew = median offset, |offset| p50/p99).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.catalog.db import Catalog, new_record_id
from agent.sessions.clock_fit import (
    MIN_ENVELOPE_POINTS,
    LineFit,
    drift_estimate,
    envelope_points,
    fit_line,
    lower_fit,
)

log = logging.getLogger("fieldcap.alignment")

FRAME_MODALITIES = ("visible", "thermal")
MAX_INTERP_GAP_PERIODS = 2.5  # readings further apart than this are not interpolated between


@dataclass
class Frame:
    record_id: str
    stream: str
    t_mono_ns: int  # the time used for matching: the fitted device time when trustworthy, else the stamp
    device_time: int | float | None
    t_stamp_ns: int = 0  # the host stamp the driver took
    pair: dict[str, Any] | None = None  # the recorded pairing (``pair`` meta), if any


@dataclass
class AudioFile:
    record_id: str
    stream: str
    t_start_ns: int
    t_end_ns: int
    index_first: int | None
    frames: int
    rate: int
    points: list[tuple[int, int]]
    clock_segment: Any
    arrivals: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class AlignmentReport:
    run_id: str
    session_id: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)


def _period_ns(times: np.ndarray[Any, Any], settings: dict[str, Any]) -> float | None:
    """A stream's period: the median spacing of what was kept, else the configured rate."""
    if len(times) >= 2:
        return float(np.median(np.diff(np.sort(times))))
    for key in ("fps", "rate_hz"):
        if settings.get(key):
            return 1e9 / float(settings[key])
    return None


class Aligner:
    """Builds (and stores) the alignment index of one session, optionally for a time window."""

    def __init__(self, cat: Catalog, session_id: str, *, tolerance_ns: int | None = None) -> None:
        self.cat = cat
        self.session_id = session_id
        self.tolerance_ns = tolerance_ns
        self.settings = self._settings()

    def _settings(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for device, settings_json in self.cat.timeline.device_settings(self.session_id):
            out[device] = json.loads(settings_json)
        return out

    # ------------------------------------------------------------------ loading

    def _frames(self, lo: int, hi: int) -> dict[str, list[Frame]]:
        out: dict[str, list[Frame]] = defaultdict(list)
        rows = self.cat.timeline.frames(self.session_id, lo, hi)
        for record_id, stream, t, meta_json in rows:
            meta = json.loads(meta_json)
            out[stream].append(Frame(record_id, stream, t, meta.get("device_time"), t, meta.get("pair")))
        return out

    def _audio(self, lo: int, hi: int) -> dict[str, list[AudioFile]]:
        out: dict[str, list[AudioFile]] = defaultdict(list)
        rows = self.cat.timeline.audio_files(self.session_id, lo, hi)
        for record_id, stream, t0, t1, meta_json in rows:
            meta = json.loads(meta_json)
            points = [(int(i), int(t)) for i, t in meta.get("clock_points") or []]
            out[stream].append(
                AudioFile(
                    record_id,
                    stream,
                    t0,
                    t1,
                    meta.get("sample_index_first"),
                    int(meta.get("frames") or 0),
                    int(meta.get("sample_rate") or 0),
                    points,
                    (meta.get("first_block") or {}).get("clock_segment"),
                    [(int(i), int(t)) for i, t in meta.get("arrival_points") or []],
                )
            )
        return out

    def _readings(self, lo: int, hi: int) -> dict[str, dict[str, tuple[np.ndarray[Any, Any], ...]]]:
        rows = self.cat.timeline.readings(self.session_id, lo, hi)
        grouped: dict[str, dict[str, list[tuple[int, float, str]]]] = defaultdict(lambda: defaultdict(list))
        for stream, name, t, value, record_id in rows:
            grouped[stream][name].append((t, value, record_id))
        out: dict[str, dict[str, tuple[np.ndarray[Any, Any], ...]]] = {}
        for stream, names in grouped.items():
            out[stream] = {}
            for name, items in names.items():
                out[stream][name] = (
                    np.array([i[0] for i in items], dtype=np.int64),
                    np.array([i[1] for i in items], dtype=np.float64),
                    np.array([i[2] for i in items], dtype=object),
                )
        return out

    # ------------------------------------------------------------------ clock fits

    def _audio_fits(
        self, audio: dict[str, list[AudioFile]]
    ) -> tuple[dict[tuple[str, Any], LineFit], list[dict[str, Any]]]:
        """Index→mono per audio stream and clock segment (a discontinuity restarts the relation).

        Fitted along the lower edge of the block arrival times the recorder noted, minus the input
        latency the driver reported; files without arrival points use the driver's own stamps.
        """
        fits: dict[tuple[str, Any], LineFit] = {}
        rows: list[dict[str, Any]] = []
        for stream, files in audio.items():
            rate = files[0].rate
            latency = float(self.settings.get(stream, {}).get("latency_compensated_ns") or 0)
            by_segment: dict[Any, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = defaultdict(lambda: ([], []))
            for f in files:
                arrivals, stamps = by_segment[f.clock_segment]
                arrivals.extend(f.arrivals)
                stamps.extend(f.points)
            for segment, (arrivals, stamps) in by_segment.items():
                source = "arrival_envelope" if len(arrivals) >= 2 else "driver_stamps"
                arr = np.array(sorted(set(arrivals if len(arrivals) >= 2 else stamps)), dtype=np.int64)
                if len(arr) < 2:
                    continue
                refit = lower_fit if source == "arrival_envelope" else fit_line
                fit = refit(arr[:, 0], arr[:, 1])
                if fit is None:
                    continue
                if source == "arrival_envelope":
                    fit.t0 -= latency
                fits[(stream, segment)] = fit
                span_s = float(arr[-1, 0] - arr[0, 0]) / rate
                drift = drift_estimate(arr[:, 0], arr[:, 1], fit, 1e9 / rate, span_s, refit)
                rows.append(
                    {
                        "stream": stream,
                        "device_time": "sample_index",
                        **drift,
                        "points": fit.points,
                        "span_s": round(span_s, 3),
                        "residual_rms_ns": round(fit.residual_rms_ns, 1),
                        "detail": {
                            "clock_segment": segment,
                            "nominal_rate": rate,
                            "fitted_rate": 1e9 / fit.slope,
                            "source": source,
                            "points_offered": len(arr),
                        },
                    }
                )
        return fits, rows

    def _frame_fits(self, frames: dict[str, list[Frame]]) -> list[dict[str, Any]]:
        """Frame counter→mono per camera that has a counter and a nominal rate.

        When the fit is tight (lower-edge residual within ``max(0.5 ms, 2 % of the period)``),
        each frame's matching time becomes the fitted time of its counter: this removes the
        scheduling jitter of the host stamp. Otherwise the stamps are used as they are.
        """
        rows = []
        for stream, items in frames.items():
            fps = self.settings.get(stream, {}).get("fps")
            if not fps:
                continue
            period = 1e9 / float(fps)
            runs: list[list[Frame]] = []
            for f in items:  # a counter that goes back (a reopened camera) starts a new run
                if not isinstance(f.device_time, int):
                    continue
                if not runs or f.device_time <= int(runs[-1][-1].device_time or 0):
                    runs.append([])
                runs[-1].append(f)
            for run in runs:
                if len(run) < 3:
                    continue
                x = np.array([f.device_time for f in run], dtype=np.int64)
                t = np.array([f.t_stamp_ns for f in run], dtype=np.int64)
                # the per-second envelope needs seconds to stand on; a short run keeps every stamp
                xe, te = envelope_points(x, t)
                refit = fit_line if len(xe) >= MIN_ENVELOPE_POINTS else lower_fit
                if refit is lower_fit:
                    xe, te = x, t
                fit = refit(xe, te)
                if fit is None:
                    continue
                span_s = float(x[-1] - x[0]) / float(fps)
                drift = drift_estimate(xe, te, fit, period, span_s, refit)
                used = fit.residual_rms_ns <= max(500_000.0, 0.02 * period) and abs(drift["drift_ppm"]) < 1000
                if used:
                    for f in run:
                        f.t_mono_ns = round(fit.at(float(f.device_time or 0)))
                rows.append(
                    {
                        "stream": stream,
                        "device_time": "frame_counter",
                        **drift,
                        "points": fit.points,
                        "span_s": round(span_s, 3),
                        "residual_rms_ns": round(fit.residual_rms_ns, 1),
                        "detail": {
                            "nominal_fps": fps,
                            "fitted_fps": 1e9 / fit.slope,
                            "frames": len(run),
                            "matching_time": "fitted device time" if used else "host stamps (fit not tight)",
                        },
                    }
                )
        return rows

    # ------------------------------------------------------------------ matching

    def _pair_frames(
        self, a: list[Frame], b: list[Frame], in_window: tuple[int, int]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ta = np.array([f.t_mono_ns for f in a], dtype=np.int64)
        tb = np.array([f.t_mono_ns for f in b], dtype=np.int64)
        pa = _period_ns(ta, self.settings.get(a[0].stream, {})) or 0.0
        pb = _period_ns(tb, self.settings.get(b[0].stream, {})) or 0.0
        if pb > pa:  # the slower stream is the reference: each of its frames gets a row
            a, b, ta, tb, pa, pb = b, a, tb, ta, pb, pa
        tol = self.tolerance_ns if self.tolerance_ns is not None else int(max(pa, pb) / 2)
        rows, offsets, used = [], [], set()
        for f, t in zip(a, ta, strict=True):
            if not in_window[0] <= t < in_window[1]:
                continue
            j = int(np.searchsorted(tb, t))
            cands = [k for k in (j - 1, j) if 0 <= k < len(tb)]
            best = min(cands, key=lambda k: abs(int(tb[k]) - int(t))) if cands else None
            off = int(tb[best]) - int(t) if best is not None else None
            row: dict[str, Any] = {
                "kind": "frame_frame",
                "stream_a": f.stream,
                "stream_b": b[0].stream,
                "record_a": f.record_id,
                "t_mono_ns": int(t),
            }
            if best is not None and off is not None and abs(off) <= tol:
                used.add(best)
                offsets.append(off)
                rows.append({**row, "record_b": b[best].record_id, "offset_ns": off, "matched": True})
            else:
                why = "no frame of the other stream" if off is None else f"nearest is {off / 1e6:.1f} ms away"
                rows.append(
                    {
                        **row,
                        "record_b": None,
                        "offset_ns": off,
                        "matched": False,
                        "detail": {"reason": why, "tolerance_ns": tol},
                    }
                )
        summary = {
            "kind": "frame_frame",
            "stream_a": a[0].stream,
            "stream_b": b[0].stream,
            "tolerance_ns": tol,
            "period_a_ns": round(pa),
            "period_b_ns": round(pb),
            "items_a": len(rows),
            "matched": len(offsets),
            "unmatched_a": len(rows) - len(offsets),
            "unused_b": int(sum(1 for t in tb if in_window[0] <= t < in_window[1])) - len(used),
            **_offset_stats(offsets),
        }
        return rows, summary

    def _paired(
        self, leader: list[Frame], follower: list[Frame], in_window: tuple[int, int]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``frame_pair`` rows: each leader frame with the partner the recorder kept for it."""
        partners = {f.pair["id"]: f for f in follower if f.pair and "id" in f.pair}
        stream_b = follower[0].stream
        rows, offsets, skews = [], [], []
        for f in leader:
            if not in_window[0] <= f.t_mono_ns < in_window[1]:
                continue
            row: dict[str, Any] = {
                "kind": "frame_pair",
                "stream_a": f.stream,
                "stream_b": stream_b,
                "record_a": f.record_id,
                "t_mono_ns": int(f.t_mono_ns),
            }
            p = partners.get(f.pair.get("id")) if f.pair else None
            if p is None or p.pair is None:
                reason = (
                    f"no {stream_b} frame was kept for this one (frame not committed)"
                    if f.pair
                    else f"kept while {stream_b} was not running paired with {f.stream}"
                )
                why: dict[str, Any] = {"reason": reason}
                rows.append({**row, "record_b": None, "offset_ns": None, "matched": False, "detail": why})
                continue
            off = int(p.t_mono_ns) - int(f.t_mono_ns)
            skew = int(p.pair.get("skew_ns") or 0)
            offsets.append(off)
            skews.append(skew)
            detail = {"pair_id": p.pair["id"], "skew_ns": skew, "time": p.pair.get("time")}
            rows.append({**row, "record_b": p.record_id, "offset_ns": off, "matched": True, "detail": detail})
        recorded = _offset_stats(skews)
        summary = {
            "kind": "frame_pair",
            "stream_a": leader[0].stream,
            "stream_b": stream_b,
            "items_a": len(rows),
            "matched": len(offsets),
            "unmatched_a": len(rows) - len(offsets),
            **_offset_stats(offsets),
            "recorded_skew_ns": recorded["skew_ns"],
            "recorded_abs_skew_p50_ns": recorded["abs_offset_p50_ns"],
            "recorded_abs_skew_p99_ns": recorded["abs_offset_p99_ns"],
        }
        return rows, summary

    def _frames_to_audio(
        self,
        frames: list[Frame],
        files: list[AudioFile],
        fits: dict[tuple[str, Any], LineFit],
        in_window: tuple[int, int],
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        starts = np.array([f.t_start_ns for f in files], dtype=np.int64)
        rows, offsets = [], []
        for fr in frames:
            if not in_window[0] <= fr.t_mono_ns < in_window[1]:
                continue
            row: dict[str, Any] = {
                "kind": "frame_audio",
                "stream_a": fr.stream,
                "stream_b": files[0].stream,
                "record_a": fr.record_id,
                "t_mono_ns": fr.t_mono_ns,
            }
            k = int(np.searchsorted(starts, fr.t_mono_ns, side="right")) - 1
            audio = files[k] if k >= 0 else None
            fit = fits.get((audio.stream, audio.clock_segment)) if audio is not None else None
            if audio is None or fr.t_mono_ns >= audio.t_end_ns or audio.index_first is None or fit is None:
                why = (
                    "no audio was being recorded at the frame's time"
                    if fit is not None or audio is None
                    else ("the audio stream has no clock fit")
                )
                rows.append({**row, "record_b": None, "offset_ns": None, "matched": False, "detail": {"reason": why}})
                continue
            index = fit.inverse(fr.t_mono_ns)
            offset_frames = index - audio.index_first
            if not 0 <= offset_frames < audio.frames:
                rows.append(
                    {
                        **row,
                        "record_b": None,
                        "offset_ns": None,
                        "matched": False,
                        "detail": {"reason": "the fitted sample index falls outside the audio file"},
                    }
                )
                continue
            off_ns = round(fr.t_mono_ns - fit.at(audio.index_first))
            offsets.append(off_ns)
            rows.append(
                {
                    **row,
                    "record_b": audio.record_id,
                    "offset_ns": off_ns,
                    "matched": True,
                    "detail": {"sample_index": round(index, 3), "sample_offset": round(offset_frames, 3)},
                }
            )
        summary = {
            "kind": "frame_audio",
            "stream_a": frames[0].stream if frames else None,
            "stream_b": files[0].stream,
            "items_a": len(rows),
            "matched": len(offsets),
            "unmatched_a": len(rows) - len(offsets),
        }
        return rows, summary

    def _frames_to_sensor(
        self,
        frames: list[Frame],
        stream: str,
        fields: dict[str, tuple[np.ndarray[Any, Any], ...]],
        frame_period: float,
        in_window: tuple[int, int],
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        any_times = next(iter(fields.values()))[0]
        sensor_period = _period_ns(any_times, self.settings.get(stream, {})) or 0.0
        tol = self.tolerance_ns if self.tolerance_ns is not None else int(max(frame_period, sensor_period) / 2)
        max_gap = MAX_INTERP_GAP_PERIODS * sensor_period
        rows, matched = [], 0
        for fr in frames:
            if not in_window[0] <= fr.t_mono_ns < in_window[1]:
                continue
            t = fr.t_mono_ns
            values: dict[str, float] = {}
            methods: set[str] = set()
            nearest_off, nearest_rec = None, None
            for name, (times, vals, recs) in fields.items():
                j = int(np.searchsorted(times, t))
                if 0 < j < len(times) and times[j] - times[j - 1] <= max_gap:
                    t0, t1 = int(times[j - 1]), int(times[j])
                    w = (t - t0) / (t1 - t0) if t1 != t0 else 0.0
                    values[name] = float(vals[j - 1] + w * (vals[j] - vals[j - 1]))
                    methods.add("linear")
                    k = j - 1 if t - t0 <= t1 - t else j
                else:
                    cands = [k for k in (j - 1, j) if 0 <= k < len(times)]
                    if not cands:
                        continue
                    k = min(cands, key=lambda c: abs(int(times[c]) - t))
                    if abs(int(times[k]) - t) > tol:
                        continue
                    values[name] = float(vals[k])
                    methods.add("nearest")
                off = int(times[k]) - t
                if nearest_off is None or abs(off) < abs(nearest_off):
                    nearest_off, nearest_rec = off, str(recs[k])
            row: dict[str, Any] = {
                "kind": "frame_sensor",
                "stream_a": fr.stream,
                "stream_b": stream,
                "record_a": fr.record_id,
                "t_mono_ns": t,
            }
            if values:
                matched += 1
                rows.append(
                    {
                        **row,
                        "record_b": nearest_rec,
                        "offset_ns": nearest_off,
                        "matched": True,
                        "detail": {"values": values, "method": "+".join(sorted(methods))},
                    }
                )
            else:
                rows.append(
                    {
                        **row,
                        "record_b": None,
                        "offset_ns": None,
                        "matched": False,
                        "detail": {"reason": "no reading around the frame's time", "tolerance_ns": tol},
                    }
                )
        summary = {
            "kind": "frame_sensor",
            "stream_a": frames[0].stream if frames else None,
            "stream_b": stream,
            "tolerance_ns": tol,
            "items_a": len(rows),
            "matched": matched,
            "unmatched_a": len(rows) - matched,
        }
        return rows, summary

    # ------------------------------------------------------------------ the run

    def build(self, t_from: int | None = None, t_to: int | None = None) -> AlignmentReport:
        """Compute the index for reference items in ``[t_from, t_to)`` (the whole session by default)."""
        window = (t_from if t_from is not None else -(1 << 62), t_to if t_to is not None else 1 << 62)
        margin = 60_000_000_000  # neighbours just outside the window still count as partners
        lo, hi = window[0] - margin, window[1] + margin
        frames, audio, readings = self._frames(lo, hi), self._audio(lo, hi), self._readings(lo, hi)
        audio_fits, fit_rows = self._audio_fits(audio)
        fit_rows += self._frame_fits(frames)
        rows: list[dict[str, Any]] = []
        pairs: list[dict[str, Any]] = []
        names = sorted(frames)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                leader = _leader_of(frames[a], frames[b])
                if leader is not None:  # a recorded pairing: the pair is one sample
                    lead, follow = (frames[a], frames[b]) if leader == a else (frames[b], frames[a])
                    r, s = self._paired(lead, follow, window)
                else:
                    r, s = self._pair_frames(frames[a], frames[b], window)
                rows += r
                pairs.append(s)
        for name in names:
            period = _period_ns(np.array([f.t_mono_ns for f in frames[name]]), self.settings.get(name, {})) or 0.0
            for _stream, files in sorted(audio.items()):
                r, s = self._frames_to_audio(frames[name], files, audio_fits, window)
                rows += r
                pairs.append(s)
            for stream, fields in sorted(readings.items()):
                r, s = self._frames_to_sensor(frames[name], stream, fields, period, window)
                rows += r
                pairs.append(s)
        summary = {
            "pairs": pairs,
            "clock_fits": fit_rows,
            "streams": {
                "frames": {k: len(v) for k, v in frames.items()},
                "audio_files": {k: len(v) for k, v in audio.items()},
                "sensors": {k: sorted(v) for k, v in readings.items()},
            },
        }
        return AlignmentReport(new_record_id(), self.session_id, summary, rows, fit_rows)


def _leader_of(a: list[Frame], b: list[Frame]) -> str | None:
    """The leader's stream when one of two frame streams was recorded paired with the other."""
    for follower, other in ((a, b), (b, a)):
        if any(f.pair and f.pair.get("with") == other[0].stream for f in follower):
            return other[0].stream
    return None


def _offset_stats(offsets: list[int]) -> dict[str, Any]:
    if not offsets:
        return {"skew_ns": None, "abs_offset_p50_ns": None, "abs_offset_p99_ns": None}
    arr = np.array(offsets, dtype=np.float64)
    return {
        "skew_ns": int(np.median(arr)),
        "abs_offset_p50_ns": int(np.percentile(np.abs(arr), 50)),
        "abs_offset_p99_ns": int(np.percentile(np.abs(arr), 99)),
    }


def align_session(
    cat: Catalog,
    session_id: str,
    *,
    t_from: int | None = None,
    t_to: int | None = None,
    tolerance_ns: int | None = None,
    store: bool = True,
) -> AlignmentReport:
    """Build the alignment index of a session (or a window of it) and store it with its records."""
    report = Aligner(cat, session_id, tolerance_ns=tolerance_ns).build(t_from, t_to)
    if store:
        cat.add_alignment_run(
            {
                "run_id": report.run_id,
                "session_id": session_id,
                "t_from_mono_ns": t_from,
                "t_to_mono_ns": t_to,
                "summary": report.summary,
            },
            report.rows,
            report.fits,
        )
    unmatched = sum(1 for r in report.rows if not r["matched"])
    log.info("alignment of %s: %d rows, %d unmatched", session_id, len(report.rows), unmatched)
    return report
