"""The installer's calibration: where the digits are on the reference image, saved as ``layout.toml``.

The reference image is saved beside the layout, so the device aligns every frame against exactly the
picture the installer looked at when choosing the digit windows (ROIs).
"""

from __future__ import annotations

import datetime as dt
import itertools
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from meter_vision.geometry import Roi

LAYOUT_VERSION = 1


class LayoutError(Exception):
    """A layout file or ROI string is missing or invalid; the message says which key and what to do."""


@dataclass(frozen=True)
class Anchor:
    """A distinctive patch of the reference image (an alignment mark); checked after alignment."""

    name: str
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)

    @property
    def roi(self) -> Roi:
        return Roi(self.x, self.y, self.w, self.h)


class AlignSettings(BaseModel):
    """How frames are aligned to the reference, and when a frame is refused instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_rotation_deg: float = Field(
        0.0, ge=-180, le=180,
        description="Rotate every frame by this before aligning; degrees clockwise, like AI-on-the-edge's "
                    "InitialRotate. The reference image is stored already rotated.")
    match_width: int = Field(640, ge=160, le=4096, description="Width at which features are matched (speed).")
    features: int = Field(1500, ge=100, le=20000, description="ORB features per image.")
    min_inliers: int = Field(20, ge=6, description="Fewer matching features than this: another scene.")
    min_score: float = Field(0.5, ge=-1, le=1, description="Lowest correlation of aligned frame and reference.")
    max_rotation_deg: float = Field(15.0, gt=0, le=180, description="Largest plausible rotation after the initial one.")
    min_scale: float = Field(0.8, gt=0, le=1, description="Smallest plausible scale (camera moved away).")
    max_scale: float = Field(1.25, ge=1, description="Largest plausible scale (camera moved closer).")
    max_shift_frac: float = Field(0.25, gt=0, le=1, description="Largest plausible shift, as a fraction of the width.")
    min_brightness: float = Field(20.0, ge=0, le=255, description="Darker mean grey level: a black frame.")
    min_contrast: float = Field(8.0, ge=0, le=128, description="Smaller grey standard deviation: a blank frame.")
    min_sharpness_ratio: float = Field(
        0.06, ge=0, le=10, description="Blurred: Laplacian variance below this fraction of the reference's.")
    refine: bool = Field(True, description="Refine the feature fit with ECC (sub-pixel) on the whole face.")
    min_anchor_score: float = Field(0.6, ge=-1, le=1, description="Lowest match of an anchor patch after alignment.")
    anchor_search_px: int = Field(6, ge=0, le=200, description="How far from its place an anchor may be found.")


class Layout(BaseModel):
    """What ``meter-edge calibrate`` writes and every cycle reads (DESIGN.md, "Calibration output")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_image: Path = Field(description="The reference frame the ROIs are drawn on (aligned/rotated).")
    anchors: list[Anchor] = Field(default_factory=list, description="Alignment marks on the reference image.")
    digits: list[Roi] = Field(min_length=1, description="One ROI per digit wheel, left to right.")
    decimals: int = Field(0, ge=0, description="How many of the digits are after the decimal point.")
    unit: str = Field("m3", min_length=1, description="Unit of the reading.")
    alignment: AlignSettings = Field(default_factory=AlignSettings)  # type: ignore[arg-type]

    @field_validator("digits")
    @classmethod
    def _left_to_right(cls, digits: list[Roi]) -> list[Roi]:
        centres = [r.x + r.w / 2 for r in digits]
        if any(b <= a for a, b in itertools.pairwise(centres)):
            raise ValueError("digit ROIs must be listed left to right (each centre right of the previous one)")
        return digits

    @model_validator(mode="after")
    def _decimals_fit(self) -> Layout:
        if self.decimals > len(self.digits):
            raise ValueError(f"decimals = {self.decimals} but there are only {len(self.digits)} digit ROIs")
        return self


def parse_rois(text: str) -> list[Roi]:
    """Parse ``"x,y,w,h;x,y,w,h;…"`` (spaces allowed) into ROIs; LayoutError names the bad one."""
    rois = []
    parts = [p.strip() for p in text.replace("\n", ";").split(";")]
    parts = [p for p in parts if p]
    if not parts:
        raise LayoutError('no ROIs given: pass --rois "x,y,w,h;x,y,w,h;…" (pixels, left to right)')
    for i, part in enumerate(parts, start=1):
        fields = [f.strip() for f in part.replace(" ", ",").split(",") if f.strip()]
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 numbers x,y,w,h, got {len(fields)}")
            x, y, w, h = (round(float(f)) for f in fields)
            if x < 0 or y < 0:
                raise ValueError(f"x and y must be >= 0, got x={x}, y={y}")
            if w <= 0 or h <= 0:
                raise ValueError(f"width and height must be > 0, got w={w}, h={h}")
            rois.append(Roi(x, y, w, h))
        except (ValueError, ValidationError) as exc:
            raise LayoutError(f"ROI {i} {part!r} is invalid: {_short(exc)} (x, y >= 0; w, h > 0; pixels)") from exc
    return rois


def check_rois_inside(rois: list[Roi], width: int, height: int) -> None:
    """LayoutError naming the first ROI that is not inside a width × height image."""
    for i, r in enumerate(rois, start=1):
        if not r.fits(width, height):
            raise LayoutError(
                f"ROI {i} ({r}) reaches past the image ({width}x{height} px): it ends at x={r.x + r.w}, "
                f"y={r.y + r.h}. Measure the ROIs on this image (or on the rotated one with --rotate).")


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc)


HEADER = """\
# Meter layout written by `meter-edge calibrate` on {when}.
# reference_image: the frame the ROIs were drawn on (relative to this file); every photo is aligned to it.
# digits: one window per wheel, left to right: x, y (top-left), w, h in reference-image pixels.
# decimals: how many of those digits are after the decimal point. [alignment]: see docs/calibrate.md.
"""


def save_layout(layout: Layout, path: Path | str) -> Path:
    """Write ``layout`` as TOML; the reference path is stored relative to the file when it sits beside it."""
    path = Path(path)
    ref = Path(layout.reference_image)
    try:
        ref_text = str(ref.resolve().relative_to(path.parent.resolve()))
    except ValueError:
        ref_text = str(ref.resolve())
    data: dict[str, Any] = {
        "version": LAYOUT_VERSION,
        "reference_image": ref_text,
        "decimals": layout.decimals,
        "unit": layout.unit,
        "digits": [{"x": r.x, "y": r.y, "w": r.w, "h": r.h} for r in layout.digits],
        "anchors": [{"name": a.name, "x": a.x, "y": a.y, "w": a.w, "h": a.h} for a in layout.anchors],
        "alignment": layout.alignment.model_dump(),
    }
    if not data["anchors"]:
        del data["anchors"]
    text = HEADER.format(when=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")) + "\n" + tomli_w.dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def load_layout(path: Path | str) -> Layout:
    """Read a layout file; LayoutError says which key is wrong and what to do about it."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(
            f"layout file {path} does not exist: write one with `meter-edge calibrate --image FRAME "
            f'--rois "x,y,w,h;…" --out {path}` (or set `layout` in the edge config)')
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LayoutError(
            f"layout file {path} is not valid TOML: {exc}; fix it or run `meter-edge calibrate` again") from exc
    version = data.pop("version", LAYOUT_VERSION)
    if version != LAYOUT_VERSION:
        raise LayoutError(f"layout file {path}: version = {version!r}, this software reads version {LAYOUT_VERSION}")
    if "reference_image" in data and isinstance(data["reference_image"], str):
        ref = Path(data["reference_image"])
        data["reference_image"] = ref if ref.is_absolute() else path.parent / ref
    try:
        layout = Layout.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise LayoutError(f"layout file {path} is invalid: {problems}") from exc
    if not layout.reference_image.is_file():
        raise LayoutError(
            f"layout file {path}: reference_image {layout.reference_image} does not exist; keep the reference "
            "picture beside the layout (calibrate writes both) or run `meter-edge calibrate` again")
    return layout


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "layout"
