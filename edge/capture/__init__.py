"""Capture: one small Camera interface, backends picked by `capture.backend`, and the flash LED."""

from edge.capture.base import BACKENDS, Camera, CaptureError, EndOfFrames, Frame, open_camera
from edge.capture.flash import Flash, capture_with_flash

__all__ = ["BACKENDS", "Camera", "CaptureError", "EndOfFrames", "Flash", "Frame", "capture_with_flash", "open_camera"]
