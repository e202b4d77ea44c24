"""One frame through the device's chain: align -> crop -> classify (one batch) -> assemble, with timings.

Used by `meter-edge read`, the agent and the benchmarks, so all three read a frame the same way. Nothing
here raises for a bad frame: a frame that cannot be aligned, cropped or classified becomes an ``error``
decision with the reason, and the carried state is left as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from edge.calibrate.align import Aligner, AlignResult, crop_rois
from edge.calibrate.layout import Layout, load_layout
from edge.reading.assemble import assemble
from edge.reading.model import Decision, Observation, ReadingState, WheelInput
from edge.reading.rules import Rules

log = logging.getLogger(__name__)

STAGES = ("align", "crop", "infer", "assemble")


class Prediction(Protocol):
    @property
    def digit(self) -> int | None: ...
    @property
    def value(self) -> float: ...
    @property
    def confidence(self) -> float: ...


class Classifier(Protocol):
    """What the pipeline needs of `meter_vision.infer`'s model: all crops in one call, and an id for the Reading."""

    @property
    def model_id(self) -> str: ...

    def classify(self, crops: Sequence[np.ndarray]) -> Sequence[Prediction]: ...


class FrameResult(NamedTuple):
    """``aligned``: the frame in reference coordinates (None when alignment failed), for pictures."""

    decision: Decision
    state: ReadingState
    explain: dict[str, Any]
    timings: dict[str, float]
    aligned: np.ndarray | None = None


@dataclass
class FramePipeline:
    """Reads frames of one meter: a layout, its aligner, a classifier and the reading rules."""

    layout: Layout
    aligner: Aligner
    classifier: Classifier
    rules: Rules

    @classmethod
    def from_files(cls, layout_path: Path | str, classifier: Classifier, rules: Rules | None = None) -> FramePipeline:
        """Load the layout (LayoutError) and build its aligner (AlignError); rules default to the layout's."""
        layout = load_layout(layout_path)
        return cls(layout, Aligner(layout), classifier, rules or Rules(decimals=layout.decimals))

    @property
    def model_id(self) -> str:
        return str(getattr(self.classifier, "model_id", ""))

    def process(self, frame_bgr: np.ndarray | None, taken_at: datetime, state: ReadingState) -> FrameResult:
        """Read one frame taken at ``taken_at`` given the carried ``state``; timings in seconds per stage."""
        timings = dict.fromkeys(STAGES, 0.0)
        explain: dict[str, Any] = {}

        aligned_image: np.ndarray | None = None

        def failed(reason: str) -> FrameResult:
            t = time.perf_counter()
            decision, new = assemble(state, Observation((), taken_at, failure=reason), self.rules)
            timings["assemble"] = time.perf_counter() - t
            explain.update(decision.explain())
            return FrameResult(decision, new, explain, timings, aligned_image)

        if frame_bgr is None:
            return failed("no image")
        t = time.perf_counter()
        try:
            aligned: AlignResult = self.aligner.align(frame_bgr)
        except Exception as exc:  # a frame must never stop the device; the reason is published
            log.exception("alignment crashed")
            timings["align"] = time.perf_counter() - t
            return failed(f"alignment crashed: {exc!r}")
        timings["align"] = time.perf_counter() - t
        explain["align"] = {"ok": aligned.ok, "score": round(float(aligned.score), 3), "inliers": aligned.inliers}
        if not aligned.ok or aligned.image is None:
            return failed(f"alignment failed: {aligned.reason or 'no aligned image'}")
        aligned_image = aligned.image

        t = time.perf_counter()
        try:
            crops = crop_rois(aligned.image, self.layout)
        except ValueError as exc:
            timings["crop"] = time.perf_counter() - t
            return failed(f"crop failed: {exc}")
        timings["crop"] = time.perf_counter() - t

        t = time.perf_counter()
        try:
            preds = list(self.classifier.classify(crops))
        except Exception as exc:  # same: an error reading, not a crash
            log.exception("classification failed")
            timings["infer"] = time.perf_counter() - t
            return failed(f"classification failed: {exc}")
        timings["infer"] = time.perf_counter() - t
        if len(preds) != len(crops):
            return failed(f"classification failed: {len(preds)} predictions for {len(crops)} digit windows")

        t = time.perf_counter()
        wheels = tuple(WheelInput(p.digit, float(p.value), float(p.confidence)) for p in preds)
        decision, new = assemble(state, Observation(wheels, taken_at), self.rules)
        timings["assemble"] = time.perf_counter() - t
        explain.update(decision.explain())
        return FrameResult(decision, new, explain, timings, aligned_image)
