"""Crops from the field simulator for training: wheels as the device cuts them, and windows placed
between two wheels (a misplaced layout) that must read N."""

from __future__ import annotations

import logging
from functools import lru_cache

import cv2
import numpy as np

from training.data import DigitSet

log = logging.getLogger("training")
SIM_GROUP = "simulator"


def simulated_crops(n: int, seed: int) -> DigitSet:
    """Digit crops cut from the field simulator's frames, if the simulator is installed."""
    out = DigitSet()
    if n <= 0:
        return out
    try:
        from edge.capture.simulator import digit_crops  # type: ignore[attr-defined]
    except ImportError as exc:
        log.warning("field simulator not available (%s): training on real crops only", exc)
        return out
    for i, (img, value) in enumerate(digit_crops(n, seed)):
        v = float(value) % 10.0
        out.images.append(img)
        out.values.append(round(v, 1) % 10.0)
        out.labels.append(str(int(np.floor(v + 1e-6)) % 10))
        out.kinds.append("sim")
        out.groups.append(SIM_GROUP)
        out.meter_types.append(SIM_GROUP)
        out.files.append(f"sim:{seed}:{i}")
    return out


@lru_cache(maxsize=4)
def simulated_misplaced(n: int, seed: int) -> list[np.ndarray]:
    """``n`` windows of simulated meters shifted sideways by 35–65 % of the wheel pitch (half of one
    wheel, the gap, half of the next), or far too large; deterministic for a seed."""
    if n <= 0:
        return []
    try:
        from edge.capture.simulator.crops import random_positions
        from edge.capture.simulator.meter import N_WHEELS, ROIS, WHEEL_STEP, MeterStyle, render_clean
    except ImportError as exc:
        log.warning("field simulator not available (%s): no simulated misplaced windows", exc)
        return []
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        style = MeterStyle.random(rng)
        frame = render_clean(random_positions(rng, N_WHEELS), style, dial_value=float(rng.uniform(0, 1000)))
        ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
        decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            frame = decoded
        for i in rng.permutation(N_WHEELS - 1)[:5]:
            x, y, w, h = ROIS[int(i)]
            if rng.random() < 0.85:
                dx = round(WHEEL_STEP * rng.uniform(0.35, 0.65))
                dy = int(rng.integers(-3, 4))
                out.append(frame[y + dy : y + dy + h, x + dx : x + dx + w].copy())
            else:  # a window twice too big around a wheel
                out.append(frame[y - h // 2 : y + h + h // 2, x - w // 2 : x + w + w // 2].copy())
            if len(out) >= n:
                break
    return out
