"""The frames of one camera take or triggered clip, tracked until each is committed or failed.

A camera window is committed frame by frame, and the take (or clip) must list one capture per
stream, as it does for a microphone's WAV: a summary capture written once the last frame has
settled. ``FrameSet`` is the private context those frames are committed under; it counts them
and calls the recorder back exactly once when the window is closed and nothing is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agent.catalog.writer import CaptureContext
from drivers import Sample


class FrameSet(CaptureContext):
    """The frames of one camera window, committed under this private context (see ``agent.capture.recorder``).

    The writer reports each frame here instead of to the take (or trigger) context, so the take
    lists one capture per stream. Once the window is closed and every frame is committed or failed,
    ``finish`` (the recorder's) submits the summary capture under the take's context and only then
    closes the stream there, so ``stop_take`` waits for the summary as for a WAV.
    """

    def __init__(self, parent: CaptureContext, finish: Callable[[FrameSet], None]) -> None:
        super().__init__(
            parent.kind,
            parent.context_id,
            session_id=parent.session_id,
            item_id=parent.item_id,
            take_no=parent.take_no,
            supersedes=parent.supersedes,
            meta=parent.meta,
        )
        self.parent = parent
        self.notes: dict[str, Any] = {}
        self.first: Sample | None = None
        self.last: Sample | None = None
        self.submitted = 0
        self.committed = 0
        self.failures: list[str] = []
        self._finish = finish
        self._flock = threading.Lock()
        self._settled = 0
        self._closed = False
        self._finished = False

    def add(self, sample: Sample) -> None:
        """A frame of the window, about to be submitted (capture thread)."""
        if self.first is None:
            self.first = sample
        self.last = sample

    def job_submitted(self) -> None:
        with self._flock:
            self.submitted += 1

    def job_done(self, stream: str, record_id: str | None, error: str | None = None) -> None:  # noqa: ARG002
        with self._flock:  # one stream per frame set: ``stream`` is the writer's signature only
            self._settled += 1
            self.committed += record_id is not None
            if error:
                self.failures.append(error)
            ready = self._ready()
        if ready:
            self._finish(self)

    def close(self) -> None:
        """No more frames will join (capture thread)."""
        with self._flock:
            self._closed = True
            ready = self._ready()
        if ready:
            self._finish(self)

    def _ready(self) -> bool:
        if self._closed and self._settled >= self.submitted and not self._finished:
            self._finished = True
            return True
        return False
