"""Which samples a version holds: filters by device, site, session, time, modality, QC, label and environment.

Each filter takes several values (any of them matches); different filters must all match. The
filters are written into the manifest, so a version says how it was selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from central.datasets.environment import TIMES_OF_DAY, Condition
from central.datasets.errors import DatasetError
from central.datasets.samples import Sample, Samples, load_samples
from central.store import CentralStore

VERDICTS = ("pass", "fail", "review", "none")


def parse_time(text: str, option: str) -> int:
    """ISO 8601 date or date-time (UTC unless it says otherwise) → UTC nanoseconds."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DatasetError(
            f"{option} {text!r}: not an ISO 8601 time; write e.g. 2025-03-01 or 2025-03-01T14:30:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


@dataclass(frozen=True, slots=True)
class Filters:
    devices: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    modalities: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    where: tuple[str, ...] = ()  # environment conditions, ``FIELD OP NUMBER`` (``environment.Condition``)
    times_of_day: tuple[str, ...] = ()
    weathers: tuple[str, ...] = ()
    include_superseded: bool = False

    def __post_init__(self) -> None:
        for text in self.where:
            Condition.parse(text)
        object.__setattr__(self, "weathers", tuple(w.strip().lower() for w in self.weathers))
        bad_time = [t for t in self.times_of_day if t not in TIMES_OF_DAY]
        if bad_time:
            raise DatasetError(f"--time-of-day {bad_time[0]!r}: use one of {', '.join(TIMES_OF_DAY)}")
        bad = [v for v in self.verdicts if v not in VERDICTS]
        if bad:
            raise DatasetError(f"--verdict {bad[0]!r}: not a QC verdict; use one of {', '.join(VERDICTS)}")
        if self.since is not None and self.until is not None and self.since_ns >= self.until_ns:  # type: ignore[operator]
            raise DatasetError(f"--since {self.since} is not before --until {self.until}; swap them")

    @property
    def since_ns(self) -> int | None:
        return None if self.since is None else parse_time(self.since, "--since")

    @property
    def until_ns(self) -> int | None:
        return None if self.until is None else parse_time(self.until, "--until")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, only the filters in use (for the manifest and the dataset card)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value:
                out[name] = sorted(value) if isinstance(value, tuple) else value
        return out

    def matches(self, s: Sample) -> bool:
        if self.devices and s.device not in self.devices:
            return False
        if self.sites and s.site not in self.sites:
            return False
        if self.sessions:
            sid = str(s.capture.get("session_id") or "")
            if not sid or not any(sid == p or sid.startswith(p) for p in self.sessions):
                return False
        t = s.t_start_utc_ns
        since, until = self.since_ns, self.until_ns
        if since is not None and (t is None or t < since):
            return False
        if until is not None and (t is None or t >= until):
            return False
        if self.modalities and s.modality not in self.modalities:
            return False
        if self.verdicts and (s.verdict_name or "none") not in self.verdicts:
            return False
        if self.profiles and s.profile not in self.profiles:
            return False
        if self.labels and not set(self.labels) & set(s.labels):
            return False
        env = s.environment
        if not all(Condition.parse(text).holds(env) for text in self.where):
            return False
        if self.times_of_day and env.get("time_of_day") not in self.times_of_day:
            return False
        if self.weathers and env.get("weather") not in self.weathers:
            return False
        return self.include_superseded or s.superseded_by is None


def load_for(store: CentralStore, filters: Filters) -> Samples:
    """The samples ``filters`` can select from: with ``--device``, only those devices' (read from the
    store by device, so a selection of a few devices reads their records, not the whole store);
    ``select`` applies every filter to them and picks exactly what it would pick from a full load.

    The other filters (site, session, time, modality, QC, labels, environment) depend on joined or
    derived values (a capture's site is its session's) and are applied by ``select`` in Python.
    """
    return load_samples(store, devices=filters.devices or None)


def select(samples: Iterable[Sample], filters: Filters) -> list[Sample]:
    """The samples that match, in capture-time order."""
    return sorted((s for s in samples if filters.matches(s)), key=lambda s: s.sort_key)


def unknown_values(samples: Sequence[Sample], filters: Filters) -> list[str]:
    """Filter values no sample has at all (likely typos), as ``--option value`` strings."""
    known = {
        "--device": ({s.device for s in samples}, filters.devices),
        "--site": ({s.site for s in samples if s.site}, filters.sites),
        "--modality": ({s.modality for s in samples}, filters.modalities),
        "--profile": ({s.profile for s in samples if s.profile}, filters.profiles),
        "--weather": ({s.environment["weather"] for s in samples if "weather" in s.environment}, filters.weathers),
        "--where": (
            {k for s in samples for k in s.environment},
            tuple(Condition.parse(w).field for w in filters.where),
        ),
    }
    out = []
    for option, (have, wanted) in known.items():
        out += [f"{option} {w}" for w in wanted if w not in have]
    return out
