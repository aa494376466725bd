"""What starts a triggered capture: a sensor threshold, an analyzer result, or a person.

Streams with ``policy = "triggered"`` keep a ring buffer of the last ``pre_s`` seconds; a trigger
turns it into a capture window ``[t - pre_s, t + post_s]`` (see ``agent.capture.recorder``). Rules fire on
the *crossing* of a threshold, not on every value above it, and re-arm only once the value has
moved back past the threshold by ``hysteresis``, so a noisy reading hovering at the limit does not
fire a storm of windows. Every trigger is an ``events`` row (kind ``trigger``), so the central
side knows why each clip exists.

An analyzer result comes late: the capture it describes is screened only once it is committed (an
audio segment only once it ends). Its trigger is therefore dated at the moment the result is about
(``analyzer_event_ns``), not when QC finished, and the target stream's ring buffer keeps
``pre_s + delay_s`` so that the window around that moment is still in memory when the result
arrives. Where it came later than that, the window says how much of its pre-roll is missing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.catalog.db import new_record_id

if TYPE_CHECKING:
    from agent.config import Config

# Which capture policies make sense for which modality.
POLICIES = {
    "visible": ("every", "interval", "triggered", "take"),
    "thermal": ("every", "interval", "triggered", "take"),
    "audio": ("segment", "triggered", "take"),
    "sensor": ("readings",),
}


class TriggerRule(BaseModel):
    """One condition that opens a capture window on the stream that lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["sensor", "analyzer"] = Field(
        description="sensor: a reading of a sensor stream; analyzer: a QC metric of a capture."
    )
    stream: str = Field(description="The stream whose readings (or screened captures) are watched.")
    field: str = Field(description="Reading name (e.g. temperature_c) or QC metric name (e.g. snr_db).")
    above: float | None = Field(default=None, description="Fire when the value rises above this.")
    below: float | None = Field(default=None, description="Fire when the value falls below this.")
    hysteresis: float = Field(default=0.0, ge=0, description="Re-arm only after moving back this far past it.")
    delay_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="analyzer: how long after the moment it describes a result may arrive (for an audio "
        "segment: segment_s plus screening time). The triggered stream keeps pre_s + delay_s in memory.",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> TriggerRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self

    def describe(self) -> str:
        op, limit = (">", self.above) if self.above is not None else ("<", self.below)
        return f"{self.stream}.{self.field} {op} {limit:g}"


@dataclass(frozen=True, slots=True)
class Trigger:
    """A fired trigger: ``streams`` None means every triggered stream."""

    trigger_id: str
    source: str
    reason: str
    t_mono_ns: int
    streams: tuple[str, ...] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Armed:
    rule: TriggerRule
    targets: list[str]
    armed: bool = True


TriggerListener = Callable[[Trigger], None]

# Annotations that place an analyzer's finding inside a capture (seconds from its start).
EVENT_ANNOTATIONS = ("speech_segment",)


def analyzer_event_ns(t_start_mono_ns: int, annotations: Iterable[Mapping[str, Any]] = ()) -> int:
    """When a screened capture's finding happened: the start of its first speech segment where the
    VAD found one, else the capture's own start (a frame's capture time, a segment's first sample).

    Dating the trigger here rather than at the end of screening is what puts the window around
    the event and not seconds after it.
    """
    starts = [
        float(a["t_start_s"])
        for a in annotations
        if a.get("kind") in EVENT_ANNOTATIONS and isinstance(a.get("t_start_s"), int | float)
    ]
    return t_start_mono_ns + (round(min(starts) * 1e9) if starts else 0)


def hold_s(rules: Iterable[TriggerRule]) -> float:
    """Extra seconds a triggered stream must keep in its ring buffer for late analyzer results."""
    return max((r.delay_s for r in rules if r.source == "analyzer"), default=0.0)


class TriggerBus:
    """Evaluates rules and fans triggers out to the triggered streams (thread-safe).

    ``record`` is called once per trigger (the agent writes the ``trigger`` event with it).
    """

    def __init__(self, record: Callable[[Trigger], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, TriggerListener] = {}
        self._rules: list[_Armed] = []
        self.record = record
        self.fired: list[Trigger] = []

    def add_rule(self, rule: TriggerRule, target: str) -> None:
        """Let ``rule`` open windows on stream ``target``; identical rules share one state."""
        with self._lock:
            for armed in self._rules:
                if armed.rule == rule:
                    if target not in armed.targets:
                        armed.targets.append(target)
                    return
            self._rules.append(_Armed(rule, [target]))

    def subscribe(self, stream: str, listener: TriggerListener) -> None:
        with self._lock:
            self._listeners[stream] = listener

    def unsubscribe(self, stream: str) -> None:
        with self._lock:
            self._listeners.pop(stream, None)

    def fire(
        self,
        source: str,
        reason: str,
        *,
        streams: tuple[str, ...] | None = None,
        t_mono_ns: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Trigger:
        """Open (or extend) a window on ``streams`` (all triggered streams when None)."""
        trig = Trigger(
            new_record_id(),
            source,
            reason,
            time.monotonic_ns() if t_mono_ns is None else t_mono_ns,
            streams,
            dict(detail or {}),
        )
        with self._lock:
            targets = [listener for name, listener in self._listeners.items() if streams is None or name in streams]
            self.fired.append(trig)
            del self.fired[:-1000]
        if self.record is not None:
            self.record(trig)
        for listener in targets:
            listener(trig)
        return trig

    def watches(self, source: str, stream: str) -> bool:
        """Whether any rule looks at ``stream``'s readings (sensor) or screened captures (analyzer)."""
        with self._lock:
            return any(a.rule.source == source and a.rule.stream == stream for a in self._rules)

    def _check(
        self,
        source: str,
        stream: str,
        values: Mapping[str, Any],
        t_mono_ns: int,
        extra: Mapping[str, Any] | None = None,
    ) -> list[Trigger]:
        due: list[tuple[_Armed, float]] = []
        with self._lock:
            for armed in self._rules:
                rule = armed.rule
                if rule.source != source or rule.stream != stream:
                    continue
                value = values.get(rule.field)
                if not isinstance(value, int | float) or math.isnan(value):  # missing or text
                    continue
                if rule.above is not None:
                    crossed, rearm = value > rule.above, value <= rule.above - rule.hysteresis
                else:
                    assert rule.below is not None
                    crossed, rearm = value < rule.below, value >= rule.below + rule.hysteresis
                if armed.armed and crossed:
                    armed.armed = False
                    due.append((armed, float(value)))
                elif not armed.armed and rearm:
                    armed.armed = True
        return [
            self.fire(
                source,
                f"{armed.rule.describe()} (value {value:g})",
                streams=tuple(armed.targets),
                t_mono_ns=t_mono_ns,
                detail={"rule": armed.rule.model_dump(), "value": value, **dict(extra or {})},
            )
            for armed, value in due
        ]

    def check_reading(self, stream: str, values: Mapping[str, Any], t_mono_ns: int) -> list[Trigger]:
        """Evaluate sensor rules against one reading (called on the sensor's capture thread)."""
        return self._check("sensor", stream, values, t_mono_ns)

    def check_metrics(
        self, stream: str, metrics: Mapping[str, Any], t_mono_ns: int, detail: Mapping[str, Any] | None = None
    ) -> list[Trigger]:
        """Evaluate analyzer rules against a screened capture's metrics (called by the QC loop).

        ``t_mono_ns`` is when the finding happened (``analyzer_event_ns``), not when QC ran.
        """
        return self._check("analyzer", stream, metrics, t_mono_ns, detail)


def check_capture_policies(config: Config) -> None:
    """Raise ValueError for a policy a stream's modality cannot have, or a rule naming no stream."""
    from drivers import driver_modality

    modality = {d.name: driver_modality(d.type) for d in config.devices}
    for name, cap in config.capture.items():
        allowed = POLICIES.get(modality[name], ())
        if cap.policy not in allowed:
            raise ValueError(
                f"[capture.{name}] policy {cap.policy!r} does not apply to a {modality[name]} stream;"
                f" use one of {', '.join(allowed)}"
            )
        if cap.triggers and cap.policy != "triggered":
            raise ValueError(
                f"[capture.{name}] has triggers but its policy is {cap.policy!r}; set policy = 'triggered'"
            )
        for i, rule in enumerate(cap.triggers):
            if rule.stream not in modality:
                raise ValueError(
                    f"capture.{name}.triggers[{i}].stream: {rule.stream!r} names no device;"
                    f" known devices: {sorted(modality)}"
                )
            if rule.source == "sensor" and modality[rule.stream] != "sensor":
                raise ValueError(
                    f"capture.{name}.triggers[{i}]: source 'sensor' needs a sensor stream,"
                    f" {rule.stream!r} is {modality[rule.stream]}"
                )
            if rule.source == "analyzer":
                _check_analyzer_rule(config, f"capture.{name}.triggers[{i}]", rule, modality[rule.stream])


def _check_analyzer_rule(config: Config, where: str, rule: TriggerRule, modality: str) -> None:
    """An analyzer rule must watch a screened stream, and wait at least as long as its results take."""
    if modality == "sensor":
        raise ValueError(
            f"{where}: source 'analyzer' needs a screened stream (audio, visible, thermal);"
            f" {rule.stream!r} is a sensor: use source = 'sensor'"
        )
    watched = config.capture_for(rule.stream)
    unit_s = {"segment": watched.segment_s, "triggered": watched.pre_s + watched.post_s}.get(watched.policy, 0.0)
    if modality == "audio" and rule.delay_s < unit_s:
        raise ValueError(
            f"{where}.delay_s: {rule.stream!r} is screened only after each {watched.policy} of"
            f" {unit_s:g} s ends, so a result can come {unit_s:g} s after what it describes, but delay_s is"
            f" {rule.delay_s:g}; set delay_s to at least {unit_s + 2:g} (the window must still be in memory)"
            f" or shorten {rule.stream}'s {'segment_s' if watched.policy == 'segment' else 'pre_s/post_s'}"
        )
