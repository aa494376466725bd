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

Half the rows (``screening_bands``): blur, Tenengrad and exposure are estimated from bands of 16
rows every 32 rows at the screening width (1920 x 1080: 24 source rows every 48), converted and
resized as one strided view, which keeps the screen close to the cost of one Laplacian on the
source frame (the rows between the bands are never read). Every value kept is the full image's: the
bands' grey rows at the screening width equal the full image's rows (bilinear sampling stays inside
the band and lines up with the full image's grid), and each band drops the rows whose Laplacian
(1 at each end) or whose pyrDown and Sobel (2 rows of the half-width copy at each end) would reach
past it. The statistics are those of about half the pixels (the Laplacian of 44 %, the Sobels of
25 % of the half-width copy): over ``bench/eval_blur.py``'s 690 images (115 scenes, sharp and at
sigma 1-6) the blur score is within 0.5 % of the whole image's at the median, 2.8 % at the 95th
percentile and 8.2 % at most, Tenengrad within 1.6 / 7.6 / 16.4 %, the mean luma within 1.3 levels
and the exposure ratios within 0.004; eval_blur's verdicts are the same. Bands of 32 every 64 rows
aliased with a page of text (blur 48 % off). The re-blur ratio, needed only for low-detail images,
reads the whole image. ``measure_full`` is the whole-image path: for images under ``MIN_BANDS``
bands tall, upscales, heights that do not map to whole rows at the screening width (1920 x 1280
does not: 853.3 rows), scales that are no short binary fraction (4032 px: 63/20), and the tests'
reference.
"""

from __future__ import annotations

import dataclasses
import math
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


def _conversion(image: Any) -> int | None:
    """The ``cvtColor`` code that makes ``image`` gray (None: already gray); a MediaError for
    anything that is not a uint8 HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA) image of 8x8 px or more."""
    if not isinstance(image, np.ndarray):
        raise MediaError(f"expected a numpy image array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise MediaError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        code = {1: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}[image.shape[2]]
    elif image.ndim == 2:
        code = None
    else:
        raise MediaError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise MediaError(f"image of {image.shape[1]}x{image.shape[0]} px is too small to screen")
    return code


def to_gray(image: Any) -> UInt8Array:
    """BGR, BGRA or gray uint8 → gray uint8; anything else is a MediaError."""
    code = _conversion(image)
    if code is not None:
        return np.asarray(cv2.cvtColor(image, code), np.uint8)
    return np.ascontiguousarray(image if image.ndim == 2 else image[:, :, 0])


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


# the band estimate: BAND_ROWS screening-width rows out of every BAND_PERIOD (half the image)
BAND_ROWS = 16
BAND_PERIOD = 32
MIN_BANDS = 8  # shorter images (under 240 rows at the screening width) take the full-image path
_LAPLACIAN_MARGIN = 1  # band rows whose 3x3 Laplacian reaches past the band (border reflection)
_SOBEL_MARGIN = 2  # rows of a band's pyrDown whose 5-tap window, or the 3x3 Sobel after it, does


@dataclasses.dataclass(frozen=True)
class Bands:
    """Bands of the image at the screening width, stacked: ``gray`` holds ``count`` bands of
    ``BAND_ROWS`` rows; band ``k`` is rows ``first + k * BAND_PERIOD`` onwards of the full
    screening-width image, and equals them pixel for pixel."""

    gray: UInt8Array
    first: int
    count: int

    def rows(self) -> npt.NDArray[np.intp]:
        """The full image's screening-width row of each stacked row."""
        starts = self.first + BAND_PERIOD * np.arange(self.count)
        return (starts[:, None] + np.arange(BAND_ROWS)).reshape(-1)


def screening_bands(image: Any, width: int) -> Bands | None:
    """The image's bands at the screening ``width``, grey; None where they would not equal the
    full image's rows (see the module docstring) or the image is less than ``MIN_BANDS`` bands
    tall: the caller then takes the full-image path.

    The source rows of a band are contiguous in a C-contiguous image, so one strided view holds
    all bands and one ``cvtColor`` and one ``resize`` convert them. Bilinear resizing samples
    output row ``r`` at source ``(r + 0.5) * s - 0.5`` (scale ``s = w / width``): a band that
    starts at a source row ``r0 * s`` maps exactly onto output rows ``r0 ...`` when ``r0 * s``
    is a whole row and the products are exact (``s`` = p/q with q a power of two: 1920, 2560,
    3200, 3840, 4000 px wide to 1280), and for a shrink (s >= 1) every sample lies inside its band.
    """
    code = _conversion(image)
    h, w = image.shape[:2]
    if w < width or h * width % w or not image.flags.c_contiguous:
        return None
    divisor = math.gcd(w, width)
    p, q = w // divisor, width // divisor
    if q & (q - 1) or BAND_ROWS % q:
        return None  # a scale that is no short binary fraction
    height = h * width // w
    count = (height - BAND_ROWS) // BAND_PERIOD + 1
    if count < MIN_BANDS:
        return None
    align = max(q, 4)  # whole source rows; even rows for pyrDown and the 4th-pixel histogram
    first = (height - (count - 1) * BAND_PERIOD - BAND_ROWS) // 2 // align * align
    assert (first + (count - 1) * BAND_PERIOD + BAND_ROWS) * p // q <= h  # the view stays inside
    channels = 1 if image.ndim == 2 else image.shape[2]
    step = image.strides[0]
    shape: tuple[int, ...] = (count, BAND_ROWS * p // q * w)
    strides: tuple[int, ...] = (BAND_PERIOD * p // q * step, channels)
    if channels > 1:
        shape, strides = (*shape, channels), (*strides, 1)
    view = np.lib.stride_tricks.as_strided(image[first * p // q :], shape, strides, writeable=False)
    gray = cv2.cvtColor(view, code) if code is not None else np.ascontiguousarray(view)
    gray = gray.reshape(-1, w)
    if w != width:
        gray = cv2.resize(gray, (width, count * BAND_ROWS), interpolation=cv2.INTER_LINEAR)
    return Bands(np.asarray(gray, np.uint8), first, count)


def band_interior(values: npt.NDArray[Any], rows: int, margin: int) -> npt.NDArray[Any]:
    """``values`` stacked in bands of ``rows`` rows, less ``margin`` rows at both ends of each
    band: a 2D view (one line per band) for ``meanStdDev``."""
    cols = values.shape[1]
    return values.reshape(-1, rows * cols)[:, margin * cols : (rows - margin) * cols]


def _exposure_histogram(gray: UInt8Array) -> npt.NDArray[np.float32]:
    # exposure ratios are area statistics: every 4th pixel in each direction estimates them to
    # well under 1 % and costs a sixteenth of the full histogram
    sample = cv2.resize(
        gray,
        (max(1, gray.shape[1] // 4), max(1, gray.shape[0] // 4)),
        interpolation=cv2.INTER_NEAREST,
    )
    return np.asarray(cv2.calcHist([sample], [0], None, [256], [0, 256]).reshape(-1), np.float32)


def measure(
    image: Any, blur_width: int, dark: int, bright: int, *, reblur_below: float | None = float("inf")
) -> ImageMetrics:
    """The image's metrics; ``blur_effect`` only where the Laplacian variance is below ``reblur_below``.

    A verdict needs the re-blur ratio only for an image the Laplacian already finds short of detail
    (a sharp, textured photo passes on the Laplacian alone), so the screen passes the profile's
    ``min_blur`` and sharp photos cost no more than before; ``None`` never computes it.

    Blur, Tenengrad and exposure come from half the rows (``screening_bands``) where the image
    allows it, else from the whole image (``measure_full``).
    """
    bands = screening_bands(image, blur_width)
    if bands is None:
        return measure_full(image, blur_width, dark, bright, reblur_below=reblur_below)
    h, w = image.shape[:2]
    laplacian = band_interior(cv2.Laplacian(bands.gray, cv2.CV_16S), BAND_ROWS, _LAPLACIAN_MARGIN)
    blur = float(cv2.meanStdDev(laplacian)[1][0, 0]) ** 2
    half = cv2.pyrDown(bands.gray)
    gradient = 0.0
    for dx, dy in ((1, 0), (0, 1)):
        sobel = band_interior(cv2.Sobel(half, cv2.CV_16S, dx, dy, ksize=3), BAND_ROWS // 2, _SOBEL_MARGIN)
        mean, std = cv2.meanStdDev(sobel)
        gradient += float(std[0, 0]) ** 2 + float(mean[0, 0]) ** 2
    effect = None
    if reblur_below is not None and blur < reblur_below:  # rare: judged on the whole image
        effect = blur_effect(np.asarray(cv2.pyrDown(normalise_width(to_gray(image), blur_width)), np.uint8))
    return _metrics(w, h, blur, effect, gradient, _exposure_histogram(bands.gray), dark, bright)


def _metrics(
    w: int,
    h: int,
    blur: float,
    effect: float | None,
    gradient: float,
    hist: npt.NDArray[np.float32],
    dark: int,
    bright: int,
) -> ImageMetrics:
    total = float(hist.sum())
    levels = np.arange(256, dtype=np.float64)
    return ImageMetrics(
        width=int(w),
        height=int(h),
        blur=blur,
        blur_effect=effect,
        tenengrad=gradient,
        mean_luma=float((hist * levels).sum() / total),
        underexposed_ratio=float(hist[: dark + 1].sum() / total),
        overexposed_ratio=float(hist[bright:].sum() / total),
    )


def measure_full(
    image: Any, blur_width: int, dark: int, bright: int, *, reblur_below: float | None = float("inf")
) -> ImageMetrics:
    """``measure`` from every row of the image: the reference for the band estimate, and the
    path for images the bands do not fit."""
    gray_full = to_gray(image)
    h, w = gray_full.shape
    gray = normalise_width(gray_full, blur_width)
    half = np.asarray(cv2.pyrDown(gray), dtype=np.uint8)
    blur = laplacian_variance(gray)
    effect = blur_effect(half) if reblur_below is not None and blur < reblur_below else None
    return _metrics(w, h, blur, effect, tenengrad(half), _exposure_histogram(gray), dark, bright)
