"""Large type in a terminal: the prompt drawn with a real font into half-block characters.

A terminal cannot change its font size, but each character cell can show two square "pixels"
stacked (``▀``, ``▄``, ``█``). The prompt is rasterised with a TrueType font that covers all of
its characters (found through fontconfig, so Chinese prompts get a CJK font and Latin ones a sans
font) at the largest size that fits the space given, on one to three balanced lines. Without
Pillow, fontconfig or a font covering the text, ``big_lines`` returns None and the UI shows the
prompt as ordinary bold text; the plain text is always shown under the large one as well.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

__all__ = ["big_lines", "find_font"]

MIN_PX = 12  # below this a glyph (a CJK one above all) is no longer legible as pixels
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")


@functools.lru_cache(maxsize=64)
def _font_for_charset(charset: str) -> str | None:
    if shutil.which("fc-list") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-list", f":charset={charset}", "file", "style"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    best: tuple[int, str] | None = None
    for line in out.splitlines():
        path, _, style = line.partition(":")
        path, low = path.strip(), line.lower()
        if not path.lower().endswith(FONT_EXTENSIONS):
            continue
        score = 4 * ("sans" in low and "mono" not in low) + 2 * ("bold" in style.lower()) - 3 * ("italic" in low)
        score -= 3 * ("oblique" in low or "condensed" in low or "math" in low)
        if best is None or (score, path) > best:
            best = (score, path)
    return None if best is None else best[1]


def find_font(text: str) -> str | None:
    """A font file that has every (non-space) character of ``text``, or None."""
    codes = sorted({ord(c) for c in text if not c.isspace()})
    if not codes:
        return None
    return _font_for_charset(" ".join(f"{c:x}" for c in codes))


def _split(text: str, parts: int) -> list[str]:
    """``text`` on ``parts`` lines of similar length (at spaces when it has any)."""
    words = text.split()
    if parts == 1:
        return [" ".join(words)]
    if len(words) == 1:  # no spaces (Chinese, Japanese): split between characters
        size = -(-len(text) // parts)
        return [text[i : i + size] for i in range(0, len(text), size)]
    target = len(" ".join(words)) / parts
    lines: list[str] = []
    current: list[str] = []
    for word in words:
        if current and len(" ".join([*current, word])) > target and len(lines) < parts - 1:
            lines.append(" ".join(current))
            current = []
        current.append(word)
    lines.append(" ".join(current))
    return lines


def _pillow() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    return Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=32)
def big_lines(text: str, width: int, height: int) -> tuple[str, ...] | None:
    """``text`` as at most ``height`` rows of at most ``width`` columns of half blocks, or None."""
    text = " ".join(text.split())
    pil = _pillow()
    path = find_font(text)
    if pil is None or path is None or width < 4 or height < 3:
        return None
    image_mod, draw_mod, font_mod = pil
    best: tuple[int, list[str]] | None = None
    for parts in (1, 2, 3):
        lines = [ln for ln in _split(text, parts) if ln]
        if len(lines) < parts and parts > 1:
            break
        lo, hi, fit = MIN_PX, max(MIN_PX, 2 * height // len(lines)), None
        while lo <= hi:  # the largest pixel size at which every line fits
            size = (lo + hi) // 2
            font = font_mod.truetype(path, size)
            boxes = [font.getbbox(ln) for ln in lines]
            w = max(b[2] - b[0] for b in boxes)
            line_h = size * 1.15
            if w <= width and line_h * len(lines) <= 2 * height:
                fit, lo = size, size + 1
            else:
                hi = size - 1
        if fit is not None and (best is None or fit > best[0]):
            best = (fit, lines)
    if best is None:
        return None
    size, lines = best
    font = font_mod.truetype(path, size)
    line_h = round(size * 1.15)
    img = image_mod.new("L", (width, line_h * len(lines)), 0)
    draw = draw_mod.Draw(img)
    for n, line in enumerate(lines):
        left, _, right, _ = font.getbbox(line)
        x = (width - (right - left)) // 2 - left  # centre the ink, not the advance box
        draw.text((x, n * line_h), line, font=font, fill=255)
    return _blocks(img, width)


def _blocks(img: Any, width: int) -> tuple[str, ...] | None:
    """Half-block rows of a greyscale image, blank rows at the top and bottom removed."""
    px = img.load()
    w, h = img.size
    rows = []
    for y in range(0, h, 2):
        row = []
        for x in range(w):
            top = px[x, y] >= 128
            bottom = y + 1 < h and px[x, y + 1] >= 128
            row.append("█" if top and bottom else "▀" if top else "▄" if bottom else " ")
        rows.append("".join(row).rstrip())
    while rows and not rows[0]:
        rows.pop(0)
    while rows and not rows[-1]:
        rows.pop()
    return tuple(r.ljust(width)[:width] for r in rows) or None
