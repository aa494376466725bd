"""Thermal frames in exports: the raw uint16 pixels, and an 8-bit false-colour preview of them.

Devices store every thermal frame as a single-channel 16-bit PNG (radiometric counts, e.g.
centi-kelvin from ``sim-thermal``), so the blob is lossless but most viewers show it as a black
or washed-out picture. Exports therefore carry the pixels exactly (``.npy`` in WebDataset,
``mono16`` in MCAP, the 16-bit PNG in Hugging Face and Label Studio) and, where a person looks
at it, a false-colour preview: the frame stretched between its own minimum and maximum and
mapped through OpenCV's *inferno* colour map. The preview is for eyes only, never for numbers.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from central.datasets.errors import DatasetError
from central.datasets.samples import Sample

PREVIEW_EXT = "preview.png"
RENDERING = "thermal/inferno-minmax/1"  # part of export fingerprints: a new rendering rewrites files


def is_thermal_frame(s: Sample) -> bool:
    """A thermal capture whose media is a PNG (what every thermal driver records)."""
    return s.modality == "thermal" and s.blob is not None and s.blob.media_type == "image/png"


def read_frame(path: Path, key: str) -> NDArray[np.uint16]:
    """The frame's pixels, exactly as captured; a blob that is not a 1-channel PNG is a clear error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{key}: cannot read the thermal frame {path}: {exc.strerror}") from None
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise DatasetError(
            f"{key}: the thermal frame {path.name} is not a single-channel 8/16-bit PNG (the device sent"
            " something else); leave this device or session out with --device/--session"
        )
    return np.ascontiguousarray(img, dtype=np.uint16)


def npy_bytes(frame: NDArray[np.uint16]) -> bytes:
    """The frame as a ``.npy`` file (little-endian uint16, C order): ``numpy.load`` reads it back."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frame, dtype="<u2"), allow_pickle=False)
    return buf.getvalue()


def npy_size(width: int, height: int) -> int:
    return 128 + 2 * width * height


def preview_png(frame: NDArray[np.uint16]) -> bytes:
    """An 8-bit BGR PNG: the frame min..max stretched to 0..255 and coloured with *inferno*."""
    lo, hi = int(frame.min()), int(frame.max())
    span = max(hi - lo, 1)
    grey = ((frame.astype(np.float64) - lo) * (255.0 / span)).round().clip(0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    ok, png = cv2.imencode(".png", colour, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR array
        raise DatasetError("cannot encode a thermal preview PNG")
    return bytes(png.tobytes())
