"""A simulated meter whose wheels show REAL digit crops (``../shared/data/digits``), for the reading replay.

The simulator's frame (face, window, alignment marks) is drawn as usual; then each wheel window is
covered with a real crop whose labelled position (``value``, e.g. 3.7) matches where that wheel stands:
the same digit reached, a labelled position within ``NEAR`` (0.2). A pool is one ``meter_or_group``
of the labels (one real meter's crops); a position the pool has no crop for is taken from the crops of
the other water meters (the fallback pool), and counted. Camera faults are applied to the whole frame
afterwards, as the device's camera would see them.

Leave-out honesty: crops of ``split = val`` are meters the shipped model never trained on; crops of
``split = train`` it did train on, so replays over them are optimistic. `PoolInfo.trained` says which.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

VAL_WATER = "watermeter/Wasser_Geraete_GmbH"
"""The one water meter in shared ``val``: the shipped model never saw it (it has no crop of a 1)."""
TRAIN_WATER = "watermeter/pp"
"""The water meter of ``train`` the model gets most wrong on its own crops (0.6 %): seen in training."""
NEAR = 0.2
"""A crop stands in for a wheel position when its labelled position is this close (same digit)."""


@dataclass
class PoolInfo:
    """Where a household's wheel crops come from, and whether the model trained on them."""

    group: str
    split: str
    crops: int
    fallback_used: int = 0
    picked: int = 0
    far: int = 0  # no crop within NEAR of the position anywhere: the nearest of the same digit

    @property
    def trained(self) -> bool:
        return self.split != "val"


@dataclass
class CropPool:
    """The crops of one meter group, indexed by digit (floor of the labelled position)."""

    info: PoolInfo
    root: Path
    by_digit: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    fallback: CropPool | None = None

    @classmethod
    def load(cls, digits_dir: Path, groups: str | tuple[str, ...], fallback: CropPool | None = None,
             meter_type: str | None = None) -> CropPool:
        """The crops of ``groups`` (one ``meter_or_group`` or several), or, with ``meter_type``, of every group
        of that type except ``groups``."""
        names = (groups,) if isinstance(groups, str) else groups
        rows = [r for r in csv.DictReader((digits_dir / "labels.csv").open(encoding="utf-8"))
                if r["label"] != "N" and (r["meter_or_group"] in names if meter_type is None else
                                          r["meter_type"] == meter_type and r["meter_or_group"] not in names
                                          and "lcd" not in r["meter_or_group"])]
        if not rows:
            raise ValueError(f"no crops of {names!r} in {digits_dir / 'labels.csv'}")
        by_digit: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for r in rows:
            value = float(r["value"] or r["label"])
            by_digit[math.floor(value + 1e-9) % 10].append((value, r["file"]))
        splits = {r["split"] for r in rows}
        label = ", ".join(names) if meter_type is None else f"other {meter_type}s"
        info = PoolInfo(label, "val" if splits == {"val"} else "train", len(rows))
        return cls(info, digits_dir, dict(by_digit), fallback)

    def _near(self, position: float) -> list[str]:
        digit = math.floor(position % 10.0 + 1e-9) % 10
        return [f for v, f in self.by_digit.get(digit, ()) if abs(v - position % 10.0) <= NEAR + 1e-9]

    def pick(self, position: float, rng: np.random.Generator) -> np.ndarray:
        """A crop showing a wheel at ``position`` (see ``choose``)."""
        return _read_crop(str(self.choose(position, rng)))

    def choose(self, position: float, rng: np.random.Generator) -> Path:
        """The file of a crop showing a wheel at ``position``: the same digit, a labelled position within
        ``NEAR``; from the fallback pool when this meter has none (counted), else this meter's nearest of
        that digit (counted as ``far``)."""
        self.info.picked += 1
        near = self._near(position)
        root = self.root
        if not near and self.fallback is not None:
            near = self.fallback._near(position)
            if near:
                self.info.fallback_used += 1
                root = self.fallback.root
        if not near:
            digit = math.floor(position % 10.0 + 1e-9) % 10
            options = self.by_digit.get(digit) or (self.fallback.by_digit.get(digit) if self.fallback else None)
            if not options:
                raise ValueError(f"{self.info.group} has no crop of a {digit}")
            best = min(abs(v - position % 10.0) for v, _ in options)
            near = [f for v, f in options if abs(v - position % 10.0) <= best + 1e-9]
            self.info.far += 1
        return root / near[int(rng.integers(len(near)))]


@lru_cache(maxsize=4096)
def _read_crop(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read crop {path}")
    return img


def render_crop_frame(value: float, pool: CropPool, rng: np.random.Generator, faults: object) -> np.ndarray:
    """A frame of the simulator's meter at ``value`` m3 with real crops in its wheel windows, faults applied."""
    from edge.capture.simulator.faults import apply_geometric, apply_photometric
    from edge.capture.simulator.meter import ROIS, render_clean, wheel_positions

    positions = wheel_positions(value)
    img = render_clean(positions, dial_value=value)
    for p, (x, y, w, h) in zip(positions, ROIS, strict=True):
        crop = pool.pick(p, rng)
        img[y:y + h, x:x + w] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    img = apply_geometric(img, faults)  # type: ignore[arg-type]
    return apply_photometric(img, faults, rng)  # type: ignore[arg-type]


def crop_frames(pool: CropPool, days: float, step_min: float, seed: int, mix: str, start: datetime,
                start_value: float) -> Iterator[tuple[datetime, float, tuple[str, ...], np.ndarray]]:
    """(taken_at, true value, fault tags, BGR frame) of a household whose meter shows ``pool``'s crops."""
    from edge.capture.simulator import FaultMix, Household, sample_faults

    house = Household(seed=seed, start=start, start_value=start_value)
    rng = np.random.default_rng([seed, 13])
    mix_ = FaultMix.named(mix)
    for i in range(1, int(days * 24 * 60 / step_min) + 1):
        t = start + timedelta(minutes=step_min * i)
        value = house.value_at(t)
        faults = sample_faults(mix_, rng)
        img = render_crop_frame(value, pool, rng, faults)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else None
        yield t, value, faults.tags, img if decoded is None else decoded
