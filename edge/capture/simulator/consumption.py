"""A household's water use over days: night lulls, morning and evening peaks, showers, washing machine.

Deterministic for a seed: each local day's draws come from their own generator, seeded by (seed, day),
so any moment can be evaluated in any order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np

# relative chance of a draw starting in each local hour (0..23)
HOURLY = np.array([0.15, 0.08, 0.06, 0.06, 0.12, 0.5, 2.2, 3.4, 3.0, 1.8, 1.2, 1.1,
                   1.3, 1.2, 1.0, 1.0, 1.2, 1.8, 2.6, 3.0, 3.0, 2.5, 1.5, 0.6])
_DAY_S = 86_400


class Household:
    """Cumulative consumption of one household, in m³, as a function of UTC time."""

    def __init__(self, seed: int = 0, start: datetime | None = None, start_value: float = 123.456,
                 litres_per_day: tuple[float, float] = (150.0, 300.0), utc_offset_h: float = 3.0) -> None:
        start = start or datetime(2025, 1, 6, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.start_value = start_value
        self.litres_per_day = litres_per_day
        self.offset = timedelta(hours=utc_offset_h)
        local = self.start + self.offset
        self._day0 = datetime(local.year, local.month, local.day, tzinfo=UTC) - self.offset  # local midnight, UTC
        self._day_cache: dict[int, float] = {}
        self._c_start = self._cumulative_l(self.start)

    @lru_cache(maxsize=64)  # noqa: B019  (a few instances, each holding a few days)
    def events(self, day: int) -> np.ndarray:
        """Draws of local day `day` (0 = the start's day): rows of (start s into the day, duration s, litres)."""
        rng = np.random.default_rng([self.seed, day])
        weekday = (self._day0 + timedelta(days=day) + self.offset).weekday()
        target = rng.uniform(*self.litres_per_day) * (1.12 if weekday >= 5 else 1.0)
        p = HOURLY / HOURLY.sum()

        def at_hours(k: int, hours: np.ndarray | None = None) -> np.ndarray:
            hrs = rng.choice(24, size=k, p=p) if hours is None else hours
            return hrs * 3600 + rng.uniform(0, 3600, k)

        rows: list[tuple[float, float, float]] = []
        n_shower = rng.choice([0, 1, 2, 3], p=[0.1, 0.5, 0.3, 0.1])
        for t in at_hours(n_shower, rng.choice([6, 7, 8, 19, 20, 21, 22], n_shower)):
            rows.append((t, rng.uniform(360, 720), rng.uniform(35, 70)))
        if rng.random() < 0.35:  # washing machine: four fills over an hour or so
            t0 = rng.uniform(9, 20) * 3600
            rows += [(t0 + k * 1200, 120.0, rng.uniform(10, 15)) for k in range(4)]
        if rng.random() < 0.3:  # dishwasher after dinner
            t0 = rng.uniform(20, 22.5) * 3600
            rows += [(t0 + k * 1500, 90.0, rng.uniform(2.5, 4)) for k in range(4)]
        n_flush = int(rng.integers(8, 15))
        rows += [(t, 90.0, rng.uniform(5, 7.5)) for t in at_hours(n_flush)]
        n_tap = int(rng.integers(15, 35))
        rows += [(t, rng.uniform(20, 180), rng.uniform(0.3, 6)) for t in at_hours(n_tap)]
        ev = np.array(rows, dtype=np.float64)
        ev[:, 2] *= target / ev[:, 2].sum()
        ev[:, 0] = np.clip(ev[:, 0], 0, _DAY_S - 1)
        ev[:, 1] = np.minimum(ev[:, 1], _DAY_S - ev[:, 0])
        return ev[np.argsort(ev[:, 0])]

    def day_litres(self, day: int) -> float:
        if day not in self._day_cache:
            self._day_cache[day] = float(self.events(day)[:, 2].sum())
        return self._day_cache[day]

    def _cumulative_l(self, t: datetime) -> float:
        """Litres used since local midnight of the start's day."""
        s = (t.astimezone(UTC) - self._day0).total_seconds()
        day, into = int(s // _DAY_S), s % _DAY_S
        if day < 0:
            raise ValueError(f"{t.isoformat()} is before the simulation's first day")
        full = sum(self.day_litres(d) for d in range(day))
        ev = self.events(day)
        done = np.clip((into - ev[:, 0]) / ev[:, 1], 0.0, 1.0)
        return full + float((done * ev[:, 2]).sum())

    def litres_between(self, t0: datetime, t1: datetime) -> float:
        return self._cumulative_l(t1) - self._cumulative_l(t0)

    def value_at(self, t: datetime) -> float:
        """The meter's value in m³ at UTC time `t` (not before `start`)."""
        if t < self.start:
            raise ValueError(f"{t.isoformat()} is before the simulation's start {self.start.isoformat()}")
        return self.start_value + (self._cumulative_l(t) - self._c_start) / 1000.0
