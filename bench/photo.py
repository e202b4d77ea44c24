"""How well the bridge reads residents' meter photos (`meter_vision.photo.read_photo`), and how fast.

    python -m bench.photo [--sim 40] [--hard 40] [--real-shots 2] [--seed 20261206]

Four sets of photos, each read once as the portal reads an upload (no box given):

* real: the meter photos in ``../shared/data/frames`` as they are (five integer wheels; the truth from
  the file names and the README): 12 ESP32-CAM frames of one meter tilted 34.6°, the demo's straightened
  reference, another meter with a serial number printed above its counter, a screenshot of the
  AI-on-the-edge web page showing a third meter, and a photo where a device covers the counter
  (nothing to read: it must not come out ok);
* real, phone-style: those real frames put into a phone-style scene (``edge.capture.simulator.phone``:
  another place, size, angle and obliquity, clutter with digits, glare, dirt, a finger, blur, JPEG);
* simulated and simulated, hard: phone photos of simulated meters of random styles (drum and ink
  colours, glyph sizes, red decimal wheels on light or red drums: five black and three red wheels).

A value is right when it is what the counter shows (the digit each wheel has reached), or the next step
when the lowest wheel is more than half way to it. When it is not, the photo is read again with the
true counter box (what a resident does by dragging the box; for the real frames the hand-made windows
of ``edge/calibrate/examples.py`` mapped through the aligner, or a box measured by hand): right then
counts as "box moved". Counted per set: right as proposed (the resident only confirms), right once the
box is moved, flagged unsure (or no counter), read confidently wrong (``ok`` with a wrong value; target
0) and the seconds per photo (median, 95th percentile). docs/photo.md quotes the table.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.capture.simulator.phone import PhonePhoto, phone_photo, phone_shot
from meter_vision.geometry import transform_points
from meter_vision.images import read_bgr
from meter_vision.infer import DigitModel
from meter_vision.photo import PhotoReading, read_photo

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Case:
    set: str
    name: str
    image: np.ndarray
    digits: int
    decimals: int
    reading: float | None  # None: no counter in view, nothing may come out ok
    box: Box | None  # the true counter box, when known
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    case: Case
    result: PhotoReading
    right: bool
    one_step: bool
    boxed: PhotoReading | None

    @property
    def box_moved(self) -> bool:
        return not self.right and self.boxed is not None and is_right(self.boxed.value, self.case)

    @property
    def confidently_wrong(self) -> bool:
        return self.result.status == "ok" and not self.right


def is_right(value: str | None, case: Case) -> bool:
    if value is None or case.reading is None:
        return False
    steps = case.reading * 10 ** case.decimals
    got = round(float(value) * 10 ** case.decimals)
    low = math.floor(steps + 1e-6)
    return got == low or (steps - low > 0.5 and got == low + 1)


def one_step_off(value: str | None, case: Case) -> bool:
    if value is None or case.reading is None:
        return False
    got = round(float(value) * 10 ** case.decimals)
    return abs(got - case.reading * 10 ** case.decimals) <= 1.5


def shared_data() -> Path:
    return Path(os.environ.get("METER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data"


def _bbox(points: np.ndarray, width: int, height: int) -> Box:
    x0, y0 = np.floor(points.min(axis=0))
    x1, y1 = np.ceil(points.max(axis=0))
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    return x0, y0, min(width, int(x1)) - x0, min(height, int(y1)) - y0


@dataclass(frozen=True)
class RealFrame:
    name: str
    image: np.ndarray
    reading: float | None
    window: np.ndarray | None  # the counter's four corners in the frame
    wheels: np.ndarray | None  # the wheel centres in the frame


def real_frames(root: Path) -> list[RealFrame]:
    """The real photos with their truth; the demo frames' windows through the aligner, like bench.calibrate_auto."""
    from edge.calibrate.align import Aligner
    from edge.calibrate.examples import AIOTEDGE_DEMO_ROIS, aiotedge_demo_layout
    from edge.calibrate.layout import load_layout, parse_rois

    out: list[RealFrame] = []
    demo = root / "frames" / "ai-on-the-edge-demo"
    if demo.is_dir():
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-photo"
        aligner = Aligner(load_layout(aiotedge_demo_layout(demo, tmp / "layout.toml")))
        rois = parse_rois(AIOTEDGE_DEMO_ROIS)
        corners = np.array([[rois[0].x, rois[0].y], [rois[-1].x + rois[-1].w, rois[-1].y],
                            [rois[-1].x + rois[-1].w, rois[-1].y + rois[-1].h], [rois[0].x, rois[0].y + rois[0].h]],
                           float)
        centres = np.array([[r.x + r.w / 2, r.y + r.h / 2] for r in rois], float)
        for path in [*sorted(demo.glob("5*.jpg")), demo / "reference.jpg"]:
            img = read_bgr(path)
            if path.name == "reference.jpg":
                back = np.eye(3)
                reading = 531.8  # the last wheel shows its 2 coming in, the 1 leaving at the top
            else:
                res = aligner.align(img)
                if not res.ok or res.matrix is None:
                    print(f"warning: {path.name} does not align ({res.reason}); its true box is unknown",
                          file=sys.stderr)
                    out.append(RealFrame(path.name, img, float(path.stem), None, None))
                    continue
                back = np.linalg.inv(np.vstack([res.matrix[:2], [0, 0, 1]]))
                reading = float(path.stem)
            out.append(RealFrame(f"demo {path.name}", img, reading, transform_points(back, corners),
                                 transform_points(back, centres)))
    default = root / "frames" / "ai-on-the-edge-default-config"
    if default.is_dir():
        # boxes measured by hand on the pictures (x0, y0, x1, y1 of the five wheels' windows)
        for file, reading, (x0, y0, x1, y1) in (("reference.jpg", 16.0, (200, 115, 440, 185)),
                                                 ("doc_watermeter.jpg", 38.5975, (300, 360, 612, 440))):
            quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
            pitch = (x1 - x0) / 5
            wheels = np.array([[x0 + (k + 0.5) * pitch, (y0 + y1) / 2] for k in range(5)])
            out.append(RealFrame(f"default {file}", read_bgr(default / file), reading, quad, wheels))
        out.append(RealFrame("default doc_watermeter_all.jpg (counter covered)",
                             read_bgr(default / "doc_watermeter_all.jpg"), None, None, None))
    return out


def cases(n_sim: int, n_hard: int, real_shots: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    out: list[Case] = []
    frames = real_frames(shared_data())
    for f in frames:
        h, w = f.image.shape[:2]
        out.append(Case("real", f.name, f.image, 5, 0, f.reading,
                        _bbox(f.window, w, h) if f.window is not None else None))
    for f in frames:
        if f.window is None or f.wheels is None or f.reading is None or "doc_watermeter" in f.name:
            continue
        h, w = f.image.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
        for k in range(real_shots):
            shot = phone_shot(rng, f.image, mask, centre=(w / 2, h / 2), radius=h / 2,
                              window=[tuple(p) for p in f.window], wheels=[tuple(p) for p in f.wheels],
                              value="", reading=f.reading, digits=5, decimals=0)
            out.append(_sim_case("real, phone-style", f"{f.name} #{k}", shot))
    out += [_sim_case("simulated", f"sim {i:03d}", phone_photo(rng)) for i in range(n_sim)]
    out += [_sim_case("simulated, hard", f"hard {i:03d}", phone_photo(rng, hard=True)) for i in range(n_hard)]
    return out


def _sim_case(kind: str, name: str, p: PhonePhoto) -> Case:
    return Case(kind, name, p.image, p.digits, p.decimals, p.reading, p.counter_box, p.tags)


def run_case(case: Case, model: DigitModel) -> Outcome:
    result = read_photo(case.image, digits=case.digits, decimals=case.decimals, model=model)
    right = is_right(result.value, case)
    boxed = None
    if not right and case.box is not None:
        boxed = read_photo(case.image, digits=case.digits, decimals=case.decimals, model=model, counter_box=case.box)
    return Outcome(case, result, right, one_step_off(result.value, case), boxed)


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "-"


def table(outcomes: list[Outcome]) -> str:
    head = ("| photos | n | right as proposed (ok + unsure) | right once the box is moved | flagged unsure or no "
            "counter | read confidently wrong | median s | p95 s |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    sets = list(dict.fromkeys(o.case.set for o in outcomes))
    for s in [*sets, "all"]:
        sel = [o for o in outcomes if s in ("all", o.case.set) and o.case.reading is not None]
        if not sel:
            continue
        n = len(sel)
        right = [o for o in sel if o.right]
        times = sorted(o.result.seconds for o in sel)
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        lines.append(
            f"| {s} | {n} | {_pct(len(right), n)} ({sum(o.result.status == 'ok' for o in right)} + "
            f"{sum(o.result.status != 'ok' for o in right)}) | {_pct(sum(o.box_moved for o in sel), n)} | "
            f"{_pct(sum(o.result.status != 'ok' for o in sel), n)} | {_pct(sum(o.confidently_wrong for o in sel), n)}"
            f" | {statistics.median(times):.1f} | {p95:.1f} |")
    none = [o for o in outcomes if o.case.reading is None]
    if none:
        lines.append(f"\nNo counter in view: {len(none)} photo(s), ok on {sum(o.result.status == 'ok' for o in none)} "
                     f"(must be 0): " + ", ".join(f"{o.case.name}: {o.result.status}" for o in none))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", type=int, default=40, help="simulated phone photos")
    ap.add_argument("--hard", type=int, default=40, help="simulated phone photos, hard (finger, glare on the counter)")
    ap.add_argument("--real-shots", type=int, default=2, help="phone-style shots of each real frame")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--quiet", action="store_true", help="only the table")
    args = ap.parse_args()
    model = DigitModel()
    outcomes = []
    for case in cases(args.sim, args.hard, args.real_shots, args.seed):
        t = time.perf_counter()
        o = run_case(case, model)
        outcomes.append(o)
        if not args.quiet:
            r = o.result
            verdict = ("RIGHT" if o.right else "box moved: right" if o.box_moved else
                       "no counter (right)" if case.reading is None and r.status != "ok" else
                       "WRONG and ok" if o.confidently_wrong else "wrong, flagged")
            truth = "-" if case.reading is None else f"{case.reading:g}"
            print(f"{case.set:18} {case.name[:44]:44} truth {truth:>12} read {r.value or '-':>10} {r.status:10} "
                  f"{r.confidence:.2f} {verdict:18} {time.perf_counter() - t:4.1f} s  "
                  f"{' '.join(case.tags)} | {r.reason or ''}"[:400], flush=True)
    print()
    print(f"model {model.model_id}; {len(outcomes)} photos")
    print(table(outcomes))


if __name__ == "__main__":
    main()
