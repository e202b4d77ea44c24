"""Worked calibrations of photos that are not shipped (docs/calibrate.md; tests run them when present).

AI-on-the-edge-device's demo frames (``ai-on-the-edge-demo/``: 12 ESP32-CAM photos of a meter at
530–531 m³): the five integer wheels in the coordinate system of its ``reference.jpg`` (already rotated by
``InitialRotate = -34.6``). Wheel 5 is the config's ``main.dig1``; the others were measured on the
reference (digit centres at x ≈ 220, 280, 341, 397, 459: a pitch of about 60 px) and checked on the crops of
all 12 frames.
"""

from __future__ import annotations

from pathlib import Path

AIOTEDGE_DEMO_ROIS = "198,62,49,71;258,62,49,71;318,62,49,71;378,62,49,71;438,62,49,71"
AIOTEDGE_DEMO_ROTATION = -34.6
AIOTEDGE_DEMO_DIGITS = "0053"  # the four wheels that do not move in the sequence; wheel 5 shows 0, 1 or 2


def aiotedge_demo_layout(demo_dir: Path, out: Path) -> Path:
    """Write the demo frames' layout (its reference.jpg, the five wheels, the two marks) to ``out``.

    The same as ``meter-edge calibrate --from-aiotedge DEMO/config.ini --image DEMO/reference.jpg
    --rois "<first four of AIOTEDGE_DEMO_ROIS>" --out OUT``, without the picture.
    """
    import shutil

    from edge.calibrate.aiotedge import read_aiotedge_config
    from edge.calibrate.layout import AlignSettings, Layout, parse_rois, save_layout

    cfg = read_aiotedge_config(demo_dir / "config.ini")
    out.parent.mkdir(parents=True, exist_ok=True)
    ref = out.with_name(out.stem + ".reference.jpg")
    shutil.copyfile(demo_dir / "reference.jpg", ref)
    layout = Layout(reference_image=ref, anchors=cfg.anchors, digits=parse_rois(AIOTEDGE_DEMO_ROIS),
                    alignment=AlignSettings(initial_rotation_deg=cfg.initial_rotation_deg))
    return save_layout(layout, out)
