"""Does each digit window sit on a digit? And what would the device read from these windows?

An installer's ROI that is off by half a digit cuts two wheels in half; a model may still read
something there. So calibration reads each window, and the same window moved sideways by up to half
its width, with the digit model in one call: a window whose own reading is under the confidence
threshold, or whose digit reads best well to one side (the confidence-weighted centre of the moved
windows lies more than ``MAX_OFF`` of the width away), is not on a digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from meter_vision.geometry import Roi

if TYPE_CHECKING:
    from edge.reading.model import Decision
    from edge.reading.rules import Rules
    from meter_vision.infer.model import DigitModel, DigitPrediction

MAX_OFF = 0.25  # of the window width: a digit centred further off is "not centred"
SHIFTS = tuple(np.round(np.linspace(-0.5, 0.5, 11), 2))  # window moves, in window widths


@dataclass(frozen=True)
class WindowCheck:
    """One window: the model's reading there, where the digit sits (px, + = right of the window's
    centre, None when it could not be told) and what is wrong (None: fine)."""

    index: int
    prediction: DigitPrediction
    offset_px: float | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _shifted(image: np.ndarray, r: Roi, dx: int) -> np.ndarray | None:
    x = r.x + dx
    if x < 0 or x + r.w > image.shape[1]:
        return None
    return image[r.y : r.y + r.h, x : x + r.w]


def check_windows(image: np.ndarray, rois: Sequence[Roi], model: DigitModel,
                  own: Sequence[DigitPrediction] | None = None) -> list[WindowCheck]:
    """Check every window of ``rois`` on ``image`` (the reference frame the crops were cut from).

    ``own``: the predictions of the windows themselves, if already made (else they are made here).
    All windows and their moved copies go through the model in one call.
    """
    crops: list[np.ndarray] = []
    where: list[tuple[int, int]] = []  # (roi index, dx)
    for i, r in enumerate(rois):
        for s in SHIFTS:
            dx = round(float(s) * r.w)
            crop = _shifted(image, r, dx)
            if crop is not None:
                crops.append(crop)
                where.append((i, dx))
    preds = model.classify(crops) if crops else []
    threshold = model.threshold
    out = []
    for i, r in enumerate(rois):
        mine = [(dx, p) for (j, dx), p in zip(where, preds, strict=True) if j == i]
        at_zero = next((p for dx, p in mine if dx == 0), None)
        pred = own[i] if own is not None else at_zero
        assert pred is not None  # dx = 0 is always inside: the ROIs were checked against the image
        weights = np.array([p.confidence for _, p in mine]) ** 4
        offset = (float((weights * np.array([dx for dx, _ in mine])).sum() / weights.sum())
                  if weights.sum() > 0 else None)
        problem = None
        if pred.digit is None or pred.confidence < threshold:
            problem = (f"window {i + 1} is not on a readable digit: the model reads N there "
                       f"(confidence {pred.confidence:.2f} < {threshold:.2f})")
            if offset is not None and abs(offset) > MAX_OFF * r.w and max(p.confidence for _, p in mine) >= threshold:
                problem += f"; a digit reads about {abs(offset):.0f} px to the {'right' if offset > 0 else 'left'}"
        elif offset is not None and abs(offset) > MAX_OFF * r.w:
            problem = (f"window {i + 1}'s digit is not centred: it reads best about {abs(offset):.0f} px to the "
                       f"{'right' if offset > 0 else 'left'} of the window ({r.w} px wide); move the window")
        out.append(WindowCheck(i, pred, offset, problem))
    return out


def resolve_value(preds: Sequence[DigitPrediction], rules: Rules) -> Decision:
    """What ``meter-edge read`` makes of these wheels on a first frame (no previous value): rolling
    wheels resolved from the lower ones (``edge.reading``), not the raw per-wheel digits."""
    from edge.reading.assemble import assemble
    from edge.reading.model import Observation, ReadingState, WheelInput

    wheels = tuple(WheelInput(p.digit, float(p.value), float(p.confidence)) for p in preds)
    decision, _ = assemble(ReadingState(), Observation(wheels, datetime.now(UTC)), rules)
    return decision
