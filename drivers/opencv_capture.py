"""OpenCV capture plumbing shared by the camera and thermal drivers.

- ``cap_prop(name)`` looks capture properties up by *name*: OpenCV 5 renumbered several (the
  open/read timeouts among them), so numbers baked into code silently set the wrong property.
- ``open_ffmpeg_stream`` opens RTSP/HTTP through FFmpeg with the transport and the open/read
  timeouts, so a dead camera fails within the configured time instead of OpenCV's 30 s default.
- ``FrameGrabber`` is the drain thread: it reads every frame as it arrives and keeps only the
  newest, so a consumer always gets a current frame instead of one aged in FFmpeg's buffer;
  frames overwritten before anyone took them are counted (they become ``stats.drops``).
- ``CaptureDriver`` ties them to the ``Driver`` base: a failed read (``isOpened()`` stays true
  after a stream died, so only reads tell) releases the capture and lets the base reopen it.
- ``open_with_deadline`` enforces ``open_timeout_s`` where the backend has no timeout of its own
  (V4L2: ``open()`` and the format ioctls of a wedged USB camera can block for a long time).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import cv2
import numpy as np

from drivers.base import Driver, RawSample
from drivers.errors import DriverIOError, DriverOpenError

if TYPE_CHECKING:
    from drivers.settings.camera import NetworkStreamFields
    from drivers.settings.common import CommonSettings

__all__ = [
    "CaptureDriver",
    "FrameGrabber",
    "VideoCaptureLike",
    "cap_prop",
    "fourcc_str",
    "open_ffmpeg_stream",
    "open_with_deadline",
    "stream_transport",
    "stream_url",
]

S = TypeVar("S", bound="CommonSettings")
_env_lock = threading.Lock()


class VideoCaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the drivers use (emulated by ``drivers.sim.v4l2``)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name
    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, Any]: ...
    def read(self) -> tuple[bool, Any]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...
    def getBackendName(self) -> str: ...  # noqa: N802 - OpenCV's name


def cap_prop(name: str) -> int | None:
    """The number of ``cv2.<name>`` in this OpenCV build, or None if it has no such property."""
    value = getattr(cv2, name, None)
    return int(value) if isinstance(value, int) else None


def fourcc_str(value: float) -> str:
    """``CAP_PROP_FOURCC`` as text ('MJPG'); '' when the backend reports none."""
    code = int(value)
    if code <= 0:
        return ""
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


def stream_url(settings: NetworkStreamFields) -> str:
    """The URL with the credentials from ``credentials_file`` (``user:password``) inserted."""
    if settings.credentials_file is None:
        return settings.url
    try:
        with open(settings.credentials_file, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        raise DriverOpenError(
            f"{settings.name}: cannot read credentials file {settings.credentials_file!r}: {exc}"
        ) from exc
    user, _, password = secret.partition(":")
    parts = urlsplit(settings.url)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def stream_transport(settings: NetworkStreamFields) -> str:
    """How the stream travels: the RTSP transport in force, else the URL scheme (http, https)."""
    scheme = urlsplit(settings.url).scheme
    return settings.transport if scheme.startswith("rtsp") else scheme


def redact(url: str) -> str:
    """The URL without credentials, for messages and metadata."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def open_ffmpeg_stream(settings: NetworkStreamFields, extra: list[int] | None = None) -> Any:
    """Open a network stream through FFmpeg with transport and timeouts; DriverOpenError if not."""
    params: list[int] = []
    for name, seconds in (
        ("CAP_PROP_OPEN_TIMEOUT_MSEC", settings.open_timeout_s),
        ("CAP_PROP_READ_TIMEOUT_MSEC", settings.stall_timeout_s),
    ):
        prop = cap_prop(name)
        if prop is not None:
            params += [prop, round(seconds * 1000)]
    params += extra or []
    options = f"rtsp_transport;{settings.transport}"
    url = stream_url(settings)
    # FFmpeg reads its options from the environment at open time; the lock keeps two streams
    # with different transports from seeing each other's value.
    with _env_lock:
        saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
        try:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if saved is None:
                del os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
            else:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved
    if not cap.isOpened():
        cap.release()
        raise DriverOpenError(
            f"{settings.name}: cannot open stream {redact(settings.url)} within "
            f"{settings.open_timeout_s:g} s (is the camera reachable, the path and the "
            f"credentials right? try transport='{'udp' if settings.transport == 'tcp' else 'tcp'}')"
        )
    return cap


_pending_lock = threading.Lock()
_pending_opens: dict[str, float] = {}  # device -> monotonic start of an open that outlived its deadline


def open_with_deadline(
    make: Callable[[], VideoCaptureLike], timeout: float, *, device: str, name: str, what: str
) -> VideoCaptureLike:
    """Run ``make()`` in a worker thread and wait at most ``timeout`` seconds for it.

    A blocked ``open()``/``ioctl`` cannot be cancelled from Python, so an open that misses its
    deadline is abandoned, not killed: the worker releases the capture itself if it ever
    returns. Until it does, further opens of the same ``device`` fail at once instead of piling
    up more blocked threads.
    """
    with _pending_lock:
        since = _pending_opens.get(device)
    if since is not None:
        raise DriverOpenError(
            f"{name}: an earlier open of {what} has been blocked for {time.monotonic() - since:.0f} s "
            "and has not returned; the device or its kernel driver is wedged (unplug and replug "
            "the camera, or reload its driver module)"
        )
    lock = threading.Lock()
    done = threading.Event()
    outcome: list[Any] = []  # [capture] or [exception]; appended under ``lock``
    abandoned = False
    started = time.monotonic()

    def work() -> None:
        try:
            result: Any = make()
        except BaseException as exc:  # handed to the waiting thread
            result = exc
        with lock:
            late = abandoned
            if not late:
                outcome.append(result)
                done.set()
        if late:
            if not isinstance(result, BaseException):
                result.release()
            with _pending_lock:
                _pending_opens.pop(device, None)

    threading.Thread(target=work, name=f"open-{name}", daemon=True).start()
    done.wait(timeout)
    with lock:
        if not outcome:
            abandoned = True
            with _pending_lock:
                _pending_opens[device] = started
            raise DriverOpenError(
                f"{name}: {what} did not open within {timeout:g} s (open_timeout_s); the device "
                "does not answer (a wedged USB camera or hub: unplug and replug it). The blocked "
                "open is released if it ever returns."
            )
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    cap: VideoCaptureLike = result
    return cap


@dataclass(slots=True)
class Grabbed:
    """The newest frame held by a ``FrameGrabber``."""

    frame: Any
    t_mono_ns: int
    index: int
    pts: float
    pos_msec: float


class FrameGrabber:
    """Drain thread: reads frames continuously, keeps only the newest, counts overwritten ones.

    Right after opening, FFmpeg holds a backlog of frames buffered while it probed the stream;
    they come out back to back and would be stamped with a wrong ``t_mono_ns``. Until a grab has
    to wait (at least half a frame interval) or ``catch_up_s`` passed, frames are discarded and
    counted in ``stale``.
    """

    def __init__(self, cap: VideoCaptureLike, name: str, *, catch_up_s: float = 3.0) -> None:
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._live_wait_s = 0.5 / (fps if 0 < fps < 1000 else 25.0)
        self._catch_up_s = catch_up_s
        self.stale = 0
        self._cond = threading.Condition()
        self._latest: Grabbed | None = None
        self._taken = -1  # index of the last frame handed out
        self._count = 0
        self._stop = False
        self.failure: str | None = None
        self._pts = cap_prop("CAP_PROP_PTS")
        self._thread = threading.Thread(target=self._run, name=f"grab-{name}", daemon=True)

    def start(self) -> None:
        """Start draining."""
        self._thread.start()

    def _run(self) -> None:
        cap = self._cap
        live_by = time.monotonic() + self._catch_up_s
        live = False
        while not self._stop:
            try:
                started = time.monotonic()
                ok = cap.grab()
                t_mono = time.monotonic_ns()
                if ok and not live:
                    live = t_mono / 1e9 - started >= self._live_wait_s or started >= live_by
                    if not live:
                        self.stale += 1
                        continue
                if ok:
                    ok, frame = cap.retrieve()
            except cv2.error as exc:
                ok, frame = False, None
                self.failure = f"OpenCV error: {exc}"
            if not ok or frame is None:
                with self._cond:
                    self.failure = self.failure or "stream ended or stalled (no frame)"
                    self._cond.notify_all()
                return
            pts = cap.get(self._pts) if self._pts is not None else -1.0
            grabbed = Grabbed(frame, t_mono, self._count, pts, cap.get(cv2.CAP_PROP_POS_MSEC))
            with self._cond:
                self._latest = grabbed
                self._count += 1
                self._cond.notify_all()

    def take(self, timeout: float) -> tuple[Grabbed, int] | None:
        """The newest frame not yet taken and how many were skipped; None after ``timeout``.

        Raises ``DriverIOError`` once the thread stopped on a failed read.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.index <= self._taken:
                if self.failure is not None:
                    raise DriverIOError(self.failure)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            got = self._latest
            skipped = got.index - self._taken - 1
            self._taken = got.index
            return got, skipped

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop and wait; False if it is still stuck in a read."""
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class CaptureDriver(Driver[S]):
    """A live OpenCV source read through a ``FrameGrabber``; subclasses open the capture.

    With ``open_in_worker`` the whole of ``_make_capture`` (open, set, read back) runs under
    ``open_with_deadline``, keyed by ``_device_key()``.
    """

    open_in_worker: ClassVar[bool] = False

    def __init__(self, settings: S) -> None:
        super().__init__(settings)
        self._cap: VideoCaptureLike | None = None
        self._grabber: FrameGrabber | None = None
        self._join_s = 10.0  # longest wait for the drain thread to leave a blocked read
        self._stale_counted = 0

    def _make_capture(self) -> VideoCaptureLike:
        """Open and configure the capture (raise ``DriverOpenError`` with the fix)."""
        raise NotImplementedError

    def _convert(self, frame: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        """Turn a retrieved frame into the payload (and per-frame meta); default: as is."""
        return frame, {}

    def _device_key(self) -> str:
        """What ``open_with_deadline`` keys a blocked open by (the device path)."""
        return str(getattr(self.settings, "device", self.name))

    def _open(self) -> None:
        if self.open_in_worker:
            cap = open_with_deadline(
                self._make_capture,
                self.settings.open_timeout_s,
                device=self._device_key(),
                name=self.name,
                what=self.describe(),
            )
        else:
            cap = self._make_capture()
        self._cap = cap
        self._stale_counted = 0
        self._grabber = FrameGrabber(cap, self.name)
        self._grabber.start()

    def _close(self) -> None:
        grabber, self._grabber = self._grabber, None
        cap, self._cap = self._cap, None
        if grabber is not None:
            self._count_stale(grabber)
        if grabber is not None and not grabber.stop(self._join_s):
            # Releasing a capture another thread is reading from can crash the process; leak it.
            self._count("errors", why=f"{self.name}: drain thread stuck in read; capture leaked")
            return
        if cap is not None:
            cap.release()

    def _count_stale(self, grabber: FrameGrabber) -> None:
        """Count the backlog frames discarded at open as drops (the camera did send them)."""
        new = grabber.stale - self._stale_counted  # only the drain thread writes .stale
        self._stale_counted += new
        if new:
            why = f"{self.name}: {new} frame(s) buffered before the stream was live discarded"
            self._count("drops", new, why=why)

    def _read_raw(self, timeout: float) -> RawSample | None:
        grabber = self._grabber
        if grabber is None:
            raise DriverIOError("capture is not open")
        got = grabber.take(timeout)
        self._count_stale(grabber)
        if got is None:
            return None
        grabbed, skipped = got
        payload, meta = self._convert(grabbed.frame)
        meta["pos_msec"] = grabbed.pos_msec
        device_time: float | int | None = int(grabbed.pts) if grabbed.pts >= 0 else None
        return RawSample(
            payload=payload,
            t_mono_ns=grabbed.t_mono_ns,
            device_time=device_time,
            device_seq=grabbed.index,
            skipped=skipped,
            meta=meta,
        )

    def _capture_readback(self) -> dict[str, Any]:
        cap = self._cap
        if cap is None:
            return {}
        return {
            "backend": cap.getBackendName(),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": cap.get(cv2.CAP_PROP_FPS),
            "fourcc": fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)),
        }
