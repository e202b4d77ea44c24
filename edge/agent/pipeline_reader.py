"""The agent's real reader: LED + camera (edge.capture) → align, crop, classify, assemble (edge.pipeline).

The reading rules' state comes in and goes out as a JSON dict, so the agent can commit it with the
reading in the outbox's transaction.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from contract.settings import ConfigError
from edge.agent.core import EndOfSource, ReadResult
from edge.capture import Camera, EndOfFrames, Flash, capture_with_flash
from edge.capture.device import open_device
from edge.config import EdgeConfig
from edge.pipeline import FramePipeline
from edge.reading.assemble import confirm
from edge.reading.model import ReadingState
from edge.reading.payload import to_reading
from edge.reading.rules import Rules, parse_value

log = logging.getLogger(__name__)


class PipelineReader:
    def __init__(self, device_id: str, camera: Camera, flash: Flash, pipeline: FramePipeline) -> None:
        self.device_id = device_id
        self.camera = camera
        self.flash = flash
        self.pipeline = pipeline
        self.model_id = pipeline.model_id

    @classmethod
    def from_config(cls, cfg: EdgeConfig) -> PipelineReader:
        """Model, layout, camera and LED from the config; ConfigError saying what to fix otherwise."""
        from edge.calibrate import AlignError, LayoutError
        from meter_vision.infer import DigitModel, InferenceError

        try:
            classifier = DigitModel(Path(cfg.model) if cfg.model else None)
        except InferenceError as exc:
            raise ConfigError(f"model: {exc} (set `model` in the config, or run `make train`)") from None
        try:
            pipeline = FramePipeline.from_files(cfg.layout, classifier)
        except (LayoutError, AlignError) as exc:
            raise ConfigError(f"layout {cfg.layout}: {exc}") from None
        pipeline.rules = Rules.from_config(cfg.reading, pipeline.layout.decimals)
        camera, flash = open_device(cfg)
        return cls(cfg.device_id, camera, flash, pipeline)

    def _carried(self, state: dict[str, Any] | None) -> ReadingState:
        """The stored state; one that does not load (an old bug let `0001-01-01T00:00:00+14:00` in) must not
        brick the agent: what is sound is kept, the rest dropped and logged, the next reading rewrites it."""
        if not state:
            return ReadingState()
        try:
            return ReadingState.from_dict(state)
        except Exception as exc:
            carried, dropped = ReadingState.salvage(state)
            log.error("the stored reading state does not load (%s: %s); dropped %s, kept the rest",
                      type(exc).__name__, exc, ", ".join(dropped) or "nothing")
            return carried

    def read(self, state: dict[str, Any] | None) -> ReadResult:
        carried = self._carried(state)
        t = time.perf_counter()
        try:
            frame = capture_with_flash(self.camera, self.flash)
        except EndOfFrames as exc:
            raise EndOfSource(str(exc) or "the folder of frames is at its end (capture.loop = false)") from None
        capture_s = time.perf_counter() - t
        result = self.pipeline.process(frame.image, frame.taken_at, carried)
        reading = to_reading(result.decision, device_id=self.device_id, seq=0, taken_at=frame.taken_at,
                             model=self.model_id)
        tm = result.timings
        timings = {"capture": capture_s, "align": tm.get("align", 0.0) + tm.get("crop", 0.0),
                   "infer": tm.get("infer", 0.0), "assemble": tm.get("assemble", 0.0)}
        return ReadResult(reading, result.state.to_dict(), timings)

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        carried = self._carried(state)
        return confirm(carried, self.pipeline.rules.quantize(parse_value(value)), at).to_dict()

    def close(self) -> None:
        self.camera.close()
        self.flash.close()
