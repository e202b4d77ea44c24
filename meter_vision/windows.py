"""Propose the digit windows of a meter photo: find the counter (a row of evenly spaced digits of one
size), its tilt, and one window per wheel. Classical vision (OpenCV MSER), checked by the digit model.

How: the frame is turned through a range of angles; at each, MSER regions of digit shape (both dark on
light and light on dark) are grouped into rows of the same height and an even pitch; the best row over all
angles is the counter and its angle the rotation. A wheel caught between two digits shows no whole
glyph: a gap in the row is filled at the pitch. Each window is centred on its wheel, a little wider and
taller than the glyphs (the whole visible drum, so a digit rolling in is seen). The digit model then reads
every window; its confidence is reported as how sure the proposal is.

Measured in docs/calibrate.md ("Automatic windows").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from meter_vision.geometry import Roi, rotate_image

WINDOW_W = 1.6   # window width / median glyph width (capped by the pitch)
WINDOW_H = 1.55  # window height / glyph height
DRUM_FRACTION = 0.75  # boxes this wide for their pitch are drums seen through their windows, not glyphs
MAX_PITCH_GAP = 1  # missing wheels tolerated between two found ones


class NoCounterFound(Exception):
    """No row of digits in the photo: the installer must draw the windows (`--rois`)."""


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class Row:
    """Glyph boxes on one line: `slots[k]` is the box of wheel k (None: a gap filled at the pitch)."""

    slots: list[Box | None]
    pitch: float
    height: float
    angle: float = 0.0

    @property
    def found(self) -> int:
        return sum(b is not None for b in self.slots)

    def tilt_deg(self) -> float:
        """How far the row still slopes (clockwise positive, image y down)."""
        found = [(k, b) for k, b in enumerate(self.slots) if b is not None]
        ks = np.array([k for k, _ in found], float)
        slope = float(np.polyfit(ks, [b.cy for _, b in found], 1)[0]) if len(found) > 1 else 0.0
        return float(np.degrees(np.arctan2(slope, self.pitch)))

    def score(self) -> float:
        """More glyphs, bigger glyphs (the counter is the largest row of digits on a meter's face; serial
        numbers and scale labels are smaller), steady heights, a level row."""
        hs = np.array([b.h for b in self.slots if b is not None])
        steady = 1.0 - float(hs.std() / max(hs.mean(), 1.0))
        return self.found * float(np.sqrt(self.height)) * steady * (1.0 - min(abs(self.tilt_deg()), 30) / 60)


@dataclass
class Proposal:
    """What `propose_windows` found: windows in pixels of the image rotated by `rotation_deg` (clockwise)."""

    rows: list[Roi]
    rotation_deg: float
    found: int
    pitch: float
    glyph_h: float
    notes: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


def glyph_boxes(grey: np.ndarray) -> list[Box]:
    """MSER regions shaped like a digit (taller than wide, not tiny, not huge), both polarities, on the
    image as it is and with local contrast equalised (thin light digits in a dark window), two deltas:
    MSER alone misses a different glyph at each setting; the union misses few."""
    h, w = grey.shape[:2]
    min_h, max_h = max(8, h // 40), h // 3
    clahe = cv2.createCLAHE(2.0, (8, 8)).apply(grey)
    boxes: list[Box] = []
    for delta in (3, 5):
        mser = cv2.MSER_create(delta, 20, int(w * h / 40))  # type: ignore[attr-defined]
        for img in (grey, 255 - grey, clahe, 255 - clahe):
            _, rects = mser.detectRegions(img)
            for x, y, bw, bh in rects:
                if not min_h <= bh <= max_h or not 1.1 <= bh / max(bw, 1) <= 6.0:
                    continue
                boxes.append(Box(float(x), float(y), float(bw), float(bh)))
    block = max(15, (min(h, w) // 16) | 1)
    for img in (grey, 255 - grey):
        binary = cv2.adaptiveThreshold(img, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV, block, 8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for x, y, bw, bh, _area in stats[1:n]:
            if not min_h <= bh <= max_h or not 1.1 <= bh / max(bw, 1) <= 6.0:
                continue
            boxes.append(Box(float(x), float(y), float(bw), float(bh)))
    return _dedupe(boxes)


def _dedupe(boxes: list[Box]) -> list[Box]:
    """Drop boxes that are nearly the same as one kept (the detectors find most glyphs several times);
    nested or merged alternatives stay, and the row search picks the one that fits its neighbours."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: (b.x, b.y)):
        if any(_iou(b, k) > 0.75 for k in kept[-40:]):
            continue
        kept.append(b)
    return kept


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / max(a.w * a.h + b.w * b.h - inter, 1.0)


def _similar(a: Box, b: Box) -> bool:
    return abs(a.h - b.h) <= 0.15 * max(a.h, b.h) and abs(a.cy - b.cy) <= 0.2 * max(a.h, b.h)


def find_rows(boxes: list[Box]) -> list[Row]:
    """Rows of ≥3 glyphs of one height at an even pitch (0.5–2 glyph heights), gaps of one wheel allowed."""
    boxes = sorted(boxes, key=lambda b: b.cx)
    rows: list[Row] = []
    used_pairs: set[tuple[int, int]] = set()
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            dx = b.cx - a.cx
            if dx > 2.0 * a.h:
                break
            if dx < 0.5 * a.h or not _similar(a, b) or (i, j) in used_pairs:
                continue
            pitch = dx
            members = {0: (i, a), 1: (j, b)}
            k, misses, last = 2, 0, b
            while misses <= MAX_PITCH_GAP:
                expect = a.cx + k * pitch
                best = None
                for m in range(j + 1, len(boxes)):
                    c = boxes[m]
                    if c.cx > expect + 0.2 * pitch:
                        break
                    if abs(c.cx - expect) <= 0.2 * pitch and _similar(last, c) and (
                            best is None or abs(c.cx - expect) < abs(boxes[best].cx - expect)):
                        best = m
                if best is None:
                    misses += 1
                else:
                    misses = 0
                    members[k] = (best, boxes[best])
                    last = boxes[best]
                    # refine the pitch on what was found so far
                    ks = np.array(list(members))
                    xs = np.array([bb.cx for _, bb in members.values()])
                    pitch = float(np.polyfit(ks, xs, 1)[0])
                k += 1
            if len(members) < 3:
                continue
            idx = [m for m, _ in members.values()]
            for p in range(len(idx) - 1):
                used_pairs.add((idx[p], idx[p + 1]))
            top = max(members)
            slots: list[Box | None] = [members[s][1] if s in members else None for s in range(top + 1)]
            hs = [bb.h for _, bb in members.values()]
            rows.append(Row(slots, pitch, float(np.median(hs))))
    return rows


def _windows(row: Row, width: int, height: int) -> list[Roi]:
    found = [(k, b) for k, b in enumerate(row.slots) if b is not None]
    ks = np.array([k for k, _ in found], float)
    xs = np.array([b.cx for _, b in found])
    ys = np.array([b.cy for _, b in found])
    x0, pitch = (float(np.polyfit(ks, xs, 1)[1]), float(np.polyfit(ks, xs, 1)[0])) if len(found) > 1 else (xs[0], 0)
    cy = float(np.median(ys))
    widths = sorted(b.w for _, b in found)
    glyph_w = float(np.median(widths[len(widths) // 3:]))  # the narrow "1"s do not set the width
    if pitch and glyph_w >= DRUM_FRACTION * pitch:
        # the boxes are the wheels' windows themselves (light drums behind a dark mask): use them as they are
        ww, wh = round(glyph_w), round(row.height)
    else:
        ww = round(min(WINDOW_W * glyph_w, 0.9 * pitch))
        wh = round(WINDOW_H * row.height)
    out = []
    for k in range(len(row.slots)):
        cx = x0 + k * pitch
        x = round(cx - ww / 2)
        y = round(cy - wh / 2)
        x, y = max(0, min(x, width - ww)), max(0, min(y, height - wh))
        out.append(Roi(x=x, y=y, w=ww, h=wh))
    return out


def _best_row(grey: np.ndarray, digits: int | None) -> Row | None:
    rows = find_rows(glyph_boxes(grey))
    if digits is not None:
        rows = [r for r in rows if len(r.slots) <= digits + 1]  # a row longer than the meter is something else
    if not rows:
        return None
    return max(rows, key=lambda r: r.score() - (abs(len(r.slots) - digits) * 0.5 if digits else 0.0))


def _fit_count(row: Row, digits: int, width: int) -> Row:
    """Grow the row at the pitch to `digits` wheels (a rolling or blank wheel at either end), to the side
    that stays inside the image."""
    slots = list(row.slots)
    while len(slots) < digits:
        first = next(b for b in slots if b is not None)
        left_room = first.cx - (slots.index(first) + 1) * row.pitch
        last = next(b for b in reversed(slots) if b is not None)
        right_room = width - (last.cx + (len(slots) - slots.index(last)) * row.pitch)
        if right_room >= left_room:
            slots.append(None)
        else:
            slots.insert(0, None)
    if len(slots) > digits:  # more than asked: keep the rightmost (the counter's last wheels move)
        slots = slots[-digits:]
    return Row(slots, row.pitch, row.height, row.angle)


Confidences = Callable[[list[np.ndarray]], list[float]]


def propose_windows(image: np.ndarray, *, digits: int | None = None, confidences: Confidences | None = None,
                    max_tilt_deg: float = 45.0, step_deg: float = 7.5, candidates: int = 4,
                    coarse_px: int = 360, work_px: int = 640) -> Proposal:
    """The counter's windows in `image` rotated by the returned angle; NoCounterFound when there is no row.

    Coarse search over angles on a small copy; the best few rows (at different angles) are measured again
    at working resolution, their angle corrected by the row's own slope; `confidences` (the digit model's,
    one per crop) then decides between them: a counter reads as digits, a row of other marks does not.
    `coarse_px` and `work_px` are the longer sides of the two copies (a phone photo, where the counter is a
    small part of the picture, needs larger ones than a fixed camera's frame).
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = grey.shape[:2]
    scale = min(1.0, coarse_px / max(w, h))
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
    work_scale = min(1.0, work_px / max(w, h))
    work = cv2.resize(grey, None, fx=work_scale, fy=work_scale, interpolation=cv2.INTER_AREA) \
        if work_scale < 1 else grey
    colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)

    def at(angle: float, img: np.ndarray) -> Row | None:
        row = _best_row(rotate_image(img, angle) if angle else img, digits)
        if row is not None:
            row.angle = angle
        return row

    angles = np.arange(-max_tilt_deg, max_tilt_deg + 1e-6, step_deg)
    coarse = sorted((r for a in angles if (r := at(float(a), small))), key=lambda r: -r.score())[:candidates]
    if not coarse:
        raise NoCounterFound("no row of digits found in the photo")
    best: tuple[float, Proposal] | None = None
    for c in coarse:
        row: Row | None = None
        for a in (c.angle - c.tilt_deg(), c.angle):
            row = at(round(a, 1), work)
            if row is not None:
                break
        if row is None:
            continue
        if abs(row.tilt_deg()) >= 0.3:  # the slope measured at working resolution corrects the angle again
            again = at(round(row.angle - row.tilt_deg(), 1), work)
            if again is not None and again.score() >= row.score():
                row = again
        notes = []
        if digits is not None and len(row.slots) != digits:
            notes.append(f"found {row.found} of {digits} wheels, the others placed at the pitch")
            row = _fit_count(row, digits, work.shape[1])
        rois = [Roi(x=round(r.x / work_scale), y=round(r.y / work_scale), w=round(r.w / work_scale),
                    h=round(r.h / work_scale)) for r in _windows(row, work.shape[1], work.shape[0])]
        prop = Proposal(rois, row.angle, row.found, row.pitch / work_scale, row.height / work_scale, notes)
        score = row.score() * (1.0 - abs(row.angle) / 180)  # most meters hang about level
        if confidences is not None:
            straight = rotate_image(colour, row.angle) if row.angle else colour
            conf = confidences([straight[r.y : r.y + r.h, r.x : r.x + r.w] for r in rois])
            prop.confidences = [float(c) for c in conf]
            score *= 0.2 + float(np.mean(conf))
        if best is None or score > best[0]:
            best = (score, prop)
    if best is None:
        raise NoCounterFound("the row of digits seen at low resolution is not there at full resolution")
    return best[1]


def straighten(image: np.ndarray, proposal: Proposal) -> np.ndarray:
    return rotate_image(image, proposal.rotation_deg) if proposal.rotation_deg else image
