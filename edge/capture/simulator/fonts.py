"""Digit glyphs for the simulated counter, rendered from a TrueType font with Pillow.

A real counter prints a plain sans-serif (DIN-like) face; DejaVu Sans is close when squeezed a little.
It comes with most Linux systems and with matplotlib; where neither is there, Pillow's built-in
scalable font (Aileron) is used, so the simulator always works, only the glyph shapes differ a little.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_SYSTEM_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path("/usr/share/fonts/TTF")]
_GLYPH_PX = 160  # render size of a glyph before it is scaled into a wheel


def _matplotlib_font_dir() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")  # no import: matplotlib is slow to load and not on the device
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


def font_candidates(bold: bool) -> list[Path]:
    """DejaVu font files found on this machine, best first."""
    names = ["DejaVuSansCondensed-Bold.ttf", "DejaVuSans-Bold.ttf"] if bold else [
        "DejaVuSansCondensed.ttf", "DejaVuSans.ttf"]
    dirs = [*_SYSTEM_DIRS]
    mpl = _matplotlib_font_dir()
    if mpl is not None:
        dirs.append(mpl)
    return [d / n for n in names for d in dirs if (d / n).is_file()]


@lru_cache(maxsize=8)
def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in font_candidates(bold):
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:
            continue
    return ImageFont.load_default(size)


@lru_cache(maxsize=64)
def glyph_mask(char: str, bold: bool = False) -> np.ndarray:
    """A tight float32 coverage mask (0..1) of one character, about _GLYPH_PX high."""
    font = load_font(_GLYPH_PX, bold)
    canvas = Image.new("L", (_GLYPH_PX * 2, _GLYPH_PX * 2), 0)
    ImageDraw.Draw(canvas).text((_GLYPH_PX // 2, _GLYPH_PX // 4), char, fill=255, font=font)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.02)
    if len(ys) == 0:
        raise ValueError(f"font renders nothing for {char!r}")
    mask = arr[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    if char == "1":
        mask = _without_foot(mask)
    return np.ascontiguousarray(mask)


def _without_foot(mask: np.ndarray) -> np.ndarray:
    """DejaVu's 1 stands on a serif foot that counters do not print (and that makes it look like a 7)."""
    h = mask.shape[0]
    stem = mask[int(h * 0.4): int(h * 0.7)].max(axis=0) > 0.5
    cols = np.nonzero(stem)[0]
    out = mask.copy()
    foot = slice(int(h * 0.8), h)
    keep = np.zeros(mask.shape[1], np.float32)
    keep[cols.min(): cols.max() + 1] = 1.0
    out[foot] *= keep[None, :]
    xs = np.nonzero(out.max(axis=0) > 0.02)[0]
    return out[:, xs.min(): xs.max() + 1]


def draw_text(img: np.ndarray, xy: tuple[int, int], text: str, size: int, color: tuple[int, int, int],
              bold: bool = False, anchor: str = "la") -> None:
    """Draw anti-aliased text onto a BGR uint8 image in place (Pillow, any Unicode the font has)."""
    font = load_font(size, bold)
    left, top, right, bottom = font.getbbox(text, anchor=anchor)
    x0, y0 = max(0, xy[0] + int(left) - 2), max(0, xy[1] + int(top) - 2)
    x1, y1 = min(img.shape[1], xy[0] + int(right) + 2), min(img.shape[0], xy[1] + int(bottom) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).text((xy[0] - x0, xy[1] - y0), text, fill=255, font=font, anchor=anchor)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (region * (1 - alpha) + np.array(color, np.float32) * alpha).astype(np.uint8)
