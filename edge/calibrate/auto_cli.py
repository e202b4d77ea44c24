"""`meter-edge calibrate --auto`: propose the windows, say what was found and how sure, or say to draw them."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from meter_vision.geometry import rotate_image
from meter_vision.windows import NoCounterFound, propose_windows


def auto_windows(image: np.ndarray, image_path: Path, digits: int | None, decimals: int | None,
                 model: Path | None) -> tuple[np.ndarray, str, float]:
    """(the image rotated as found, the windows as a --rois string, the rotation) for the usual calibration."""
    confidences = None
    threshold = 0.5
    try:
        from meter_vision.infer import DigitModel

        clf = DigitModel(model)
        threshold = clf.threshold

        def confidences(crops: list[np.ndarray]) -> list[float]:
            return [p.confidence for p in clf.classify(crops)]
    except Exception as exc:  # without the model the geometry alone decides; say so
        click.secho(f"warning: digit model not available ({str(exc).splitlines()[0] if str(exc) else exc}); "
                    "windows proposed without its check", fg="yellow", err=True)
    if decimals is not None and digits is not None and decimals >= digits:
        raise click.ClickException(f"--decimals {decimals} must be fewer than --digits {digits}")
    try:
        prop = propose_windows(image, digits=digits, confidences=confidences)
    except NoCounterFound as exc:
        raise click.ClickException(
            f"{image_path}: {exc}. Draw the digit windows yourself: --rois \"x,y,w,h;…\" in pixels of the frame, "
            "left to right (docs/calibrate.md, section 3); a sharper frame with the LED on may also help") from None
    rois = ";".join(f"{r.x},{r.y},{r.w},{r.h}" for r in prop.rows)
    seen = f"{prop.found} seen" + (f", {len(prop.rows) - prop.found} placed at the pitch" if prop.found < len(
        prop.rows) else "")
    click.echo(f"found a counter of {len(prop.rows)} wheels ({seen}), pitch {prop.pitch:.0f} px, boxes "
               f"{prop.glyph_h:.0f} px high, rotation {prop.rotation_deg:g} deg")
    for note in prop.notes:
        click.echo(f"  {note}")
    if prop.confidences:
        low = [i + 1 for i, c in enumerate(prop.confidences) if c < threshold]
        sure = "sure" if not low and prop.found == len(prop.rows) else "unsure"
        click.echo(f"digit model's confidence per window: {' '.join(f'{c:.2f}' for c in prop.confidences)} "
                   f"(lowest {min(prop.confidences):.2f}, threshold {threshold:.2f}): {sure}"
                   + (f"; check window(s) {', '.join(map(str, low))}" if low else ""))
    click.echo(f'windows: --rotate {prop.rotation_deg:g} --rois "{rois}" (to adjust by hand)')
    straight = rotate_image(image, prop.rotation_deg) if prop.rotation_deg else image
    return straight, rois, prop.rotation_deg
