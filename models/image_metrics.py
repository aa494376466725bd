"""Sharpness and exposure metrics of a visible image; no model involved.

Blur is the variance of the Laplacian measured on a grayscale copy resized to a fixed width, so
that one threshold works for every camera resolution. It is computed with a 16-bit Laplacian and
``cv2.meanStdDev``, which gives the same value as the float64 Laplacian's ``var()`` at a fraction
of the cost (see bench/baselines/vision_raw.py).

The Laplacian variance judges content as much as focus: a sharp photo of a wall, sky or skin has
little high-frequency energy and scores as low as a defocused one. ``blur_effect`` is the
re-blur ratio of Crété-Roffet et al. (2007, as ``skimage.measure.blur_effect`` computes it): blur
the image again with a known 9-tap average and measure how much of the neighbouring-pixel
differences that removes. A sharp image loses much of them, an already blurred one little,
whatever its texture or contrast; 0 is sharp, 1 is fully blurred. It is computed on the
half-width copy that Tenengrad uses, so it costs a few uint8 passes over a quarter of the pixels.

The half-width copy is ``pyrDown``'s (5-tap Gaussian, then every other pixel). 2x2 block means
(``INTER_AREA``) cost a third as much but keep more of the finest detail, so a sigma-3 blur of a
dark, sparse scene (the Hubble deep field) no longer reached the 0.45 re-blur threshold: the
threshold belongs to this copy. Exposure statistics (mean luma, under/over-exposed ratios) come
from a histogram of every 4th pixel of the normalised image in each direction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import MediaError

UInt8Array = npt.NDArray[np.uint8]


@dataclasses.dataclass(frozen=True)
class ImageMetrics:
    width: int
    height: int
    blur: float
    blur_effect: float | None  # computed only where the Laplacian finds little detail (see measure)
    tenengrad: float
    mean_luma: float
    underexposed_ratio: float
    overexposed_ratio: float


def to_gray(image: Any) -> UInt8Array:
    """BGR, BGRA or gray uint8 → gray uint8; anything else is a MediaError."""
    if not isinstance(image, np.ndarray):
        raise MediaError(f"expected a numpy image array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise MediaError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    else:
        raise MediaError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    if gray.shape[0] < 8 or gray.shape[1] < 8:
        raise MediaError(f"image of {gray.shape[1]}x{gray.shape[0]} px is too small to screen")
    return np.ascontiguousarray(gray)


def normalise_width(gray: UInt8Array, width: int) -> UInt8Array:
    """Resize to ``width`` keeping the aspect ratio.

    Bilinear, also when shrinking: area averaging costs ~10x more at 1080p and moves the blur
    score by only a few percent (sharp edges survive either way), far less than the threshold's
    margin; the screen must stay within ~1.3x of a bare Laplacian.
    """
    h, w = gray.shape
    if w == width:
        return gray
    height = max(1, round(h * width / w))
    return np.asarray(cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)


def laplacian_variance(gray: UInt8Array) -> float:
    std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))[1]
    return float(std[0, 0]) ** 2


REBLUR_TAPS = 9


def blur_effect(gray: UInt8Array, taps: int = REBLUR_TAPS) -> float:
    """Crété-Roffet re-blur ratio in [0, 1]: 0 sharp, 1 blurred; the larger of the two directions.

    Per direction: D_F = |F[i] - F[i-1]|, D_B the same on F averaged over ``taps`` pixels along
    that direction; blur = sum min(D_F, D_B) / sum D_F (= (sum D_F - sum max(0, D_F - D_B)) /
    sum D_F). Both directions run along rows (the vertical one on the transposed image), and on
    every other row: a row's differences and re-blur along it need no other row, and half the
    rows estimate the sums to well under 1 %. uint8 throughout (absdiff and min are exact).
    """
    worst = 0.0
    for lines in (gray[::2], cv2.transpose(gray)[::2]):
        reblurred = cv2.blur(lines, (taps, 1))
        d_f = cv2.absdiff(lines[:, 1:], lines[:, :-1])
        s_f = float(cv2.sumElems(d_f)[0])
        if s_f == 0:  # a uniform image: no detail to judge focus on, count it as blurred
            return 1.0
        d_b = cv2.absdiff(reblurred[:, 1:], reblurred[:, :-1])
        worst = max(worst, float(cv2.sumElems(cv2.min(d_f, d_b))[0]) / s_f)
    return worst


def tenengrad(gray: UInt8Array) -> float:
    """Mean squared Sobel gradient magnitude: a second, edge-strength based sharpness score.

    ``measure`` computes it at half the normalised width (after ``pyrDown``): it is the secondary
    score, and this keeps the whole screen close to the cost of one Laplacian.

    mean(gx² + gy²) = var(gx) + mean(gx)² + var(gy) + mean(gy)², from 16-bit Sobel images and
    ``meanStdDev``: no float images are materialised.
    """
    total = 0.0
    for dx, dy in ((1, 0), (0, 1)):
        mean, std = cv2.meanStdDev(cv2.Sobel(gray, cv2.CV_16S, dx, dy, ksize=3))
        total += float(std[0, 0]) ** 2 + float(mean[0, 0]) ** 2
    return total


def measure(
    image: Any, blur_width: int, dark: int, bright: int, *, reblur_below: float | None = float("inf")
) -> ImageMetrics:
    """The image's metrics; ``blur_effect`` only where the Laplacian variance is below ``reblur_below``.

    A verdict needs the re-blur ratio only for an image the Laplacian already finds short of detail
    (a sharp, textured photo passes on the Laplacian alone), so the screen passes the profile's
    ``min_blur`` and sharp photos cost no more than before; ``None`` never computes it.
    """
    gray_full = to_gray(image)
    h, w = gray_full.shape
    gray = normalise_width(gray_full, blur_width)
    # exposure ratios are area statistics: every 4th pixel in each direction estimates them to
    # well under 1 % and costs a sixteenth of the full histogram
    sample = cv2.resize(
        gray,
        (max(1, gray.shape[1] // 4), max(1, gray.shape[0] // 4)),
        interpolation=cv2.INTER_NEAREST,
    )
    hist = cv2.calcHist([sample], [0], None, [256], [0, 256]).reshape(-1)
    total = float(hist.sum())
    levels = np.arange(256, dtype=np.float64)
    half = np.asarray(cv2.pyrDown(gray), dtype=np.uint8)
    blur = laplacian_variance(gray)
    return ImageMetrics(
        width=int(w),
        height=int(h),
        blur=blur,
        blur_effect=blur_effect(half) if reblur_below is not None and blur < reblur_below else None,
        tenengrad=tenengrad(half),
        mean_luma=float((hist * levels).sum() / total),
        underexposed_ratio=float(hist[: dark + 1].sum() / total),
        overexposed_ratio=float(hist[bright:].sum() / total),
    )
