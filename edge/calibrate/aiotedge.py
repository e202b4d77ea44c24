"""Import the calibration of an AI-on-the-edge-device (ESP32-CAM) ``config.ini``.

What we take: the digit ROIs (``[Digits]``: ``main.dig1 x y w h …``), the alignment marks
(``[Alignment]``: ``/config/ref0.jpg x y``, the mark's top-left in the reference image; its size from
the mark's file beside config.ini), ``InitialRotate`` and ``main.DecimalShift``. Their ROIs are in the
coordinate system of ``reference.jpg``, which the device stores already rotated by ``InitialRotate``,
so that picture is our reference image as it is, and ``InitialRotate`` is applied to every new frame.
Analog dials (``[Analog]``) are listed but not read by this software.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.calibrate.layout import Anchor, LayoutError
from meter_vision.geometry import Roi

log = logging.getLogger(__name__)

_ROI_LINE = re.compile(r"^(?P<number>[^\s.]+)\.(?P<name>\S+)\s+(?P<x>-?\d+)\s+(?P<y>-?\d+)\s+(?P<w>\d+)\s+(?P<h>\d+)")
_MARK_LINE = re.compile(r"^(?P<file>\S+\.(?:jpe?g|png|bmp))\s+(?P<x>-?\d+)\s+(?P<y>-?\d+)\s*$", re.IGNORECASE)


@dataclass
class AiotEdgeConfig:
    """What an AI-on-the-edge config says about one meter ("number")."""

    path: Path
    number: str
    digits: list[Roi]
    digit_names: list[str]
    anchors: list[Anchor]
    initial_rotation_deg: float
    decimal_shift: int
    analog: list[Roi] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    anchor_files: dict[str, Path] = field(default_factory=dict)

    @property
    def decimals(self) -> int:
        """Digits after the point among the wheels: a negative DecimalShift moves the point left."""
        return min(len(self.digits), max(0, -self.decimal_shift))


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line.strip("[]").strip().lower()
            sections.setdefault(current, [])
            continue
        if line.startswith(";") or line.startswith("#"):
            continue  # commented out: AI-on-the-edge ignores these too
        sections.setdefault(current, []).append(line)
    return sections


def _key_values(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip().lower()] = value.strip()
    return out


def read_aiotedge_config(path: Path | str, number: str | None = None) -> AiotEdgeConfig:
    """Parse ``config.ini``; LayoutError when it has no digit ROIs or a line is malformed."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"AI-on-the-edge config {path} does not exist (it is /config/config.ini on the SD card)")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LayoutError(f"cannot read AI-on-the-edge config {path}: {exc}") from exc
    sections = _sections(text)
    if "digits" not in sections:
        raise LayoutError(f"{path} has no [Digits] section: is it an AI-on-the-edge-device config.ini?")
    warnings: list[str] = []

    by_number: dict[str, list[tuple[str, Roi]]] = {}
    for line in sections["digits"]:
        if "=" in line:
            continue
        m = _ROI_LINE.match(line)
        if not m:
            raise LayoutError(f"{path} [Digits]: cannot read ROI line {line!r} (expected 'main.dig1 x y w h')")
        x, y, w, h = (int(m[k]) for k in ("x", "y", "w", "h"))
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise LayoutError(f"{path} [Digits]: ROI {m['number']}.{m['name']} has x={x} y={y} w={w} h={h}")
        by_number.setdefault(m["number"], []).append((m["name"], Roi(x, y, w, h)))
    if not by_number:
        raise LayoutError(f"{path} [Digits] lists no digit ROIs ('main.dig1 x y w h' lines)")
    numbers = list(by_number)
    if number is None:
        number = numbers[0]
        if len(numbers) > 1:
            warnings.append(f"config has several meters ({', '.join(numbers)}); imported {number!r}")
    if number not in by_number:
        raise LayoutError(f"{path} has no meter {number!r} in [Digits]; it has {', '.join(numbers)}")
    entries = sorted(by_number[number], key=lambda e: e[1].x + e[1].w / 2)

    analog = []
    for line in sections.get("analog", []):
        m = _ROI_LINE.match(line)
        if m and m["number"] == number:
            analog.append(Roi(int(m["x"]), int(m["y"]), int(m["w"]), int(m["h"])))
    if analog:
        warnings.append(f"{len(analog)} analog dial ROI(s) in [Analog] are not imported: this software reads "
                        "digit wheels only; add the decimal wheels' ROIs with --rois if the meter has them")

    align = sections.get("alignment", [])
    kv = _key_values(align)
    try:
        rotation = float(kv.get("initialrotate", "0") or 0)
    except ValueError as exc:
        raise LayoutError(f"{path} [Alignment]: InitialRotate = {kv.get('initialrotate')!r} is not a number") from exc
    anchors, files = [], {}
    for line in align:
        m = _MARK_LINE.match(line)
        if not m:
            continue
        name = Path(m["file"]).stem
        mark = path.parent / Path(m["file"]).name
        x, y = int(m["x"]), int(m["y"])
        img = cv2.imread(str(mark), cv2.IMREAD_GRAYSCALE) if mark.is_file() else None
        if img is None:
            warnings.append(f"alignment mark {m['file']} not found beside {path.name} ({mark}): its size is "
                            "unknown, so it is not used as an anchor (copy it from /config/ on the SD card)")
            continue
        if x < 0 or y < 0:
            warnings.append(f"alignment mark {name} at ({x}, {y}) is outside the image; skipped")
            continue
        anchors.append(Anchor(name, x, y, int(img.shape[1]), int(img.shape[0])))
        files[name] = mark

    pp = _key_values(sections.get("postprocessing", []))
    shift_text = pp.get(f"{number.lower()}.decimalshift", "0") or "0"
    try:
        shift = int(float(shift_text))
    except ValueError:
        warnings.append(f"[PostProcessing] {number}.DecimalShift = {shift_text!r} is not a number; using 0")
        shift = 0
    if shift > 0:
        warnings.append(f"{number}.DecimalShift = {shift} multiplies the reading; not supported, ignored")

    for text in warnings:
        log.info("%s: %s", path, text)
    return AiotEdgeConfig(
        path=path, number=number, digits=[r for _, r in entries], digit_names=[n for n, _ in entries],
        anchors=anchors, initial_rotation_deg=rotation, decimal_shift=shift, analog=analog, numbers=numbers,
        warnings=warnings, anchor_files=files)


def check_marks(config: AiotEdgeConfig, image: np.ndarray, search_px: int = 20, min_score: float = 0.6) -> list[str]:
    """Warnings from looking for the config's mark files near their places in ``image`` (empty: all fine).

    Catches the usual mistake of passing a raw frame instead of the device's (rotated) reference.jpg,
    and a config whose coordinates do not belong to this reference (its ROIs are then likely off too).
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    problems = []
    for anchor in config.anchors:
        file = config.anchor_files.get(anchor.name)
        tmpl = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE) if file else None
        if tmpl is None:
            continue
        if not anchor.roi.fits(grey.shape[1], grey.shape[0]):
            problems.append(f"alignment mark {anchor.name} ({anchor.x}, {anchor.y}) lies outside the image")
            continue
        x0, y0 = max(0, anchor.x - search_px), max(0, anchor.y - search_px)
        window = grey[y0 : anchor.y + anchor.h + search_px, x0 : anchor.x + anchor.w + search_px]
        _, score, _, loc = cv2.minMaxLoc(cv2.matchTemplate(window, tmpl, cv2.TM_CCOEFF_NORMED))
        dx, dy = x0 + loc[0] - anchor.x, y0 + loc[1] - anchor.y
        if score < min_score:
            problems.append(
                f"alignment mark {anchor.name} is not near ({anchor.x}, {anchor.y}) in this image (best match "
                f"{score:.2f}): pass the device's reference.jpg (already rotated by InitialRotate) as --image")
        elif abs(dx) > 2 or abs(dy) > 2:
            problems.append(
                f"alignment mark {anchor.name} is {dx:+d}, {dy:+d} px from where config.ini puts it: the "
                "config's ROIs may be off by as much; check them in the picture")
    return problems
