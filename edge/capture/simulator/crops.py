"""Digit crops of simulated meters for training, cut the way the device pipeline cuts them."""

from __future__ import annotations

import cv2
import numpy as np

from edge.capture.simulator.faults import FaultMix, apply_photometric, sample_faults
from edge.capture.simulator.meter import N_INT, N_WHEELS, ROIS, WINDOW, MeterStyle, render_clean

_MARGIN = 24  # pixels around the counter window kept for blur and glare
_FRAMES_PER_METER = 3  # photos taken of each random meter (a style is costly to set up)


def random_positions(rng: np.random.Generator, k: int) -> list[float]:
    """Wheel positions on the 0.1 grid of the labels (0.0 … 9.9); about a third exactly on a digit."""
    tenths = rng.integers(0, 100, k)
    on_digit = rng.random(k) < 0.33
    tenths = np.where(on_digit, tenths // 10 * 10, tenths)
    return [float(t) / 10 for t in tenths]


def digit_crops(n: int, seed: int, mix: FaultMix | None = None) -> list[tuple[np.ndarray, float]]:
    """`n` BGR crops of single wheels with the wheel's true position (0.0–9.9, one decimal).

    Every few simulated frames get a new meter style (drum and ink colours, font weight, digit size, drum
    curvature) and photometric faults from the default mix without hard faults (blur, glare, dark,
    noise); geometric faults are left out because alignment undoes them, and the crop box is jittered
    by up to 2 px instead. The crop goes through JPEG as on the device. Deterministic for a seed.
    """
    if n < 0:
        raise ValueError("n must be ≥ 0")
    rng = np.random.default_rng(seed)
    mix = (mix or FaultMix()).without_hard().photometric_only()
    wx, wy, ww, wh = WINDOW
    ox, oy = wx - _MARGIN, wy - _MARGIN
    out: list[tuple[np.ndarray, float]] = []
    frames = 0
    style = MeterStyle.default()
    while len(out) < n:
        if frames % _FRAMES_PER_METER == 0:
            style = MeterStyle.random(rng)
        frames += 1
        positions = random_positions(rng, N_WHEELS)
        frame = render_clean(positions, style, dial_value=float(rng.uniform(0, 1000)))
        region = frame[oy: wy + wh + _MARGIN, ox: wx + ww + _MARGIN]
        faults = sample_faults(mix, rng)
        if not faults.tags:  # a clean frame still varies a little in exposure
            faults = type(faults)(gain=float(rng.uniform(0.85, 1.1)), noise_sigma=float(rng.uniform(0.5, 3)))
        region = apply_photometric(region, faults, rng, origin=(ox, oy))
        ok, jpg = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError("JPEG decoding failed")
        region = decoded
        for i in rng.permutation(N_WHEELS):
            if len(out) >= n:
                break
            x, y, w, h = ROIS[i]
            jx, jy = (int(v) for v in rng.integers(-2, 3, 2))
            jw, jh = (int(v) for v in rng.integers(-1, 2, 2))
            x0, y0 = x - ox + jx, y - oy + jy
            crop = region[y0: y0 + h + jh, x0: x0 + w + jw].copy()
            out.append((crop, positions[i]))
    return out


__all__ = ["N_INT", "digit_crops", "random_positions"]
