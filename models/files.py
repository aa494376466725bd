"""Read media files for screening: WAV/FLAC (soundfile), JPEG/PNG (OpenCV); 16-bit single-channel
PNG/TIFF is a radiometric thermal frame, 8-bit images are visible-light photos."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import cv2
import numpy as np
import soundfile

from models.errors import MediaError
from models.screener import Screener
from models.screening import Screening

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aif", ".aiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_audio(path: pathlib.Path) -> tuple[np.ndarray[Any, Any], int]:
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise MediaError(f"cannot read audio {path.name}: {exc}") from exc
    if data.shape[0] == 0:
        raise MediaError(f"audio {path.name} has no samples")
    return data, int(rate)


def read_image(path: pathlib.Path) -> np.ndarray[Any, Any]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MediaError(f"cannot decode image {path.name}: not a valid image file, or truncated")
    return np.asarray(image)


def screen_file(
    path: str | os.PathLike[str],
    screener: Screener | None = None,
    profile: str | None = None,
) -> Screening:
    """Screen a file with the analyzers the daemon uses; the modality follows the file type.

    Raises MediaError for a file that is missing, unreadable or of an unsupported type, and
    ProfileError for a profile that does not fit the file's modality.
    """
    file = pathlib.Path(path)
    if not file.exists():
        raise MediaError(f"{file}: no such file")
    if not file.is_file():
        raise MediaError(f"{file}: not a regular file")
    screener = screener or Screener()
    suffix = file.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        samples, rate = read_audio(file)
        return screener.audio(samples, rate, profile)
    if suffix in IMAGE_SUFFIXES:
        image = read_image(file)
        if image.dtype == np.uint16 and (image.ndim == 2 or image.shape[2] == 1):
            return screener.thermal(image, profile=profile)
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)  # 16-bit colour photo: keep the top 8 bits
        if image.dtype != np.uint8:
            raise MediaError(f"image {file.name} has unsupported pixel type {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        return screener.image(image, profile)
    supported = ", ".join(sorted(AUDIO_SUFFIXES | IMAGE_SUFFIXES))
    raise MediaError(f"{file.name}: unsupported file type {suffix or '(none)'} (supported: {supported})")
