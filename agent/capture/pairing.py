"""Paired frames: a camera that keeps, for each frame another camera keeps, its own nearest frame.

``[capture.cam-ir] pair_with = "cam-visible"`` makes ``cam-ir`` the *follower* of ``cam-visible``
(the *leader*). The leader keeps frames by its own policy (``every``, ``interval`` or
``triggered``); the follower applies no policy of its own: it holds a short ring of its recent
frames, and for each frame the leader keeps it keeps the one nearest in time (from the ring, or
the next to arrive), with the measured skew in the frame's ``pair`` meta. Both frames carry the
same pair id, which the alignment index and the exports use to treat the pair as one sample.

"Nearest in time" compares *device-placed* times where a camera has a frame counter and a
nominal rate: each recorder places its counter on the host clock along the lower edge of the
last ``WINDOW_NS`` of its stamps (``t = counter * period + min(stamp - counter * period)``: a
stamp is only ever late, so the earliest one in a couple of seconds is nearly on time). That
removes the scheduling jitter of the stamps, not the cameras' exposure-to-delivery latencies,
which the host cannot see. Until the edge spans ``SETTLE_NS`` (just after a camera opens, when
its first stamps are all late) a placed time is marked ``settling``; a camera without a counter or
rate is placed by its raw stamps (``stamps``). The ``time`` of a pair is the weaker of its two.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Config
    from drivers import Sample

WINDOW_NS = 2_000_000_000  # the lower edge of the stamps is taken over this much host time
JUMP_NS = 1_000_000_000  # an offset this far from the edge means the counter restarted: start over
SETTLE_NS = 1_000_000_000  # an edge younger than this may still sit on late stamps
PLACEMENTS = ("device", "settling", "stamps")  # from trustworthy to least
LEADER_POLICIES = ("every", "interval", "triggered")
FOLLOWER_POLICIES = ("every", "interval")
FRAME_MODALITIES = ("visible", "thermal")


class FrameClock:
    """Places a camera's frames on the host clock by its frame counter (see the module docstring)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1e9 / fps if fps else None
        self._edge: deque[tuple[int, int]] = deque()  # (stamp, offset), offsets increasing: a sliding minimum
        self._since_ns: int | None = None  # first stamp of the current edge
        self._newest_ns = 0

    def note(self, sample: Sample) -> None:
        """Take a frame's stamp into the lower edge."""
        if self.period is None or not isinstance(sample.device_time, int):
            return
        t = sample.t_mono_ns
        off = t - round(sample.device_time * self.period)
        edge = self._edge
        if edge and abs(off - edge[0][1]) > JUMP_NS:
            edge.clear()
        if not edge:
            self._since_ns = t
        self._newest_ns = t
        while edge and edge[-1][1] >= off:
            edge.pop()
        edge.append((t, off))
        while edge[0][0] < t - WINDOW_NS:
            edge.popleft()

    def time_of(self, sample: Sample) -> tuple[int, str]:
        """The frame's placed time and how it was placed (one of ``PLACEMENTS``)."""
        if self.period is None or not isinstance(sample.device_time, int) or not self._edge:
            return sample.t_mono_ns, "stamps"
        placed = round(sample.device_time * self.period) + self._edge[0][1]
        settled = self._since_ns is not None and self._newest_ns - self._since_ns >= SETTLE_NS
        return min(sample.t_mono_ns, placed), "device" if settled else "settling"


def weaker(a: str, b: str) -> str:
    """The less trustworthy of two placements."""
    return max(a, b, key=PLACEMENTS.index)


@dataclass(frozen=True, slots=True)
class PairRequest:
    """A frame the leader kept: the follower keeps its nearest frame to ``t_ns``."""

    pair_id: str
    leader: str
    leader_seq: int
    t_ns: int  # the leader frame's placed time
    placed: str  # how the leader frame's time was placed (``PLACEMENTS``)


def pair_meta(req: PairRequest, t_ns: int, placed: str) -> dict[str, Any]:
    """The ``pair`` meta of a follower frame kept for ``req``."""
    return {
        "id": req.pair_id,
        "with": req.leader,
        "leader_seq": req.leader_seq,
        "leader_t_mono_ns": req.t_ns,
        "t_mono_ns": t_ns,
        "skew_ns": t_ns - req.t_ns,
        "time": weaker(placed, req.placed),
    }


def check_pairing(config: Config) -> None:
    """Raise ValueError (naming the key) for a ``pair_with`` that cannot work."""
    from drivers import driver_modality

    modality = {d.name: driver_modality(d.type) for d in config.devices}
    for name, cap in config.capture.items():
        leader = cap.pair_with
        if leader is None:
            continue
        where = f"capture.{name}.pair_with"
        if modality[name] not in FRAME_MODALITIES:
            raise ValueError(f"{where}: only a camera can be paired; {name!r} is {modality[name]}")
        if leader == name:
            raise ValueError(f"{where}: a stream cannot be paired with itself")
        if leader not in modality:
            raise ValueError(f"{where}: {leader!r} names no device; known devices: {sorted(modality)}")
        if modality[leader] not in FRAME_MODALITIES:
            raise ValueError(f"{where}: {leader!r} is {modality[leader]}, not a camera")
        if cap.policy not in FOLLOWER_POLICIES:
            raise ValueError(
                f"{where}: the paired stream keeps what {leader!r} keeps, so its own policy must be"
                f" {' or '.join(repr(p) for p in FOLLOWER_POLICIES)}, not {cap.policy!r}"
            )
        lead = config.capture_for(leader)
        if lead.pair_with is not None:
            raise ValueError(
                f"{where}: {leader!r} is itself paired with {lead.pair_with!r}; pair both with {lead.pair_with!r}"
                " (no chains or cycles)"
            )
        if lead.policy not in LEADER_POLICIES:
            raise ValueError(
                f"{where}: {leader!r} has policy {lead.policy!r}; a leader keeps frames by {', '.join(LEADER_POLICIES)}"
            )
