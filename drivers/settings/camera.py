"""Settings of the visible cameras (OpenCV): V4L2 devices, RTSP/HTTP streams, files."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.settings.common import CommonSettings

__all__ = ["NetworkStreamFields", "ReplayFields", "RtspCameraSettings", "V4l2CameraSettings", "VideoFileSettings"]


class V4l2CameraSettings(CommonSettings):
    """A local V4L2 camera; the FOURCC is set before size and rate (drivers pick modes by FOURCC)."""

    type: Literal["v4l2"] = Field(description="Driver name.")
    device: str = Field(default="/dev/video0", description="Device path (/dev/video0, /dev/v4l/by-id/...).")
    width: int = Field(default=1280, ge=16, le=7680, description="Requested frame width.")
    height: int = Field(default=720, ge=16, le=4320, description="Requested frame height.")
    fps: float = Field(default=30.0, gt=0, le=240, description="Requested frame rate.")
    fourcc: Literal["MJPG", "YUYV", "H264"] = Field(
        default="MJPG", description="Pixel format; MJPG allows high resolutions at full rate on USB."
    )
    exposure: Literal["auto"] | float = Field(
        default="auto",
        description="'auto' or a manual exposure value in the driver's units "
        "(V4L2 exposure_time_absolute: 100 us steps).",
    )
    gain: float | None = Field(default=None, ge=0, description="Manual gain; unset: leave as is.")
    buffer_frames: int = Field(default=1, ge=1, le=32, description="Driver queue length (CAP_PROP_BUFFERSIZE).")


class NetworkStreamFields(CommonSettings):
    """Fields of a network video stream read through FFmpeg."""

    url: str = Field(
        pattern=r"^(rtsp|rtsps|http|https)://",
        description="Stream URL without credentials (rtsp://host:554/path, http://.../mjpg).",
    )
    credentials_file: str | None = Field(
        default=None,
        description="File holding 'user:password' put into the URL at open time (e.g. under "
        "$CREDENTIALS_DIRECTORY); secrets never live in the TOML.",
    )
    transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTSP transport; TCP avoids smeared frames from lost packets."
    )
    stall_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="FFmpeg read timeout: a stream silent this long is dropped and reopened.",
    )


class RtspCameraSettings(NetworkStreamFields):
    """An RTSP/HTTP IP camera; a drain thread keeps only the newest frame (old ones are drops)."""

    type: Literal["rtsp"] = Field(description="Driver name.")


class ReplayFields(CommonSettings):
    """Fields of a replayed file or image sequence."""

    path: str = Field(description="Video file, or image-sequence pattern like dir/img_%04d.png.")
    fps: float | None = Field(
        default=None, gt=0, le=1000, description="Replay rate; unset: the file's own (5 for images)."
    )
    pace: Literal["realtime", "asap"] = Field(
        default="realtime", description="realtime: deliver at the frame rate; asap: as fast as read."
    )
    loop: bool = Field(default=False, description="Start over at the end instead of stopping.")


class VideoFileSettings(ReplayFields):
    """Replay of a video file or an image sequence (printf pattern such as frames/%06d.jpg)."""

    type: Literal["video-file"] = Field(description="Driver name.")
