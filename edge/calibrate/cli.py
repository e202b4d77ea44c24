"""`meter-edge calibrate`: write layout.toml, its reference image and a picture for the installer."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import click
import cv2
import numpy as np
from pydantic import ValidationError

from contract.settings import plain_errors
from edge.calibrate.aiotedge import check_marks, read_aiotedge_config
from edge.calibrate.align import Aligner, AlignError, crop_rois
from edge.calibrate.check import WindowCheck, check_windows, resolve_value
from edge.calibrate.layout import (
    AlignSettings,
    Anchor,
    Layout,
    LayoutError,
    Roi,
    check_rois_inside,
    parse_rois,
    save_layout,
)
from edge.calibrate.picture import CropReading, render_picture
from edge.reading.model import Decision
from edge.reading.rules import Rules
from meter_vision.geometry import rotate_image
from meter_vision.images import ImageRefused, read_bgr

log = logging.getLogger(__name__)


def reference_path_for(out: Path) -> Path:
    """``layout.toml`` → ``layout.reference.png`` (the frame the device aligns against)."""
    return out.with_name(out.stem + ".reference.png")


def picture_path_for(out: Path) -> Path:
    """``layout.toml`` → ``layout.png`` (the picture for the installer)."""
    return out.with_suffix(".png")


@dataclass
class ModelReading:
    """What the digit model makes of the windows: per-window readings, the window checks, and the value
    `meter-edge read` would resolve from them (None when the model could not be used)."""

    readings: list[CropReading] | None
    note: str
    checks: list[WindowCheck] = field(default_factory=list)
    decision: Decision | None = None


def read_model(image: np.ndarray, crops: list[np.ndarray], rois: list[Roi], model: Path | None,
               rules: Rules) -> ModelReading:
    """Classify the crops, check the windows, resolve the value; or say why the model could not be
    used (never raises: a missing model or runtime must not stop a calibration)."""
    try:
        from meter_vision.infer import DigitModel

        clf = DigitModel(model)
        preds = clf.classify(crops)
        checks = check_windows(image, rois, clf, own=preds)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ModelReading(None, f"model not available: {reason}")
    readings = [CropReading(p.digit, p.value, p.confidence) for p in preds]
    note = f"model {clf.model_id} ({clf.path.name}), confidence threshold {clf.threshold:.2f}"
    return ModelReading(readings, note, checks, resolve_value(preds, rules))


def reading_rules(config_path: Path | None, decimals: int) -> tuple[Rules, str | None]:
    """The reading rules `meter-edge read` would use (config/edge.toml when present), or the defaults
    with a note when the config cannot be loaded."""
    from contract.settings import ConfigError
    from edge.config import load_edge_config

    try:
        return Rules.from_config(load_edge_config(config_path).reading, decimals), None
    except ConfigError as exc:
        return Rules(decimals=decimals), f"edge config not loaded ({exc}); the value uses the default reading rules"


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


@click.command("calibrate")
@click.option("--image", "image_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="A frame from this camera with the LED on (with --from-aiotedge: the device's reference.jpg).")
@click.option("--rois", default=None,
              help='Digit windows "x,y,w,h;x,y,w,h;…" in pixels of the (rotated) image, left to right.')
@click.option("--decimals", type=click.IntRange(min=0), default=None,
              help="How many of the digits are after the decimal point (default 0, or the imported config's).")
@click.option("--unit", default="m3", show_default=True, help="Unit of the reading.")
@click.option("--rotate", "rotate_deg", type=click.FloatRange(-180, 180), default=None,
              help="Rotate the image by DEG clockwise first (like AI-on-the-edge's InitialRotate); the ROIs are "
                   "then measured on the rotated image, which the picture shows.")
@click.option("--from-aiotedge", "aiotedge", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Import digit ROIs, alignment marks and InitialRotate from an AI-on-the-edge-device config.ini; "
                   "--rois are added to the imported ones (all sorted left to right).")
@click.option("--auto", "auto", is_flag=True,
              help="Find the counter and one window per wheel, and the rotation when it is tilted (instead of "
                   "--rois); prints what it found and how sure the digit model is. Check the picture.")
@click.option("--digits", "n_digits", type=click.IntRange(1, 12), default=None,
              help="With --auto: how many wheels the counter has (integer and decimal ones); default: as found.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The layout file to write (the reference image and picture go beside it).")
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Digit model (.tflite) for the picture's readings; default: the bundled one.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Edge config whose reading rules resolve the value [default: config/edge.toml when present].")
@click.option("--force", is_flag=True,
              help="Write the layout even when a window is not on a digit (the warnings stay).")
def calibrate(image_path: Path, rois: str | None, decimals: int | None, unit: str, rotate_deg: float | None,
              aiotedge: Path | None, auto: bool, n_digits: int | None, out: Path, model: Path | None,
              config_path: Path | None, force: bool) -> None:
    """Write a layout (where the digits are) from one frame, and a picture to check it.

    \b
    Takes a frame from the installed camera and the digit windows (ROIs) measured on it, and writes:
      OUT                      the layout the device reads (layout.toml)
      OUT-stem.reference.png   the frame every later photo is aligned to
      OUT-stem.png             the frame with numbered windows and, under it, each window enlarged
                               with what the digit model reads there: check it before leaving.

    \b
    Each window is checked with the digit model: a window that reads N, or whose digit reads best
    well to one side, is not on a digit. It is drawn red, warned about, and the layout is NOT written
    (exit status 1) unless --force; the picture is always written. The value printed is the one
    `meter-edge read` would resolve from these wheels (rolling wheels settled from the lower ones).

    \b
    Examples:
      meter-edge calibrate --image frame.jpg --rois "198,62,49,71;258,62,49,71" --out layout.toml
      meter-edge calibrate --from-aiotedge config.ini --image reference.jpg --out layout.toml
      meter-edge calibrate --image frame.jpg --auto --digits 8 --decimals 3 --out layout.toml
    """
    if not image_path.is_file():
        raise _fail(f"image {image_path} does not exist")
    try:
        image = read_bgr(image_path)
    except ImageRefused as exc:
        raise _fail(f"{exc}; take another frame (JPEG/PNG)") from None
    if auto and (rois is not None or aiotedge is not None or rotate_deg is not None):
        raise _fail("--auto finds the windows and the rotation itself: leave out --rois, --rotate and "
                    "--from-aiotedge (or leave out --auto to give them)")
    if n_digits is not None and not auto:
        raise _fail("--digits goes with --auto (with --rois the number of windows is the number of wheels)")
    if auto:
        from edge.calibrate.auto_cli import auto_windows

        image, rois, rotate_deg = auto_windows(image, image_path, n_digits, decimals, model)
    if rois is None and aiotedge is None:
        raise _fail('no digit windows given: pass --rois "x,y,w,h;…", --auto, and/or --from-aiotedge config.ini')

    anchors: list[Anchor] = []
    digits: list[Roi] = []
    rotation = 0.0
    notes: list[str] = []
    if aiotedge is not None:
        if rotate_deg is not None:
            raise _fail("--rotate and --from-aiotedge together: the imported InitialRotate already says it")
        try:
            cfg = read_aiotedge_config(aiotedge)
        except LayoutError as exc:
            raise _fail(str(exc)) from exc
        digits += cfg.digits
        anchors = cfg.anchors
        rotation = cfg.initial_rotation_deg
        notes += cfg.warnings + check_marks(cfg, image)
        if decimals is None:
            decimals = cfg.decimals
        click.echo(f"imported from {aiotedge}: {len(cfg.digits)} digit ROI(s) ({', '.join(cfg.digit_names)}), "
                   f"{len(cfg.anchors)} alignment mark(s), InitialRotate {rotation:g}")
    elif rotate_deg and auto:
        rotation = rotate_deg  # auto_windows returned the image rotated already
    elif rotate_deg:
        rotation = rotate_deg
        image = rotate_image(image, rotation)
    if rois is not None:
        try:
            digits += parse_rois(rois)
        except LayoutError as exc:
            raise _fail(str(exc)) from exc
    digits.sort(key=lambda r: r.x + r.w / 2)
    h, w = image.shape[:2]
    try:
        check_rois_inside(digits, w, h)
    except LayoutError as exc:
        raise _fail(str(exc)) from exc

    out = out.resolve()
    ref_path = reference_path_for(out)
    try:
        layout = Layout(reference_image=ref_path, anchors=anchors, digits=digits, decimals=decimals or 0, unit=unit,
                        alignment=AlignSettings(initial_rotation_deg=rotation))
    except ValidationError as exc:
        raise _fail(f"invalid layout: {plain_errors(exc)}") from None
    except ValueError as exc:
        raise _fail(f"invalid layout: {exc}") from exc
    try:
        Aligner(layout, reference=image)  # the device must be able to align against this frame
    except AlignError as exc:
        raise _fail(str(exc)) from exc

    crops = crop_rois(image, layout)
    rules, rules_note = reading_rules(config_path, layout.decimals)
    if rules_note:
        notes.append(rules_note)
    result = read_model(image, crops, digits, model, rules)
    problems = [c.problem for c in result.checks] if result.checks else None
    title = f"{out.name}: {len(digits)} digits, {layout.decimals} after the point, unit {unit}"
    if rotation:
        title += f", frames rotated {rotation:g} deg first"
    value_line = ""
    if result.decision is not None:
        d = result.decision
        value_line = (f"read would give: {d.value} {unit}" if d.value is not None
                      else f"read would give no value: {d.reason}")
    bad = [c for c in result.checks if not c.ok]
    if bad:
        value_line = f"{len(bad)} WINDOW(S) NOT ON A DIGIT (red)" + (f"; {value_line}" if value_line else "")
    picture = render_picture(image, digits, decimals=layout.decimals, anchors=anchors, readings=result.readings,
                             model_note=result.note, title=title, problems=problems, value_line=value_line)
    pic_path = picture_path_for(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(pic_path), picture):
            raise OSError(f"cannot write {pic_path} (disk full or no permission?)")
    except (OSError, cv2.error) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail(f"cannot write the layout to {out}: {what}; pass --out a path in a folder you can write "
                    "(not under a file)") from None

    for note in notes:
        click.secho(f"warning: {note}", fg="yellow", err=True)
    if result.readings is not None:
        shown = "".join(r.text().split()[0] for r in result.readings)
        click.echo(f"the model reads per wheel: {shown[: len(shown) - layout.decimals]}"
                   + (f".{shown[len(shown) - layout.decimals:]}" if layout.decimals else ""))
        resolved = result.decision
        if resolved is not None and resolved.value is not None:
            click.echo(f"read would give: {resolved.value} {unit} ({resolved.status})")
        elif resolved is not None:
            click.secho(f"read would give no value: {resolved.reason}", fg="yellow", err=True)
    else:
        click.secho(f"{result.note}; the windows were not checked", fg="yellow", err=True)
    for c in bad:
        click.secho(f"WARNING: {c.problem}", fg="red", bold=True, err=True)
    if bad and not force:
        click.echo(f"picture:   {pic_path}  <- open it: the red windows are not on a digit")
        raise _fail(f"{len(bad)} of {len(digits)} digit windows are not on a digit, so the layout was NOT "
                    f"written: fix the ROIs (see {pic_path.name}), or pass --force to write it anyway")
    if bad:
        click.secho(f"--force: writing the layout although {len(bad)} window(s) are not on a digit",
                    fg="red", err=True)

    try:
        tmp = ref_path.with_name(ref_path.name + ".tmp.png")
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"cannot write {tmp} (disk full or no permission?)")
        shutil.move(tmp, ref_path)
        save_layout(layout, out)
    except (OSError, cv2.error) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail(f"cannot write the layout to {out}: {what}; pass --out a path in a folder you can write "
                    "(not under a file)") from None
    click.echo(f"layout:    {out}")
    click.echo(f"reference: {ref_path}")
    click.echo(f"picture:   {pic_path}  <- open it: each number's box must hold one whole digit")
