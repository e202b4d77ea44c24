"""Read a meter from one photo a resident took with a phone: find the counter, straighten it, read every
wheel in one model call, settle the rolling wheels as the device does, and say how sure it is.

The photo can show the meter at any place, size and angle (up to 45° either way), with glare, dirt and
other things with digits in view. :func:`read_photo` is pure (no I/O): the caller has decoded the image,
honoured its EXIF orientation and checked its size. It returns a :class:`PhotoReading` whose ``status``
is ``ok`` only when every wheel is read confidently and the rolling wheels allow one value; otherwise
``unsure`` with a reason in plain words (the value is still proposed when there is one: the resident
checks it), or ``no_counter``.

A resident who drags the counter box on the photo sends it back as ``counter_box``: the counter is then
looked for only there, and if it is still not found the box is divided into equal wheels.

docs/photo.md says how it works and how often it is right.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from contract.images import MAX_PIXELS, MAX_SIDE, ImageRefused
from meter_vision.geometry import rotation_matrix, transform_points
from meter_vision.wheels import candidates
from meter_vision.windows import NoCounterFound, Proposal, propose_windows

if TYPE_CHECKING:
    from meter_vision.infer.model import DigitModel, DigitPrediction

MIN_SIDE = 64
"""A photo smaller than this on either side cannot show a counter's digits."""
OK_CONFIDENCE = 0.8
"""Every wheel must be read at least this sure for ``ok`` (the device's ``change_confidence``)."""
AMBIGUITY = 0.15
"""A wheel this close (in digit positions) to the point where it turns to the next digit is ambiguous
(the device's ``ambiguity``)."""
MAX_PLACED = 1
"""Wheels placed at the pitch rather than seen: more than this and the reading is unsure."""
CONTINUES = 0.90
"""A digit read this sure one pitch beyond either end of the row: the row goes on, so it may not be the
counter (a ruler, a serial number, a label) or the meter has more wheels than registered. (0.95 with the
model v2; v3 averages two networks and reads a crisp printed digit at 0.90-0.95, so a sticker's
"00247662" read as a five-wheel "47661" came out ok until this was lowered: docs/photo.md.)"""
PRINTED = 0.8
"""Digits that fill this much of their pitch are printed numbers, not wheels (measured: counters 0.4–0.75,
blurred ones up to 0.83; a sticker 0.82, a serial number 0.88)."""
STEEP_MARGIN = 0.1
"""A counter found turned by more than 45° must read this much more confidently (mean over the wheels) than
the best row found within 45°."""
LAST_TURNING = 0.9
"""The lowest wheel read this far past its digit may as well be on the next one (a position read 0.1 low
turns a settled 530 into 529.9, and the carry makes it 00529): unsure, the value proposed is the digit
reached."""
CENTRED = 0.04
"""Wheels above the lowest this close (in digits, on average) to where the wheel below puts them: the
windows are centred and need no vertical search."""
VERTICAL_STEPS = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
"""Vertical moves tried, in window heights."""
BOX_MARGIN = 0.35
"""A resident's counter box is searched with this much of its height added on every side."""

Status = Literal["ok", "unsure", "no_counter"]


class PhotoRefused(ImageRefused):
    """The image cannot be read as a meter photo at all (too small, too large, not an image array)."""


@dataclass(frozen=True)
class WheelReading:
    """One wheel: the digit it shows (None: unreadable), its position 0.0–9.9, the model's confidence, its
    box (x, y, w, h, before turning by the reading's ``angle_deg``) and its four corners in the photo."""

    digit: int | None
    position: float
    confidence: float
    box: tuple[int, int, int, int]
    corners: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class PhotoReading:
    """What :func:`read_photo` saw. Boxes are in pixels of the image it was given.

    ``value`` carries every wheel (``digits`` integer and ``decimals`` decimal ones, "00123.456"), or is None
    when nothing could be proposed; ``counter_box`` is the axis-aligned box around all wheel windows (what
    a resident drags); ``angle_deg`` is how far the counter is turned clockwise in the photo (each wheel's
    ``box`` turned by it about its centre gives its ``corners``); ``rotation_deg`` is the turn that
    straightened it (= -angle_deg).
    """

    value: str | None
    status: Status
    confidence: float
    reason: str | None
    counter_box: tuple[int, int, int, int] | None
    rotation_deg: float
    wheels: tuple[WheelReading, ...]
    seconds: float
    digits: int
    decimals: int
    model: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def angle_deg(self) -> float:
        return -self.rotation_deg

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [w.box for w in self.wheels]

    def to_json(self) -> dict[str, Any]:
        """A dict of plain JSON types (lists for tuples)."""
        out = asdict(self)
        out["angle_deg"] = round(self.angle_deg, 2)
        out["boxes"] = [list(b) for b in self.boxes]
        out["counter_box"] = list(self.counter_box) if self.counter_box else None
        out["wheels"] = [{"digit": w.digit, "position": w.position, "confidence": round(w.confidence, 4),
                          "box": list(w.box), "corners": [[round(x, 1), round(y, 1)] for x, y in w.corners]}
                         for w in self.wheels]
        out["notes"] = list(self.notes)
        out["confidence"] = round(self.confidence, 4)
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass(frozen=True)
class _Windows:
    """Wheel windows found: `straight` (3×3) maps photo pixels to a straightened frame where each window
    is the axis-aligned `rects[k]` (x, y, w, h, floats)."""

    straight: np.ndarray
    rects: list[tuple[float, float, float, float]]
    rotation_deg: float
    found: int
    notes: list[str]


_lock = threading.Lock()


@lru_cache(maxsize=1)
def default_model() -> DigitModel:
    """The bundled digit model, loaded once per process."""
    from meter_vision.infer import DigitModel

    return DigitModel()


def _classify(model: DigitModel, crops: Sequence[np.ndarray]) -> list[DigitPrediction]:
    """One model call; a TFLite interpreter is not thread-safe, and web workers share the model."""
    with _lock:
        return model.classify(crops)


def check_photo(image: np.ndarray) -> np.ndarray:
    """The image as 3-channel BGR uint8, or PhotoRefused saying why it cannot be a meter photo."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise PhotoRefused("not an image: expected a height × width (× channels) pixel array")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise PhotoRefused(f"the photo is {w} × {h} pixels: too small to show a meter's digits "
                           f"(at least {MIN_SIDE} pixels a side); take the photo closer, at full size")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise PhotoRefused(f"the photo is {w:,} × {h:,} pixels; the limit is {MAX_PIXELS / 1e6:.0f} MP and "
                           f"{MAX_SIDE:,} per side")
    if image.dtype != np.uint8:
        raise PhotoRefused(f"pixels must be 8-bit (uint8), not {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise PhotoRefused(f"expected 1, 3 or 4 colour channels, not {image.shape[2]}")
    return image


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _find(image: np.ndarray, region: tuple[int, int, int, int], wheels: int, model: DigitModel) -> _Windows | None:
    """The counter's windows inside `region` (x, y, w, h) of `image`, or None.

    Looked for turned up to 45° either way first (most photos); only when that finds no row the model
    reads confidently, also in the region turned by a quarter (a counter at 45–90°, e.g. a meter on a
    vertical pipe), and the better read of the two is kept. Searching ±90° at once lets more rows of
    other marks compete with the counter."""
    x0, y0, rw, rh = region
    sub = image[y0:y0 + rh, x0:x0 + rw]

    def conf(crops: list[np.ndarray]) -> list[float]:
        return [p.confidence for p in _classify(model, crops)]

    def propose(img: np.ndarray) -> Proposal | None:
        try:
            return propose_windows(img, digits=wheels, confidences=conf)
        except NoCounterFound:
            return None

    def quality(prop: Proposal | None) -> float:
        return float(np.mean(prop.confidences)) if prop is not None and prop.confidences else -1.0

    to_region = _translate(-x0, -y0)
    prop = propose(sub)
    turn, turned_deg = np.eye(3), 0.0
    if prop is None or min(prop.confidences or [0.0]) < model.threshold or prop.found < wheels - MAX_PLACED:
        # ROTATE_90_CLOCKWISE maps (x, y) to (h - 1 - y, x); the counter-clockwise turn (x, y) to (y, w - 1 - x)
        quarters = ((cv2.ROTATE_90_CLOCKWISE, np.array([[0, -1, rh - 1], [1, 0, 0], [0, 0, 1]], np.float64), 90.0),
                    (cv2.ROTATE_90_COUNTERCLOCKWISE, np.array([[0, 1, 0], [-1, 0, rw - 1], [0, 0, 1]], np.float64),
                     -90.0))
        best = quality(prop) + STEEP_MARGIN
        for code, matrix, deg in quarters:
            steep = propose(cv2.rotate(sub, code))
            if steep is not None and quality(steep) > best:
                prop, turn, turned_deg, best = steep, matrix, deg, quality(steep)
        if turned_deg:
            rw, rh = rh, rw
    if prop is None:
        return None
    # photo -> region (-> a quarter turn) -> turned by the proposal's rotation: the frame the windows are in
    straight = rotation_matrix(rw, rh, prop.rotation_deg) @ turn @ to_region
    rotation = prop.rotation_deg + turned_deg
    rects = [(float(r.x), float(r.y), float(r.w), float(r.h)) for r in prop.rows]
    return _Windows(straight, rects, rotation, prop.found, list(prop.notes))


def _even_split(box: tuple[int, int, int, int], wheels: int) -> _Windows:
    x, y, w, h = box
    pitch = w / wheels
    rects = [(x + k * pitch, float(y), pitch, float(h)) for k in range(wheels)]
    return _Windows(np.eye(3), rects, 0.0, 0, ["no digits seen in the box: it was divided into equal wheels"])


def _crop(image: np.ndarray, straight: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """The window `rect` of the straightened frame, cut from the photo in one affine warp."""
    x, y, w, h = rect
    m = _translate(-x, -y) @ straight
    return cv2.warpAffine(image, m[:2], (max(1, round(w)), max(1, round(h))), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def _clip_box(box: Sequence[int], width: int, height: int) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError("counter_box must be four integers: x, y, width, height") from None
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"counter_box {x},{y},{w},{h} is not inside the {width} × {height} photo "
                         "(or is smaller than 8 pixels)")
    return x0, y0, x1 - x0, y1 - y0


def _fmt(digits_read: Sequence[int], digits: int, decimals: int) -> str:
    s = "".join(str(d) for d in digits_read)
    return s[:digits] + ("." + s[digits:] if decimals else "")


def _plural(items: list[int]) -> str:
    return ("wheel " if len(items) == 1 else "wheels ") + ", ".join(str(i + 1) for i in items)


def read_photo(image_bgr: np.ndarray, *, digits: int, decimals: int, model: DigitModel | None = None,
               counter_box: tuple[int, int, int, int] | None = None) -> PhotoReading:
    """Read the meter in `image_bgr` (EXIF-transposed, size-checked) with `digits` integer and `decimals`
    decimal wheels. PhotoRefused for an image no photo reading can come from; ValueError for bad arguments.
    `model` defaults to the bundled one (shared by the process, calls serialised)."""
    start = time.perf_counter()
    if not 1 <= digits <= 12 or not 0 <= decimals <= 6:
        raise ValueError(f"a meter has 1–12 integer wheels and 0–6 decimal ones, not {digits} and {decimals}")
    image = check_photo(image_bgr)
    height, width = image.shape[:2]
    wheels = digits + decimals
    box = _clip_box(counter_box, width, height) if counter_box is not None else None
    use = model if model is not None else default_model()
    if box is not None:
        bx, by, bw, bh = box
        m = round(BOX_MARGIN * bh)
        rx0, ry0 = max(0, bx - m), max(0, by - m)
        region = (rx0, ry0, min(width, bx + bw + m) - rx0, min(height, by + bh + m) - ry0)
        found: _Windows | None = _find(image, region, wheels, use) or _even_split(box, wheels)
    else:
        found = _find(image, (0, 0, width, height), wheels, use)
    if found is None:
        return PhotoReading(None, "no_counter", 0.0,
                            "no counter found in the photo: take it straight in front of the meter, close "
                            "enough that the digits fill about a third of the picture, without flash glare; "
                            "or drag the box onto the counter", None, 0.0, (), time.perf_counter() - start,
                            digits, decimals, use.model_id)
    placed = wheels - found.found if found.found else 0
    slots = _slots(found, placed + 1, width, height)
    preds = _classify(use, [_crop(image, found.straight, r) for r in slots.values()])
    by_k = dict(zip(slots, preds, strict=True))
    found, shift = _best_shift(found, by_k, placed)
    side = {name: by_k[k] for name, k in (("left", shift - 1), ("right", shift + wheels)) if k in by_k}
    preds = [by_k[shift + k] for k in range(wheels)]
    if found.found and wheels >= 2:
        found, preds = _centre_vertically(image, found, preds, use)
    spacing = _spacing(image, found) if found.found and wheels >= 3 else None
    return _decide(found, preds, side, spacing, digits, decimals, use, start)


def _ink_width(crop: np.ndarray) -> float | None:
    """Width (pixels) of the digit in the middle of a wheel's window: the connected blob of ink (dark on
    light or light on dark, whichever is the smaller blob) nearest the centre, at least a third as tall as
    the window; None when there is none."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h, w = grey.shape[:2]
    if h < 8 or w < 4:
        return None
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    best: tuple[float, float] | None = None  # (area, width)
    for ink in (binary, 255 - binary):
        n, _, stats, cents = cv2.connectedComponentsWithStats(ink, connectivity=8)
        for i in range(1, n):
            _, _, bw, bh, area = (int(v) for v in stats[i])
            if bh < h / 3 or bw >= w - 1 or area < 0.03 * w * h:
                continue
            if abs(cents[i][0] - w / 2) > w / 4 or abs(cents[i][1] - h / 2) > h / 3:
                continue
            if best is None or area < best[0]:
                best = (float(area), float(bw))
    return None if best is None else best[1]


def _spacing(image: np.ndarray, found: _Windows) -> float | None:
    """How much of the pitch the digits fill (widest third of the wheels, so the narrow 1s do not count):
    printed numbers (a serial number, a label) fill about 0.8 of it; a counter's wheels, each in its own
    window, about half."""
    if len(found.rects) < 3:
        return None
    pitch = (found.rects[-1][0] - found.rects[0][0]) / (len(found.rects) - 1)
    if pitch <= 0:
        return None
    widths = []
    for x, y, w, h in found.rects:
        cx = x + w / 2
        wide = _crop(image, found.straight, (cx - pitch / 2, y, pitch, h))  # the whole pitch, not the window
        ink = _ink_width(wide)
        if ink is not None:
            widths.append(ink / pitch)
    if len(widths) < max(3, len(found.rects) // 2):
        return None
    widths.sort()
    return float(np.median(widths[len(widths) * 2 // 3:]))


def _off_centre(preds: Sequence[DigitPrediction]) -> float:
    """How far (in digits, 0–0.5) the wheels above the lowest stand from where the wheel below each says
    it should: settled on a digit, or turned as far as the carry allows. Windows cut too high or too low
    make every wheel look turned the same way."""
    cands = candidates([float(p.value) for p in preds], [True] * len(preds), 0.0)
    if not cands:
        return 0.5
    margins = [m for m in cands[0].margins if m is not None]
    return 0.5 - float(np.mean(margins)) if margins else 0.0


def _centre_vertically(image: np.ndarray, found: _Windows, preds: list[DigitPrediction],
                       model: DigitModel) -> tuple[_Windows, list[DigitPrediction]]:
    """Move the windows up or down (by up to VERTICAL_SEARCH of their height) when that puts the digits
    better in their middle: a window off-centre reads a settled 6 as a 5 turning (5.9)."""
    base = _off_centre(preds)
    if base < CENTRED:
        return found, preds
    offsets = [s for s in VERTICAL_STEPS if s]
    crops = [_crop(image, found.straight, (x, y + s * h, w, h)) for s in offsets for x, y, w, h in found.rects]
    moved = _classify(model, crops)
    n = len(found.rects)
    best, best_score, best_preds = 0.0, base + (1 - min(p.confidence for p in preds)), preds
    for j, s in enumerate(offsets):
        these = moved[j * n:(j + 1) * n]
        score = _off_centre(these) + (1 - min(p.confidence for p in these)) + 0.02 * abs(s) / VERTICAL_STEPS[-1]
        if score < best_score:
            best, best_score, best_preds = s, score, list(these)
    if not best:
        return found, preds
    rects = [(x, y + best * h, w, h) for x, y, w, h in found.rects]
    note = (f"the windows were moved {'down' if best > 0 else 'up'} by {abs(best):.0%} of their height to centre "
            "the digits")
    return _Windows(found.straight, rects, found.rotation_deg, found.found, [*found.notes, note]), best_preds


def _slots(found: _Windows, extra: int, width: int, height: int) -> dict[int, tuple[float, float, float, float]]:
    """The row's windows (0 … n-1) and `extra` more at the pitch on either side where they are inside the
    photo: a wheel placed at the wrong end is moved, and a row that goes on is noticed."""
    n = len(found.rects)
    out = dict(enumerate(found.rects))
    if found.found == 0 or n < 2:
        return out
    first, last = found.rects[0], found.rects[-1]
    pitch = (last[0] - first[0]) / (n - 1)
    back = np.linalg.inv(found.straight)
    for k in [*range(-extra, 0), *range(n, n + extra)]:
        x, y, w, h = first[0] + k * pitch, first[1], first[2], first[3]
        corners = transform_points(back, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
        if corners.min() >= 0 and corners[:, 0].max() <= width and corners[:, 1].max() <= height:
            out[k] = (x, y, w, h)
    return dict(sorted(out.items()))


def _best_shift(found: _Windows, by_k: dict[int, DigitPrediction], placed: int) -> tuple[_Windows, int]:
    """Where wheels were placed at the pitch rather than seen, the placement (shifted by up to `placed`
    wheels) where the model reads the digits best; unmoved when it makes no clear difference."""
    n = len(found.rects)
    best, best_score = 0, -1.0
    for s in range(-placed, placed + 1):
        if not all(s + k in by_k for k in range(n)):
            continue
        score = float(np.mean([by_k[s + k].confidence for k in range(n)])) - 0.05 * abs(s)
        if score > best_score:
            best, best_score = s, score
    if best == 0:
        return found, 0
    pitch = (found.rects[-1][0] - found.rects[0][0]) / (n - 1)
    rects = [(x + best * pitch, y, w, h) for x, y, w, h in found.rects]
    note = f"the row was moved {abs(best)} wheel{'s' if abs(best) > 1 else ''} to the {'right' if best > 0 else 'left'}"
    return _Windows(found.straight, rects, found.rotation_deg, found.found, [*found.notes, note]), best


def _plus_one(ds: Sequence[int]) -> list[int]:
    """The digits one step of the lowest wheel later (a carry through the 9s; 999 wraps to 000)."""
    width = len(ds)
    return [int(c) for c in str((int("".join(map(str, ds))) + 1) % 10 ** width).zfill(width)]


def _counts_up(ds: Sequence[int]) -> bool:
    return len(ds) >= 4 and all((b - a) % 10 == 1 for a, b in itertools.pairwise(ds))


def _decide(found: _Windows, preds: Sequence[DigitPrediction], side: dict[str, DigitPrediction],
            spacing: float | None, digits: int, decimals: int, model: DigitModel, start: float) -> PhotoReading:
    n = digits + decimals
    back = np.linalg.inv(found.straight)
    wheel_out = []
    all_corners = []
    for r, p in zip(found.rects, preds, strict=True):
        x, y, w, h = r
        corners = transform_points(back, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
        cx, cy = corners.mean(axis=0)
        all_corners.append(corners)
        wheel_out.append(WheelReading(p.digit, float(p.value), float(p.confidence),
                                      (round(cx - w / 2), round(cy - h / 2), round(w), round(h)),
                                      tuple((float(a), float(b)) for a, b in corners)))
    pts = np.vstack(all_corners)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    counter = (math.floor(lo[0]), math.floor(lo[1]), math.ceil(hi[0] - lo[0]), math.ceil(hi[1] - lo[1]))

    positions = [float(p.value) for p in preds]
    confs = [float(p.confidence) for p in preds]
    unreadable = [i for i, p in enumerate(preds) if p.digit is None or p.confidence < model.threshold]
    weak = [i for i, c in enumerate(confs) if c < OK_CONFIDENCE and i not in unreadable]
    # what the wheels show when every wheel is taken at its position (the value proposed to the resident)
    shown = candidates(positions, [True] * n, 0.0)
    value = _fmt(shown[0].digits, digits, decimals) if shown else None
    strict = candidates(positions, [True] * n, AMBIGUITY)
    reasons: list[str] = []
    placed = n - found.found if found.found else n
    if unreadable:
        reasons.append(f"{_plural(unreadable)} (from the left) could not be read: glare, dirt, a finger or "
                       "blur in front of the digit")
    if weak:
        reasons.append(f"{_plural(weak)} (from the left) read with little confidence "
                       f"({', '.join(f'{confs[i]:.2f}' for i in weak)})")
    if len(strict) > 1:
        between = [i for i, how in enumerate(strict[1].hows) if how == "alternative"]
        alt = _fmt(strict[1].digits, digits, decimals)
        reasons.append(f"{_plural(between)} (from the left) {'stands' if len(between) == 1 else 'stand'} between two "
                       f"digits: {value} or {alt}")
    last = positions[-1] % 10
    if shown and last - math.floor(last) >= LAST_TURNING:
        nxt = _fmt(_plus_one(shown[0].digits), digits, decimals)
        reasons.append(f"the last wheel is turning from {math.floor(last)} to {(math.floor(last) + 1) % 10}: "
                       f"{value} or {nxt}")
    if placed > MAX_PLACED:
        reasons.append(f"only {found.found} of {n} wheels were seen as digits; the others were placed beside them"
                       if found.found else "no digits were seen inside the box; it was divided into equal wheels")
    goes_on = [name for name, p in side.items() if p.digit is not None and p.confidence >= CONTINUES]
    if goes_on:
        reasons.append(f"the row of digits goes on to the {' and '.join(goes_on)} of the {n} wheels: check that the "
                       f"boxes are on the counter and that the meter has {digits} black and {decimals} red wheels")
    if shown and _counts_up(shown[0].digits):
        reasons.append("the digits count up one by one, like a ruler's or a dial's scale: check that the boxes are "
                       "on the counter")
    if spacing is not None and spacing >= PRINTED:
        reasons.append(f"the digits fill {spacing:.0%} of their spacing, like printed numbers (a serial number, a "
                       "label), not a counter's wheels: check that the boxes are on the counter")
    status: Status = "unsure" if reasons else "ok"
    confidence = min(confs) if confs else 0.0
    return PhotoReading(value, status, confidence, "; ".join(reasons) or None, counter, found.rotation_deg,
                        tuple(wheel_out), time.perf_counter() - start, digits, decimals, model.model_id,
                        tuple(found.notes))
