"""The installer's picture: the frame with numbered digit windows, and under it each window enlarged
with what the model reads there. Looking at it is how an installer knows the calibration is right."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.calibrate.layout import Anchor
from meter_vision.geometry import Roi

FONT = cv2.FONT_HERSHEY_SIMPLEX
BG = (32, 32, 32)
FG = (235, 235, 235)
ROI_COLOUR = (60, 230, 60)  # BGR green
DECIMAL_COLOUR = (60, 160, 255)  # orange: digits after the point
ANCHOR_COLOUR = (255, 170, 40)  # blue
WARN_COLOUR = (80, 80, 255)
BAD_COLOUR = (40, 40, 255)  # red: a window that is not on a digit


@dataclass(frozen=True)
class CropReading:
    """What the model read in one window, for the picture: digit (None: N), position 0.0–9.9, confidence."""

    digit: int | None
    value: float
    confidence: float

    def text(self) -> str:
        label = "N" if self.digit is None else str(self.digit)
        return f"{label}  ({self.value:.1f})  p={self.confidence:.2f}"


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int],
          thickness: int = 1) -> None:
    """Text with a dark outline, readable on any background."""
    x, y = org
    for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1), (0, 2)):
        cv2.putText(img, text, (x + dx, y + dy), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    return int(cv2.getTextSize(text, FONT, scale, thickness)[0][0])


def render_picture(
    image: np.ndarray,
    digits: Sequence[Roi],
    *,
    decimals: int = 0,
    anchors: Sequence[Anchor] = (),
    readings: Sequence[CropReading] | None = None,
    model_note: str = "",
    title: str = "",
    zoom: int = 4,
    problems: Sequence[str | None] | None = None,
    value_line: str = "",
) -> np.ndarray:
    """Compose the calibration picture (BGR uint8).

    ``readings`` (one per ROI) come from the digit model; when it is None, ``model_note`` says why
    (e.g. "model not available: …") and is drawn instead. ``problems`` (one per ROI, None when fine)
    draws a window that is not on a digit in red, thick, with "NOT ON A DIGIT" under its crop;
    ``value_line`` (what `meter-edge read` would make of the wheels) is drawn in large type.
    """

    def flagged(i: int) -> bool:
        return problems is not None and i < len(problems) and problems[i] is not None

    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    w = img.shape[1]
    # Small frames are enlarged so the labels stay readable; large ones are shrunk to a sane width.
    view_scale = 2.0 if w < 900 else (1.0 if w <= 1600 else 1600 / w)
    frame = cv2.resize(img, None, fx=view_scale, fy=view_scale,
                       interpolation=cv2.INTER_LINEAR if view_scale >= 1 else cv2.INTER_AREA)
    fw = frame.shape[1]
    label_scale = 0.8 if fw >= 1000 else 0.6
    first_decimal = len(digits) - decimals

    for a in anchors:
        p0 = (int(a.x * view_scale), int(a.y * view_scale))
        p1 = (int((a.x + a.w) * view_scale), int((a.y + a.h) * view_scale))
        cv2.rectangle(frame, p0, p1, ANCHOR_COLOUR, 2, cv2.LINE_AA)
        _text(frame, f"mark {a.name}", (p0[0], max(14, p0[1] - 6)), label_scale * 0.8, ANCHOR_COLOUR)
    for i, r in enumerate(digits):
        colour = BAD_COLOUR if flagged(i) else DECIMAL_COLOUR if i >= first_decimal else ROI_COLOUR
        p0 = (int(r.x * view_scale), int(r.y * view_scale))
        p1 = (int((r.x + r.w) * view_scale), int((r.y + r.h) * view_scale))
        cv2.rectangle(frame, p0, p1, colour, 4 if flagged(i) else 2, cv2.LINE_AA)
        label = str(i + 1)
        tx = p0[0] + (p1[0] - p0[0] - _text_width(label, label_scale * 1.3, 2)) // 2
        ty = p0[1] - 8 if p0[1] > 30 else p1[1] + 28
        _text(frame, label, (tx, ty), label_scale * 1.3, colour, 2)

    # Tiles: each crop enlarged, its number, and what the model reads there.
    max_w = max(r.w for r in digits)
    max_h = max(r.h for r in digits)
    tile_zoom = max(1, min(zoom, 300 // max_h))
    text_scale = 0.55
    caption = 4 * 24 + 10
    widest = max(_text_width(f"{r.x},{r.y} {r.w}x{r.h}", text_scale * 0.8) for r in digits)
    tile_w = max(max_w * tile_zoom, _text_width("pos 9.9  p=0.00", text_scale), widest) + 20
    tile_h = max_h * tile_zoom + caption + 20
    per_row = max(1, fw // tile_w)
    rows = (len(digits) + per_row - 1) // per_row
    header_h = 40
    footer = [t for t in (model_note, title) if t]
    value_h = 44 if value_line else 0
    footer_h = 30 * len(footer) + 10
    out = np.full((frame.shape[0] + header_h + rows * tile_h + value_h + footer_h, fw, 3), BG, np.uint8)
    out[: frame.shape[0]] = frame
    y0 = frame.shape[0]
    legend = f"{len(digits)} digit windows (green: integer"
    legend += ", orange: after the decimal point)" if decimals else ")"
    if anchors:
        legend += ", blue: alignment marks"
    _text(out, legend, (10, y0 + 27), 0.6, FG)
    y0 += header_h
    margin = (fw - min(per_row, len(digits)) * tile_w) // 2
    for i, r in enumerate(digits):
        row, col = divmod(i, per_row)
        x = margin + col * tile_w + 10
        y = y0 + row * tile_h
        crop = img[r.y : r.y + r.h, r.x : r.x + r.w]
        big = cv2.resize(crop, (r.w * tile_zoom, r.h * tile_zoom), interpolation=cv2.INTER_NEAREST)
        colour = BAD_COLOUR if flagged(i) else DECIMAL_COLOUR if i >= first_decimal else ROI_COLOUR
        bx = x + (tile_w - 20 - big.shape[1]) // 2
        out[y : y + big.shape[0], bx : bx + big.shape[1]] = big
        cv2.rectangle(out, (bx - 1, y - 1), (bx + big.shape[1], y + big.shape[0]), colour, 3 if flagged(i) else 1)
        ty = y + big.shape[0] + 26
        if readings is not None and i < len(readings):
            rd = readings[i]
            shade = WARN_COLOUR if rd.digit is None else FG
            _text(out, f"#{i + 1}  reads {'N' if rd.digit is None else rd.digit}", (x, ty), text_scale * 1.2,
                  shade, 2)
            _text(out, f"pos {rd.value:.1f}  p={rd.confidence:.2f}", (x, ty + 24), text_scale, shade)
        else:
            _text(out, f"#{i + 1}", (x, ty), text_scale * 1.2, colour, 2)
        _text(out, f"{r.x},{r.y} {r.w}x{r.h}", (x, ty + 46), text_scale * 0.8, colour)
        if flagged(i):
            _text(out, "NOT ON A DIGIT", (x, ty + 70), text_scale, BAD_COLOUR, 2)
    if value_line:
        vy = out.shape[0] - footer_h - value_h + 32
        shade = BAD_COLOUR if problems is not None and any(p is not None for p in problems) else FG
        _text(out, _fit(value_line, fw - 20, 0.8), (10, vy), 0.8, shade, 2)
    fy = out.shape[0] - footer_h + 25
    for line in footer:
        colour = WARN_COLOUR if line.startswith("model not available") else FG
        _text(out, _fit(line, fw - 20, 0.55), (10, fy), 0.55, colour)
        fy += 30
    return out


def _fit(text: str, width: int, scale: float) -> str:
    """Shorten ``text`` with "..." until it fits ``width`` pixels."""
    if _text_width(text, scale) <= width:
        return text
    while len(text) > 4 and _text_width(text + "...", scale) > width:
        text = text[:-1]
    return text + "..."
