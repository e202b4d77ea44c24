"""A USB / V4L2 camera (or a video file or stream) through OpenCV."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from edge.capture.base import Camera, CaptureError, Frame

if TYPE_CHECKING:
    from edge.config import CaptureConfig

log = logging.getLogger(__name__)

_CHECKS = ("check that it is plugged in (`ls /dev/video*`), that this user may use it (in the `video` group: "
           "`sudo usermod -aG video $USER`, then log in again), and that no other program holds it")


class OpenCVCamera(Camera):
    """`source` is a device index (`0` = /dev/video0) or a path / URL OpenCV can open."""

    backend = "opencv"

    def __init__(self, source: int | str = 0, width: int | None = None, height: int | None = None) -> None:
        self.name = f"/dev/video{source} (index {source})" if isinstance(source, int) else str(source)
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap.release()
            raise CaptureError(f"camera {self.name} could not be opened: {_CHECKS}; "
                               "or set capture.source to another index or path")
        if width and height:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    @classmethod
    def from_config(cls, cfg: CaptureConfig, state_dir: Path) -> OpenCVCamera:
        src = cfg.source.strip()
        source: int | str = int(src) if src.isdigit() else (src or 0)
        return cls(source, cfg.width, cfg.height)

    def capture(self) -> Frame:
        ok, image = self.cap.read()
        if not ok or image is None:
            raise CaptureError(f"camera {self.name} returned no frame: {_CHECKS}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return Frame(image, datetime.now(UTC), self.name)

    def close(self) -> None:
        self.cap.release()
