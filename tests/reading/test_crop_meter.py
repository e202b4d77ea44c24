"""The real-crop meter of the reading replay (bench/crop_meter.py): each wheel window shows a real crop
whose labelled position matches the wheel's, and the replay is honest about where crops come from."""

from __future__ import annotations

import csv
import math
from datetime import timedelta
from pathlib import Path

import numpy as np

from bench.crop_meter import NEAR, VAL_WATER, CropPool, crop_frames
from bench.reading import SIM_START


def _labels(shared: Path) -> dict[str, tuple[float, str]]:
    rows = csv.DictReader((shared / "digits" / "labels.csv").open(encoding="utf-8"))
    return {r["file"]: (float(r["value"] or r["label"]), r["meter_or_group"]) for r in rows if r["label"] != "N"}


def test_a_crop_shows_the_wheels_digit_near_its_position(shared_data: Path) -> None:
    digits = shared_data / "digits"
    others = CropPool.load(digits, VAL_WATER, meter_type="watermeter")
    pool = CropPool.load(digits, VAL_WATER, others)
    assert pool.info.split == "val" and not pool.info.trained  # the shipped model never saw this meter
    assert others.info.trained and VAL_WATER not in others.info.group
    labels = _labels(shared_data)
    rng = np.random.default_rng(0)
    for position in (0.0, 1.0, 2.6, 3.95, 4.0, 7.3, 9.9) * 5:
        before = pool.info.fallback_used
        path = pool.choose(position, rng)
        value, group = labels[str(path.relative_to(digits))]
        assert math.floor(value) == math.floor(position), (position, value)
        assert abs(value - position) <= NEAR + 1e-9, (position, value)
        # from this meter, unless it has no crop there: then from another water meter, and counted
        assert (group == VAL_WATER) == (pool.info.fallback_used == before), (position, group)
    # Wasser_Geraete_GmbH has no crop of a 1: those came from other water meters
    assert pool.info.fallback_used >= 5 and pool.info.picked == 35 and pool.info.far == 0
    assert pool.pick(4.0, rng).ndim == 3


def test_a_household_of_real_crops_is_a_sequence_of_frames_with_its_true_values(shared_data: Path) -> None:
    digits = shared_data / "digits"
    pool = CropPool.load(digits, VAL_WATER, CropPool.load(digits, VAL_WATER, meter_type="watermeter"))
    frames = list(crop_frames(pool, days=0.25, step_min=60, seed=0, mix="none", start=SIM_START,
                              start_value=234.567))
    assert len(frames) == 6
    assert [t for t, _, _, _ in frames] == [SIM_START + timedelta(hours=i + 1) for i in range(6)]
    values = [v for _, v, _, _ in frames]
    assert values == sorted(values) and values[0] >= 234.567
    assert all(img.shape == (480, 640, 3) and not tags for _, _, tags, img in frames)
    assert pool.info.picked == 6 * 8
    assert NEAR == 0.2
