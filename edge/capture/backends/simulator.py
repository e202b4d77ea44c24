"""The virtual meter as a camera: each capture is one more step of a simulated household's clock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contract.times import parse_utc
from edge.capture.base import Camera, CaptureError, Frame, read_state, write_state
from edge.capture.simulator.consumption import Household
from edge.capture.simulator.faults import FaultMix, Faults, sample_faults
from edge.capture.simulator.meter import render_frame

if TYPE_CHECKING:
    from edge.config import CaptureConfig

log = logging.getLogger(__name__)
STATE_FILE = "capture-simulator.json"
DEFAULT_BACKFILL = timedelta(days=30)  # 720 frames at the default step before it reaches now


class SimulatorCamera(Camera):
    """Frame i shows the meter at `start + i·step` (simulated time, also the frame's `taken_at`).

    The position i is kept in `state_dir` (when given), so a restarted agent does not see the meter go
    back in time. `last_truth` is the exact value of the last frame, `last_faults` its faults.
    """

    backend = "simulator"

    def __init__(self, seed: int = 0, start: datetime | None = None, step_s: float = 3600.0,
                 faults: FaultMix | None = None, state_dir: Path | None = None, start_value: float = 123.456) -> None:
        self.seed = seed
        self.step = timedelta(seconds=step_s)
        self.mix = faults if faults is not None else FaultMix()
        self.state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        state = read_state(self.state_path) if self.state_path else {}
        if start is None:
            if state.get("seed") == seed and "start" in state:
                start = parse_utc(state["start"])
            else:  # behind the real clock: its frames run an hour ahead per capture, and the contract
                # refuses readings dated more than a day ahead of now (docs/contract.md, `bad_time`)
                start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - DEFAULT_BACKFILL
        self.start = start.astimezone(UTC)
        same = state.get("seed") == seed and state.get("start") == self.start.isoformat()
        self.index = int(state.get("index", 0)) if same else 0
        self.household = Household(seed, self.start, start_value)
        self.last_truth: float | None = None
        self.last_faults: Faults | None = None

    @classmethod
    def from_config(cls, cfg: CaptureConfig, state_dir: Path) -> SimulatorCamera:
        src = cfg.source.strip() or "0"
        try:
            seed = int(src)
        except ValueError:
            raise CaptureError(f"capture.source {src!r} is not a seed: the simulator backend takes an integer "
                               "(or nothing)") from None
        try:
            start = parse_utc(cfg.sim_start) if cfg.sim_start else None
        except ValueError:
            raise CaptureError(f"capture.sim_start {cfg.sim_start!r} is not an ISO 8601 time, "
                               "e.g. 2025-01-06T00:00:00Z") from None
        return cls(seed, start, cfg.sim_step_s, FaultMix.named(cfg.sim_faults), state_dir)

    def capture(self) -> Frame:
        taken_at = self.start + self.index * self.step
        rng = np.random.default_rng([self.seed, self.index, 1])
        value = self.household.value_at(taken_at)
        faults = sample_faults(self.mix, rng)
        image = render_frame(value, faults, rng)
        self.last_truth, self.last_faults = value, faults
        self.index += 1
        if self.state_path is not None:
            write_state(self.state_path, {"seed": self.seed, "start": self.start.isoformat(), "index": self.index})
        return Frame(image, taken_at, f"simulator:{self.seed}#{self.index - 1}")
