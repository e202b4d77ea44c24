"""Simulated phone photos of a water meter: what a resident sends, not what a fixed camera sees.

The meter of :mod:`edge.capture.simulator.meter` (a random style: drum and ink colours, glyph sizes, red
decimal wheels on light or red drums) is cut out along its round housing and put into a larger scene at
an arbitrary place, size and angle, seen obliquely (a perspective warp), with things a photo of a meter
in a cupboard has: a wall and pipes, a sticker with a printed number, a ruler or a sheet of paper with
digits, a finger in front of the glass, flash glare, dirty glass, shake or defocus, sensor noise and
JPEG compression. The truth comes with it: the value the counter shows, and the counter window's box
and each wheel's centre in the scene's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.capture.simulator.fonts import draw_text
from edge.capture.simulator.meter import (
    CENTER,
    FACE_R,
    N_DEC,
    N_INT,
    ROIS,
    WINDOW,
    MeterStyle,
    format_value,
    render_clean,
    wheel_positions,
)


@dataclass(frozen=True)
class PhonePhoto:
    """One simulated photo and what it shows."""

    image: np.ndarray
    value: str  # what the counter shows, all wheels: "00123.456"
    reading: float  # the meter's value in m³ (the lowest wheel may be on its way to the next digit)
    digits: int
    decimals: int
    counter_box: tuple[int, int, int, int]  # x, y, w, h of the counter window in the photo
    wheel_centres: list[tuple[float, float]]
    tags: tuple[str, ...] = field(default=())
    occluded_wheels: tuple[int, ...] = field(default=())  # wheels (from the left) a finger hides


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array([120, 150, 205]) * rng.uniform(0.55, 1.05)
    return tuple(int(v) for v in np.clip(base + rng.integers(-15, 16, 3), 0, 255))  # type: ignore[return-value]


def _background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A wall or cupboard: a shaded colour with texture, a pipe or two, maybe tiles."""
    colour = rng.integers(60, 230, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    shade = 0.75 + 0.35 * ((xx / w) * math.cos(a) + (yy / h) * math.sin(a))
    img = colour[None, None, :] * shade[..., None]
    noise = cv2.GaussianBlur(rng.normal(0, 18, (h // 8 + 1, w // 8 + 1)).astype(np.float32), (0, 0), 1.5)
    img += cv2.resize(noise, (w, h))[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # tiles
        step = int(rng.integers(w // 8, w // 4))
        grout = tuple(int(c) for c in rng.integers(150, 230, 3))
        for x in range(int(rng.integers(0, step)), w, step):
            cv2.line(img, (x, 0), (x, h), grout, max(2, w // 400))
        for y in range(int(rng.integers(0, step)), h, step):
            cv2.line(img, (0, y), (w, y), grout, max(2, w // 400))
    for _ in range(int(rng.integers(0, 3))):  # pipes
        thick = int(rng.integers(w // 30, w // 10))
        c = tuple(int(v) for v in rng.integers(40, 220, 3))
        if rng.random() < 0.5:
            x = int(rng.integers(0, w))
            cv2.line(img, (x, 0), (x + int(rng.integers(-w // 10, w // 10)), h), c, thick)
        else:
            y = int(rng.integers(0, h))
            cv2.line(img, (0, y), (w, y + int(rng.integers(-h // 10, h // 10))), c, thick)
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator, avoid: np.ndarray) -> list[str]:
    """Other things with digits on them: a sticker with a number, a ruler, a paper note."""
    h, w = img.shape[:2]
    tags = []
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["sticker", "ruler", "note"])
        size = int(rng.integers(min(w, h) // 30, min(w, h) // 14))
        for _try in range(10):
            x, y = int(rng.integers(0, max(1, w - 8 * size))), int(rng.integers(size, max(size + 1, h - 2 * size)))
            box = avoid[max(0, y - size):y + 2 * size, max(0, x - size):x + 8 * size]
            if not box.any():
                break
        else:
            continue
        if kind == "sticker":
            text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(5, 9))))
            colour = tuple(int(v) for v in rng.integers(180, 255, 3))
            cv2.rectangle(img, (x - size // 3, y - size), (x + int(len(text) * 0.62 * size) + size // 3, y + size // 2),
                          colour, -1)
            draw_text(img, (x, y), text, size, (20, 20, 20), bold=bool(rng.random() < 0.5), anchor="ls")
        elif kind == "ruler":
            length = int(rng.integers(6, 12))
            cv2.rectangle(img, (x - size // 2, y - size), (x + length * size, y + size // 2), (60, 200, 230), -1)
            for k in range(length):
                cv2.line(img, (x + k * size, y - size), (x + k * size, y - size // 2), (20, 20, 20), 2)
                draw_text(img, (x + k * size, y + size // 3), str(k), int(size * 0.7), (20, 20, 20), anchor="ms")
        else:
            colour = (235, 240, 245)
            lines = int(rng.integers(1, 3))
            cv2.rectangle(img, (x - size // 2, y - size), (x + 7 * size, y + lines * size + size // 2), colour, -1)
            for k in range(lines):
                text = f"{rng.integers(1, 28):02d}.{rng.integers(1, 13):02d} {rng.integers(100, 999)}"
                draw_text(img, (x, y + k * size), text, int(size * 0.8), (120, 60, 30), anchor="ls")
        tags.append(kind)
    return tags


def _meter_cutout(style: MeterStyle, value: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The rendered meter (640x480) and a mask of its round housing."""
    img = render_clean(wheel_positions(value), style, dial_value=value)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, CENTER, FACE_R + 34, 255, -1, cv2.LINE_AA)
    return img, mask


def _homography(centre: tuple[float, float], r: float, dst_w: int, dst_h: int, rng: np.random.Generator, *,
                size: float, angle_deg: float, tilt: float) -> np.ndarray:
    """Meter pixels -> photo pixels: the meter (a disc of radius `r` about `centre`) scaled to `size` of the
    photo's short side, turned by `angle_deg`, seen obliquely (`tilt`: how much one side is foreshortened),
    placed inside the photo."""
    cx, cy = centre
    scale = size * min(dst_w, dst_h) / (2 * r)
    src = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]], np.float32)
    d = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * r * scale
    # oblique view: one side farther away (shorter), random direction
    side = int(rng.integers(0, 4))
    shrink = np.ones(4, np.float32)
    pairs = [(0, 1), (1, 2), (2, 3), (3, 0)]
    for k in pairs[side]:
        shrink[k] = 1 - tilt
    centre = d.mean(axis=0)
    d = centre + (d - centre) * shrink[:, None]
    if side in (0, 2):  # the near side also looks a little wider than the far one compresses
        d[:, 1] *= 1 - tilt / 3
    else:
        d[:, 0] *= 1 - tilt / 3
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    d = d @ rot.T
    lo, hi = d.min(axis=0), d.max(axis=0)
    span = hi - lo
    ox = rng.uniform(-lo[0], max(-lo[0], dst_w - hi[0])) if span[0] < dst_w else dst_w / 2
    oy = rng.uniform(-lo[1], max(-lo[1], dst_h - hi[1])) if span[1] < dst_h else dst_h / 2
    dst = d + np.array([ox, oy], np.float32)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _warp_points(m: np.ndarray, pts: Any) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float32).reshape(-1, 1, 2), m).reshape(-1, 2)


def phone_photo(rng: np.random.Generator, *, value: float | None = None, style: MeterStyle | None = None,
                size: tuple[int, int] = (1600, 1200), hard: bool = False) -> PhonePhoto:
    """One phone-style photo of a random simulated meter (5 black and 3 red wheels). `hard` adds more of
    everything (stronger tilt, glare over the counter, a finger over the glass, heavier blur)."""
    portrait = bool(rng.random() < 0.3)  # drawn first: tests rely on what a seed gives
    style = style or MeterStyle.random(rng)
    if value is None:
        value = float(rng.uniform(0, 99999.999))
        if rng.random() < 0.25:  # a wheel caught rolling
            value = math.floor(value) + float(rng.uniform(0.9985, 0.99999))
    meter, mask = _meter_cutout(style, value, rng)
    wx, wy, ww, wh = WINDOW
    return phone_shot(rng, meter, mask, centre=CENTER, radius=FACE_R + 34,
                      window=[(wx, wy), (wx + ww, wy), (wx + ww, wy + wh), (wx, wy + wh)],
                      wheels=[(x + rw / 2, y + rh / 2) for x, y, rw, rh in ROIS], value=format_value(value),
                      reading=value, digits=N_INT, decimals=N_DEC, size=size, hard=hard, portrait=portrait)


def phone_shot(rng: np.random.Generator, meter: np.ndarray, mask: np.ndarray, *, centre: tuple[float, float],
               radius: float, window: Sequence[tuple[float, float]], wheels: Sequence[tuple[float, float]],
               value: str, reading: float, digits: int, decimals: int, size: tuple[int, int] = (1600, 1200),
               hard: bool = False, portrait: bool | None = None) -> PhonePhoto:
    """A picture of a meter (`meter`, where `mask` > 0; any size: a rendered one or a real photo) taken again
    as a resident would: put into a scene at a random place, size, angle and obliquity, with clutter,
    glare, dirt, a finger, blur, noise and JPEG. `window` is the counter window's four corners and `wheels`
    the wheel centres in `meter`'s pixels; `centre` and `radius` the part of `meter` that is the meter."""
    w, h = size
    if portrait if portrait is not None else rng.random() < 0.3:
        w, h = h, w
    tags: list[str] = []
    scene = _background(w, h, rng)
    m = _homography(centre, radius, w, h, rng,
                    size=float(rng.uniform(0.45, 0.95)),
                    angle_deg=float(rng.uniform(-35, 35) if rng.random() < 0.7 else rng.uniform(-8, 8)),
                    tilt=float(rng.uniform(0.0, 0.35 if hard else 0.25)))
    warped = cv2.warpPerspective(meter, m, (w, h), flags=cv2.INTER_LINEAR)
    wmask = cv2.warpPerspective(mask, m, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255
    tags += _clutter(scene, rng, wmask[..., 0] > 0)
    img: Any = scene.astype(np.float32) * (1 - wmask) + warped.astype(np.float32) * wmask

    corners = _warp_points(m, list(window))
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    counter_box = (int(x0), int(y0), math.ceil(x1 - x0), math.ceil(y1 - y0))
    centres = [(float(p[0]), float(p[1])) for p in _warp_points(m, list(wheels))]

    yy: Any
    xx: Any
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    occluded: list[int] = []
    if rng.random() < (0.35 if hard else 0.15):  # a finger in front of the glass
        tags.append("finger")
        k = int(rng.integers(0, len(centres)))
        fx, fy = centres[k]
        if rng.random() < (0.5 if hard else 0.0):
            tags.append("finger_on_counter")
        else:  # beside the counter, on the face
            unit = radius / (FACE_R + 34)  # the simulated meter's face in pixels of this picture
            far = _warp_points(m, [[centre[0] + rng.uniform(-120, 120) * unit,
                                    centre[1] + rng.uniform(60, 150) * unit]])[0]
            fx, fy = float(far[0]), float(far[1])
        radius = float(np.hypot(*(np.array(centres[1]) - np.array(centres[0])))) * rng.uniform(0.8, 1.6)
        a = rng.uniform(0, 2 * np.pi)
        d2 = (((xx - fx) * math.cos(a) + (yy - fy) * math.sin(a)) / (radius * 2.5)) ** 2 + \
            (((xx - fx) * -math.sin(a) + (yy - fy) * math.cos(a)) / radius) ** 2
        finger = np.clip(1.5 - d2, 0, 1)[..., None]
        img = img * (1 - finger) + np.array(_skin(rng), np.float32) * finger
        occluded = [i for i, (cx, cy) in enumerate(centres) if finger[int(min(max(cy, 0), h - 1)),
                                                                     int(min(max(cx, 0), w - 1)), 0] > 0.3]
    if rng.random() < (0.7 if hard else 0.4):  # flash glare on the glass
        tags.append("glare")
        if rng.random() < (0.5 if hard else 0.25):
            gx, gy = centres[int(rng.integers(0, len(centres)))]
            tags.append("glare_on_counter")
        else:
            gx, gy = rng.uniform(0, w), rng.uniform(0, h)
        radius = float(rng.uniform(0.03, 0.12) * min(w, h))
        spot = np.exp(-((xx - gx) ** 2 + ((yy - gy) * 1.4) ** 2) / (2 * radius ** 2)) * rng.uniform(0.5, 0.95)
        img = img + (255 - img) * spot[..., None] * wmask
    if rng.random() < 0.3:  # dirty glass: a haze and smudges over the meter
        tags.append("dirty")
        haze = cv2.GaussianBlur(rng.random((h // 16 + 1, w // 16 + 1)).astype(np.float32), (0, 0), 2)
        haze = cv2.resize(haze, (w, h))[..., None] * rng.uniform(0.15, 0.35)
        img = img * (1 - haze * wmask) + 200 * haze * wmask
    if rng.random() < 0.3:  # uneven light: a shadow across the photo
        tags.append("shadow")
        a = rng.uniform(0, 2 * np.pi)
        t = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)
        img = img * (0.55 + 0.45 / (1 + np.exp(-t / (0.05 * w))))[..., None]
    img = np.clip(img, 0, 255)
    blur = rng.random()
    if blur < (0.35 if hard else 0.2):  # shake: motion blur
        tags.append("shake")
        n = int(rng.integers(5, 17 if hard else 11)) * max(1, min(w, h) // 1000)
        kernel: Any = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1 / n
        rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif blur < (0.55 if hard else 0.4):  # out of focus
        tags.append("defocus")
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.0, 3.5 if hard else 2.5)) * min(w, h) / 1200)
    img = img + rng.normal(0, rng.uniform(1.5, 6), img.shape)
    out: Any = np.clip(img, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
    out = cv2.imdecode(jpeg, cv2.IMREAD_COLOR) if ok else out
    return PhonePhoto(out, value, reading, digits, decimals, counter_box, centres, tuple(tags), tuple(occluded))
