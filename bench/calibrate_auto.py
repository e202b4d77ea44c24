"""How often `meter-edge calibrate --auto` proposes the right windows, and the value is read right through them.

Real photos (../shared/data/frames, with the hand-made windows of edge/calibrate/examples.py and the
AI-on-the-edge default config) and simulated meters of random styles, tilted by up to ±30° with glare and
blur. A window is "right" when its centre is within `--tol` px of the hand-made (or rendered) one; a frame
is "read right" when the model's digit in every window is the wheel's digit (or the next one on a wheel
that is rolling). Prints one line per photo and a summary (docs/calibrate.md quotes it).

    PYTHONPATH=. python -m bench.calibrate_auto [--sim N] [--tol PX]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.calibrate.align import Aligner
from edge.calibrate.examples import AIOTEDGE_DEMO_ROIS, AIOTEDGE_DEMO_ROTATION, aiotedge_demo_layout
from edge.calibrate.layout import load_layout, parse_rois
from edge.capture.simulator.faults import Faults, Glare
from edge.capture.simulator.meter import ROIS, MeterStyle, render_frame, wheel_positions
from meter_vision.geometry import Roi, rotation_matrix, transform_points
from meter_vision.images import read_bgr
from meter_vision.infer import DigitModel
from meter_vision.windows import NoCounterFound, Proposal, propose_windows

DEFAULT_HAND = [Roi(x=294, y=126, w=30, h=54), Roi(x=343, y=126, w=30, h=54), Roi(x=391, y=126, w=30, h=54)]


def centres_in_frame(prop: Proposal, width: int, height: int) -> np.ndarray:
    """Window centres mapped from the straightened image back to the photo's pixels."""
    pts = np.array([[r.x + r.w / 2, r.y + r.h / 2] for r in prop.rows], float)
    back = np.linalg.inv(rotation_matrix(width, height, prop.rotation_deg))
    return transform_points(back, pts)


def digits_read(model: DigitModel, image: np.ndarray, prop: Proposal) -> list[int | None]:
    return [p.digit for p in _preds(model, image, prop)]


def _preds(model: DigitModel, image: np.ndarray, prop: Proposal) -> list[Any]:
    from meter_vision.geometry import rotate_image

    straight = rotate_image(image, prop.rotation_deg) if prop.rotation_deg else image
    return list(model.classify([straight[r.y:r.y + r.h, r.x:r.x + r.w] for r in prop.rows]))


def resolved_ok(model: DigitModel, image: np.ndarray, prop: Proposal, value: float, decimals: int) -> bool:
    """What `meter-edge read` resolves from these windows (rolling wheels settled from the lower ones) is the
    meter's value as shown, or the next step when the last wheel is more than half way there."""
    from edge.calibrate.check import resolve_value
    from edge.reading.rules import Rules

    decision = resolve_value(_preds(model, image, prop), Rules(decimals=decimals))
    if decision.value is None:
        return False
    steps = value * 10 ** decimals
    got = round(float(decision.value) * 10 ** decimals)
    return got == math.floor(steps) or (steps - math.floor(steps) > 0.5 and got == math.floor(steps) + 1)


def wheel_ok(read: int | None, position: float) -> bool:
    d = math.floor(position) % 10
    return read == d or (position - math.floor(position) > 0.5 and read == (d + 1) % 10)


def match(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distance from each true centre to the nearest proposed one."""
    return np.array([float(np.min(np.hypot(*(found - t).T))) for t in truth])


def run(n_sim: int, tol: float) -> None:
    model = DigitModel()

    def conf(crops: list[np.ndarray]) -> list[float]:
        return [p.confidence for p in model.classify(crops)]

    # set, name, windows ok, every wheel's digit ok, worst px, seconds, value as `read` resolves it ok
    rows: list[tuple[str, str, bool, bool, float, float, bool]] = []
    shared = Path(os.environ.get("METER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data"
    demo = shared / "frames" / "ai-on-the-edge-demo"
    if demo.is_dir():
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-calibrate-auto"
        layout = load_layout(aiotedge_demo_layout(demo, tmp / "layout.toml"))
        aligner = Aligner(layout)
        hand = np.array([[r.x + r.w / 2, r.y + r.h / 2] for r in parse_rois(AIOTEDGE_DEMO_ROIS)])
        for path in [*sorted(demo.glob("5*.jpg")), demo / "reference.jpg"]:
            img = read_bgr(path)
            h, w = img.shape[:2]
            t = time.perf_counter()
            try:
                prop = propose_windows(img, digits=5, confidences=conf)
            except NoCounterFound:
                rows.append(("real", path.name, False, False, float("inf"), time.perf_counter() - t, False))
                continue
            s = time.perf_counter() - t
            found = centres_in_frame(prop, w, h)
            if path.name == "reference.jpg":
                in_ref = found
            else:  # the photo's pixels -> the hand-made windows' reference pixels, through the aligner
                res = aligner.align(img)
                assert res.ok and res.matrix is not None, res.reason
                in_ref = transform_points(res.matrix, found)
            err = match(in_ref, hand)
            value = float(path.stem) if path.name != "reference.jpg" else 532.2
            positions = [value / 10 ** (4 - i) % 10 for i in range(5)]
            positions = [math.floor(p) if i < 4 else p for i, p in enumerate(positions)]
            read = digits_read(model, img, prop)
            ok = all(wheel_ok(r, p) for r, p in zip(read, positions, strict=True))
            ok_resolved = resolved_ok(model, img, prop, value, 0)
            if path.name == "reference.jpg":
                ok = read[:4] == [0, 0, 5, 3]  # its last wheel is between 2 and 3
                ok_resolved = ok
            rows.append(("real", f"{path.name} rot {prop.rotation_deg:g} (true "
                         f"{0 if path.name == 'reference.jpg' else AIOTEDGE_DEMO_ROTATION:g})",
                         bool(err.max() <= tol), ok, float(err.max()), s, ok_resolved))
        default = shared / "frames" / "ai-on-the-edge-default-config" / "reference.jpg"
        img = read_bgr(default)
        t = time.perf_counter()
        prop = propose_windows(img, digits=5, confidences=conf)
        s = time.perf_counter() - t
        found = centres_in_frame(prop, img.shape[1], img.shape[0])
        err = match(found, np.array([[r.x + r.w / 2, r.y + r.h / 2] for r in DEFAULT_HAND]))
        read = digits_read(model, img, prop)
        rows.append(("real", f"default reference.jpg rot {prop.rotation_deg:g} (hand windows sit ~13 px left of "
                     "the glyphs)", bool(err.max() <= tol), read == [0, 0, 0, 1, 6], float(err.max()), s,
                     resolved_ok(model, img, prop, 16.0, 0)))

    rng = np.random.default_rng(20261202)
    for i in range(n_sim):
        style = MeterStyle.random(rng)
        angle = float(rng.uniform(-30, 30))
        glare = Glare(float(rng.uniform(150, 500)), float(rng.uniform(100, 350)), float(rng.uniform(25, 70)),
                      float(rng.uniform(0.5, 1.0))) if rng.random() < 0.5 else None
        blur = float(rng.uniform(0.8, 1.6)) if rng.random() < 0.3 else 0.0
        faults = Faults(angle_deg=angle, glare=glare, blur_sigma=blur, tags=("bench",))
        value = float(rng.uniform(0, 99999))
        img = render_frame(value, faults, rng, style)
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        truth = transform_points(m, np.array([[x + rw / 2, y + rh / 2] for x, y, rw, rh in ROIS], float))
        name = f"sim {i:02d} tilt {angle:+.1f}{' glare' if glare else ''}{' blur' if blur else ''}"
        t = time.perf_counter()
        try:
            prop = propose_windows(img, digits=8, confidences=conf)
        except NoCounterFound:
            rows.append(("sim", name, False, False, float("inf"), time.perf_counter() - t, False))
            continue
        secs = time.perf_counter() - t
        err = match(centres_in_frame(prop, w, h), truth)
        read = digits_read(model, img, prop)
        ok = all(wheel_ok(r, p) for r, p in zip(read, wheel_positions(value), strict=True))
        rows.append(("sim", f"{name} -> rot {prop.rotation_deg:g}", bool(err.max() <= tol), ok, float(err.max()),
                     secs, resolved_ok(model, img, prop, value, 3)))

    for kind, name, win, ok, worst, took, right in rows:
        print(f"{kind:4} {name:60} windows {'ok ' if win else 'off'} (worst {worst:5.1f} px)  "
              f"digits {'ok' if ok else 'WRONG'}  value {'ok' if right else 'WRONG'}  {took:.1f} s")
    for kind in ("real", "sim"):
        sel = [r for r in rows if r[0] == kind]
        if sel:
            print(f"{kind}: windows within {tol:g} px on {sum(r[2] for r in sel)}/{len(sel)}, every wheel's digit "
                  f"right on {sum(r[3] for r in sel)}/{len(sel)}, the value as read resolves it right on "
                  f"{sum(r[6] for r in sel)}/{len(sel)}, median {np.median([r[5] for r in sel]):.1f} s per photo")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", type=int, default=24, help="simulated photos")
    ap.add_argument("--tol", type=float, default=5.0, help="px a window centre may be off")
    args = ap.parse_args()
    run(args.sim, args.tol)
