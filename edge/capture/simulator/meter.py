"""Renders photos of a virtual cold-water meter: a round dial with a counter window of 8 wheels.

Five integer wheels (black digits on light drums) and three decimal wheels (red), as on the cold-water
meters of the seed's city. Each wheel is a drum seen through its window: position k + f shows digit k
moved up by f of a digit pitch with k + 1 rolling in from below, compressed and shaded towards the
window's edges by the drum's curvature. Upper wheels move only while the wheel below them rolls from
9 to 0, as in a real odometer. Geometry is fixed (640x480 like an ESP32-CAM), so `SIM_ROIS` is a
calibration that fits every frame not moved by a geometric fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from edge.capture.simulator.faults import Faults, apply_geometric, apply_photometric
from edge.capture.simulator.fonts import draw_text, glyph_mask

FRAME_W, FRAME_H = 640, 480
N_INT, N_DEC = 5, 3
N_WHEELS = N_INT + N_DEC
WHEEL_W, WHEEL_H = 30, 48
WHEEL_STEP = 36          # x distance between neighbouring wheel windows
WHEEL_X0, WHEEL_Y0 = 176, 150
CENTER = (320, 250)
FACE_R = 200
SS = 4                   # supersampling of the wheel drums

ROIS: list[tuple[int, int, int, int]] = [
    (WHEEL_X0 + i * WHEEL_STEP, WHEEL_Y0, WHEEL_W, WHEEL_H) for i in range(N_WHEELS)]
SIM_ROIS = ";".join(",".join(str(v) for v in r) for r in ROIS)
WINDOW = (WHEEL_X0 - 10, WHEEL_Y0 - 10, N_WHEELS * WHEEL_STEP - WHEEL_STEP + WHEEL_W + 20, WHEEL_H + 20)

BGR = tuple[int, int, int]


@dataclass(frozen=True)
class MeterStyle:
    """The look of one meter. `default()` is the demo meter; `random()` varies it for training crops."""

    face: BGR = (232, 236, 238)
    window: BGR = (28, 28, 30)
    drum: BGR = (226, 230, 232)
    ink: BGR = (28, 28, 32)
    dec_drum: BGR = (226, 230, 232)
    dec_ink: BGR = (40, 38, 200)
    digit_h: float = 29.0       # glyph height in frame pixels
    digit_w: float = 17.0       # glyph width in frame pixels
    pitch: float = 42.0         # distance between consecutive digits on a drum (arc length)
    drum_r: float = 30.0        # drum radius in frame pixels (curvature)
    bold: bool = False
    ring: BGR = (70, 120, 150)  # body ring (brass-like)
    light_x: float = 0.45       # where the flash LED's hot spot sits (fraction of the width)
    light_y: float = 0.40
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the camera's white balance (B, G, R gains)
    lens_blur: float = 0.5      # sigma in pixels: a cheap camera module is never pixel-sharp

    @classmethod
    def default(cls) -> MeterStyle:
        return cls()

    @classmethod
    def random(cls, rng: np.random.Generator) -> MeterStyle:
        def jitter(c: BGR, amount: int) -> BGR:
            return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]

        light = int(rng.integers(195, 245))
        drum: BGR = jitter((light, light + 3, light + 5), 8)
        red_on_light = rng.random() < 0.7
        red: BGR = jitter((40, 40, 190), 25)
        dh = float(rng.uniform(25, 33))
        return cls(
            face=jitter((232, 236, 238), 14),
            window=jitter((28, 28, 30), 14),
            drum=drum,
            ink=jitter((30, 30, 34), 18),
            dec_drum=drum if red_on_light else red,
            dec_ink=red if red_on_light else jitter((230, 232, 235), 12),
            digit_h=dh,
            digit_w=dh * float(rng.uniform(0.52, 0.68)),
            pitch=dh * float(rng.uniform(1.35, 1.6)),
            drum_r=float(rng.uniform(27, 40)),
            bold=bool(rng.random() < 0.4),
            ring=jitter((70, 120, 150), 40),
            light_x=float(rng.uniform(0.3, 0.7)),
            light_y=float(rng.uniform(0.25, 0.6)),
            tint=(float(rng.uniform(0.88, 1.08)), float(rng.uniform(0.95, 1.06)), float(rng.uniform(0.9, 1.1))),
            lens_blur=float(rng.uniform(0.3, 1.0)),
        )


def wheel_positions(value: float) -> list[float]:
    """Where each of the 8 wheels stands (0.0 ≤ p < 10), left to right, for a meter value in m³.

    The last wheel turns continuously; every other wheel moves only while the wheel to its right
    rolls from 9 to 0 (odometer carry).
    """
    if not 0 <= value < 10 ** N_INT:
        raise ValueError(f"meter value {value} outside 0 ≤ v < {10 ** N_INT}")
    units = value * 10 ** N_DEC
    positions = [units % 10.0]
    for k in range(1, N_WHEELS):
        below = positions[-1]
        digit = math.floor(units / 10 ** k + 1e-9) % 10
        positions.append(digit + max(0.0, below - 9.0))
    return positions[::-1]


def format_value(value: float) -> str:
    """What the counter shows: 8 digits with 3 decimals, e.g. `00123.456` (never rounded up)."""
    milli = math.floor(value * 10 ** N_DEC + 1e-6)
    return f"{milli // 10 ** N_DEC:0{N_INT}d}.{milli % 10 ** N_DEC:0{N_DEC}d}"


@lru_cache(maxsize=64)
def _drum_strip(style: MeterStyle, decimal: bool) -> np.ndarray:
    """The drum unrolled (supersampled): digits -1..11 stacked at `pitch`, digit d centred at (d+1.5)·pitch."""
    bg = np.array(style.dec_drum if decimal else style.drum, np.float32)
    ink = np.array(style.dec_ink if decimal else style.ink, np.float32)
    w = WHEEL_W * SS
    pitch = style.pitch * SS
    h = math.ceil(13 * pitch)
    strip = np.empty((h, w, 3), np.float32)
    strip[:] = bg
    gh = round(style.digit_h * SS)
    x_scale = style.digit_w * SS / glyph_mask("0", style.bold).shape[1]  # a 0 is digit_w wide, the rest in proportion
    for j in range(-1, 12):
        mask = glyph_mask(str(j % 10), style.bold)
        gw = min(w - 2, round(mask.shape[1] * x_scale))
        glyph = cv2.resize(mask, (gw, gh), interpolation=cv2.INTER_AREA)
        cy = (j + 1.5) * pitch
        y0, x0 = round(cy - gh / 2), round((w - gw) / 2)
        a = glyph[..., None]
        strip[y0:y0 + gh, x0:x0 + gw] = strip[y0:y0 + gh, x0:x0 + gw] * (1 - a) + ink * a
    return strip


@lru_cache(maxsize=64)
def _drum_maps(style: MeterStyle) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets (arc length from the window centre) and shading of the curved drum, supersampled."""
    h, w = WHEEL_H * SS, WHEEL_W * SS
    r = style.drum_r * SS
    yc = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / r
    theta = np.arcsin(np.clip(yc, -0.999, 0.999))
    arc = (r * theta).astype(np.float32)
    shade_y = 0.45 + 0.55 * np.cos(theta) ** 1.5
    top = 1 - 0.45 * np.exp(-(np.arange(h) / (5.0 * SS)))  # the window's upper lip casts a shadow
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    shade_x = 1 - 0.18 * xs ** 4
    shade = (shade_y * top)[:, None] * shade_x[None, :]
    return np.repeat(arc[:, None], w, axis=1), shade.astype(np.float32)


def render_wheel(position: float, style: MeterStyle | None = None, decimal: bool = False) -> np.ndarray:
    """One wheel as seen through its window (WHEEL_H x WHEEL_W BGR) at `position` 0.0 ≤ p < 10."""
    style = style or MeterStyle.default()
    strip = _drum_strip(style, decimal)
    arc, shade = _drum_maps(style)
    centre = (position % 10.0 + 1.5) * style.pitch * SS
    map_y = arc + np.float32(centre)
    map_x = np.broadcast_to(np.arange(WHEEL_W * SS, dtype=np.float32)[None, :], map_y.shape).copy()
    big = cv2.remap(strip, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    big *= shade[..., None]
    small = cv2.resize(big, (WHEEL_W, WHEEL_H), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _base(style: MeterStyle) -> np.ndarray:
    """Everything that does not move: housing, ring, face with print, the counter window's frame."""
    img = np.empty((FRAME_H, FRAME_W, 3), np.uint8)
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    img[:] = np.clip(38 + 14 * (yy / FRAME_H)[..., None] - 8 * (xx / FRAME_W)[..., None], 0, 255).astype(np.uint8)
    cx, cy = CENTER
    cv2.circle(img, CENTER, FACE_R + 34, (24, 24, 26), -1, cv2.LINE_AA)
    cv2.circle(img, CENTER, FACE_R + 28, style.ring, -1, cv2.LINE_AA)
    cv2.circle(img, CENTER, FACE_R + 28, tuple(int(c * 0.6) for c in style.ring), 2, cv2.LINE_AA)
    cv2.circle(img, CENTER, FACE_R + 8, (60, 62, 66), -1, cv2.LINE_AA)
    cv2.circle(img, CENTER, FACE_R, style.face, -1, cv2.LINE_AA)
    for i in range(60):  # scale ring printed on the face
        a = math.radians(i * 6)
        r0 = FACE_R - (12 if i % 5 == 0 else 7)
        p0 = (int(cx + r0 * math.cos(a)), int(cy + r0 * math.sin(a)))
        p1 = (int(cx + (FACE_R - 3) * math.cos(a)), int(cy + (FACE_R - 3) * math.sin(a)))
        cv2.line(img, p0, p1, (90, 90, 95), 1, cv2.LINE_AA)
    wx, wy, ww, wh = WINDOW
    cv2.rectangle(img, (wx - 4, wy - 4), (wx + ww + 4, wy + wh + 4), (150, 152, 156), -1, cv2.LINE_AA)
    cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), style.window, -1)
    dec_x0 = WHEEL_X0 + N_INT * WHEEL_STEP - 5
    cv2.rectangle(img, (dec_x0, wy + 2), (wx + ww - 3, wy + wh - 2), (30, 30, 150), 2, cv2.LINE_AA)
    ink = (40, 40, 44)
    draw_text(img, (cx, 92), "ВСКМ 90-15", 22, ink, bold=True, anchor="ms")
    draw_text(img, (cx, 118), "№ 23041977   2023", 14, ink, anchor="ms")
    draw_text(img, (wx + ww, wy + wh + 24), "m³", 20, ink, bold=True, anchor="rs")
    draw_text(img, (wx + 2, wy + wh + 22), "x1", 13, ink, anchor="ls")
    draw_text(img, (dec_x0 + 4, wy + wh + 22), "x0,001", 13, (30, 30, 160), anchor="ls")
    draw_text(img, (cx, 282), "Qn 1,5 m³/h   DN 15", 15, ink, anchor="ms")
    draw_text(img, (cx, 302), "КЛАСС B-H  A-V", 15, ink, anchor="ms")
    draw_text(img, (cx, 410), "t ≤ 30°C   PN 10", 13, ink, anchor="ms")
    draw_text(img, (238, 388), "ГОСТ Р 50193", 11, ink, anchor="ms")
    for k in range(10):  # the x0.0001 dial's scale
        a = math.radians(-90 + k * 36)
        dx, dy = math.cos(a), math.sin(a)
        cv2.line(img, (int(405 + 24 * dx), int(345 + 24 * dy)), (int(405 + 30 * dx), int(345 + 30 * dy)),
                 (50, 50, 55), 1, cv2.LINE_AA)
        draw_text(img, (int(405 + 38 * dx), int(345 + 38 * dy) + 4), str(k), 10, (50, 50, 55), anchor="ms")
    cv2.circle(img, (405, 345), 31, (70, 70, 75), 1, cv2.LINE_AA)
    cv2.circle(img, (238, 345), 24, (70, 70, 75), 1, cv2.LINE_AA)
    return img


@lru_cache(maxsize=16)
def _illumination(style: MeterStyle) -> np.ndarray:
    """The flash LED's uneven light and the lens's vignetting, as a multiplicative gain."""
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    lx, ly = style.light_x * FRAME_W, style.light_y * FRAME_H
    hot = np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * 260.0 ** 2))
    vig = 1 - 0.25 * (((xx - FRAME_W / 2) / (FRAME_W / 2)) ** 2 + ((yy - FRAME_H / 2) / (FRAME_H / 2)) ** 2) / 2
    return ((0.72 + 0.33 * hot) * vig)[..., None].astype(np.float32) * np.array(style.tint, np.float32)


def _draw_moving_parts(img: np.ndarray, value: float) -> None:
    """The x0.0001 pointer and the flow indicator star, which turn with the water."""
    a = math.radians(-90 + (value * 10_000 % 10) * 36)
    tip = (int(405 + 26 * math.cos(a)), int(345 + 26 * math.sin(a)))
    tail = (int(405 - 7 * math.cos(a)), int(345 - 7 * math.sin(a)))
    cv2.line(img, tail, tip, (30, 30, 190), 4, cv2.LINE_AA)
    cv2.circle(img, (405, 345), 6, (30, 30, 170), -1, cv2.LINE_AA)
    star = value * 50_000 % 360
    for k in range(6):
        b = math.radians(star + k * 60)
        cv2.line(img, (238, 345), (int(238 + 20 * math.cos(b)), int(345 + 20 * math.sin(b))),
                 (40, 40, 180), 5, cv2.LINE_AA)
    cv2.circle(img, (238, 345), 6, (200, 200, 205), -1, cv2.LINE_AA)


def render_clean(positions: list[float], style: MeterStyle | None = None, dial_value: float = 0.0) -> np.ndarray:
    """A fault-free frame with the wheels at `positions` (8 floats, left to right)."""
    if len(positions) != N_WHEELS:
        raise ValueError(f"need {N_WHEELS} wheel positions, got {len(positions)}")
    style = style or MeterStyle.default()
    img = _base(style).copy()
    for i, (p, (x, y, w, h)) in enumerate(zip(positions, ROIS, strict=True)):
        img[y:y + h, x:x + w] = render_wheel(p, style, decimal=i >= N_INT)
    _draw_moving_parts(img, dial_value)
    lit = img.astype(np.float32) * _illumination(style)
    if style.lens_blur > 0:
        lit = cv2.GaussianBlur(lit, (0, 0), style.lens_blur)
    return np.clip(lit, 0, 255).astype(np.uint8)


def render_frame(value: float, faults: Faults | None = None, rng: np.random.Generator | None = None,
                 style: MeterStyle | None = None) -> np.ndarray:
    """A photo of the meter at `value` m³ with `faults` applied (None: clean, with sensor noise)."""
    faults = faults or Faults()
    rng = rng or np.random.default_rng()
    img = render_clean(wheel_positions(value), style, dial_value=value)
    img = apply_geometric(img, faults)
    return apply_photometric(img, faults, rng)


def render_reference(value: float = 123.456, style: MeterStyle | None = None) -> np.ndarray:
    """A clean frame (no faults, no noise) for the installer to calibrate on."""
    return render_clean(wheel_positions(value), style, dial_value=value)
